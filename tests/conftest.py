"""Project-wide fixtures: offline settings, composed Hydra configs, one shared tiny cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import tiny_spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("ECS_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ecs-cohort cohort=tiny seed=0``, generated once per test session."""
    from simulations.cohort.generate import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(tiny_spec(), out, seed=0, workers=1, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for a person to look at (contact sheets); kept after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _schedule_rank(item: pytest.Item) -> int:
    slow = item.get_closest_marker("slow")
    if slow is None:
        return 2
    return 0 if slow.kwargs.get("longest") else 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest runs first (``slow(longest=True)``), then the other ``slow`` modules, then the rest.

    scripts/test.sh runs the suite on two pytest-xdist workers, one module at a time per worker, in
    this order (``--no-loadscope-reorder``): started first, the long runs overlap each other and the
    many short tests fill in around them, instead of one long run starting last and keeping a
    worker busy after the other has finished. The sort is stable and the same in every worker, as
    xdist requires.
    """
    items.sort(key=_schedule_rank)
