#!/usr/bin/env bash
# Build a virtual environment holding only ecs-fl[clinic] (ecs-evaluate, ecs-screen: no torch, Flower
# or Ray) from this checkout, the quick way: the checkout's wheel, built from a copy without build
# isolation; a venv without pip of its own; dependencies from pip's cache or PyPI; no byte-compiling.
# Used by tests/clinic/test_clinic_install.py and benchmarks/bench_screen.py.
#
#   scripts/make-clinic-env.sh DEST [PYTHON]    # PYTHON: one with pip, setuptools >= 69 and wheel
#                                               # (default: python3; the project's .venv has them)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DEST [PYTHON]" >&2; exit 2; }
dest="$1"
python="${2:-python3}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# a copy of what the wheel holds: building in the checkout would leave build/ and egg-info behind
"$python" - "$repo" "$work/src" <<'PY'
import shutil, sys, tomllib
from pathlib import Path
repo, src = Path(sys.argv[1]), Path(sys.argv[2])
src.mkdir(parents=True)
for name in ("pyproject.toml", "README.md"):
    shutil.copy(repo / name, src / name)
found = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
for package in sorted({p.rstrip("*") for p in found["include"]}):
    shutil.copytree(repo / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
PY
"$python" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/wheel" "$work/src"
"$python" -m venv --without-pip "$dest"
wheel="$(ls "$work"/wheel/ecs_fl-*.whl)"
"$python" -m pip --python "$dest/bin/python" install --quiet --no-compile "$wheel[clinic]"
