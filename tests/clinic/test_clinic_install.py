"""The ``clinic`` install extra: a fresh environment with ``pip install ecs-fl[clinic]`` has no torch,
Flower or Ray, ecs-screen and ecs-evaluate run there on a tiny bundle, and a checkpoint is refused
there with the install command.

Built by scripts/make-clinic-env.sh (this checkout's wheel into a pip-less venv, dependencies from
pip's cache or PyPI, no byte-compiling); the time it took is printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: object, **kwargs: object) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def clinic_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bin/`` of a venv holding only ``ecs-fl[clinic]`` (scripts/make-clinic-env.sh)."""
    env = tmp_path_factory.mktemp("clinic_env") / "venv"
    start = time.perf_counter()
    _run("bash", REPO / "scripts" / "make-clinic-env.sh", env, sys.executable)
    print(f"clinic environment built in {time.perf_counter() - start:.1f} s")
    return env / "bin"


@pytest.mark.slow
def test_the_clinic_environment_has_no_training_stack(clinic_env: Path) -> None:
    for module in ("torch", "flwr", "ray", "hydra"):
        done = subprocess.run([clinic_env / "python", "-c", f"import {module}"], capture_output=True, text=True)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module


@pytest.mark.slow
def test_ecs_screen_and_ecs_evaluate_run_in_the_clinic_environment(clinic_env, tiny_bundle, tiny_cohort, tmp_path) -> None:
    done = _run(clinic_env / "ecs-screen", tiny_bundle, get_testdata_file("examples_ybr_color.dcm"), "--json")
    [result] = json.loads(done.stdout)
    assert 0.0 <= result["probability"] <= 1.0 and result["decision"] in ("positive", "negative")
    done = _run(clinic_env / "ecs-evaluate", tiny_bundle, tiny_cohort / "clinic", "--json", "--resamples", "20",
                "--quiet", cwd=tmp_path)
    assert json.loads(done.stdout)["n_images"] > 0 and (tmp_path / "ecs-evaluate-scores.csv").is_file()


@pytest.mark.slow
def test_a_checkpoint_is_refused_in_the_clinic_environment_with_the_install_command(clinic_env, tmp_path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    done = subprocess.run([str(clinic_env / "ecs-evaluate"), str(tmp_path / "checkpoint.pt"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and 'pip install ".[train]"' in done.stderr, done.stderr
