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
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export HF_HUB_OFFLINE=1
export FLWR_DISABLE_UPDATE_CHECK=1
