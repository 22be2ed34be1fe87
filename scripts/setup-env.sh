#!/usr/bin/env bash
# Create or refresh the project's virtual environment; sourced by demo.sh and test.sh.
# ECS_VENV overrides its location (default: .venv in the repository).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ECS_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.ecs-installed"
want="$(cat "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing ecs-fl and its dependencies (first run: a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$venv/bin/python" -m pip install --quiet -e "$repo[train,dev]"
  echo "$want" > "$stamp"
fi
# Debian's chromium renders the run report in tests/simulations/test_federated_simulation.py
# (headless, no network); the install's time is in docs/report.md.
if ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium (the report test renders HTML with it)" >&2
  chromium_start=$SECONDS
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  if $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null; then
    echo "[setup] chromium installed in $((SECONDS - chromium_start)) s" >&2
  else
    echo "[setup] could not install chromium: the report's rendering test will fail" >&2
  fi
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export HF_HUB_OFFLINE=1
export FLWR_DISABLE_UPDATE_CHECK=1
