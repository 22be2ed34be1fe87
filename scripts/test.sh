#!/usr/bin/env bash
# Lint and run the whole test suite (sets up the environment first).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/setup-env.sh
echo "[test] ruff" >&2
ruff check .
echo "[test] import contracts (pyproject.toml [tool.importlinter])" >&2
lint-imports
echo "[test] pytest" >&2
python -m pytest "$@"
