#!/usr/bin/env bash
# Lint and run the whole test suite (sets up the environment first).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# chromium (report tests) installs in the background while the environment is set up
bash scripts/install-chromium.sh & chromium_install=$!
source scripts/setup-env.sh
echo "[test] ruff" >&2
ruff check .
echo "[test] import contracts (pyproject.toml [tool.importlinter])" >&2
lint-imports
wait "$chromium_install" || true  # a missing chromium fails the report tests by name
echo "[test] pytest" >&2
# Two workers, one test module at a time each (module fixtures are built once): much of the suite
# waits on subprocesses (Flower's SuperLink and apps, Ray), so two workers keep the CI's two cores
# busy. ECS_TEST_WORKERS=0 runs in this process (for a debugger).
python -m pytest -n "${ECS_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
