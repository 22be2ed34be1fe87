"""The stage learning-rate schedule: whole (centralized) and split over federated rounds."""

from __future__ import annotations

import pytest

from ecs_models.training.distill import StageConfig, stage_schedule


def test_whole_schedule_warms_up_then_decays_to_zero() -> None:
    factors = [stage_schedule(StageConfig(warmup_fraction=0.1), 100)(step) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))
    assert factors[-1] < 0.001


def test_rounds_of_a_phase_follow_one_schedule() -> None:
    """Round r of R trains part (r - 1, R): together the parts are the centralized schedule."""
    rounds, steps = 4, 25
    whole = [stage_schedule(StageConfig(), rounds * steps)(step) for step in range(rounds * steps)]
    parts = [stage_schedule(StageConfig(schedule_span=(r, rounds)), steps)(step) for r in range(rounds) for step in range(steps)]
    assert parts == pytest.approx(whole)
    assert stage_schedule(StageConfig(schedule_span=(rounds - 1, rounds)), steps)(0) < 0.2  # late rounds: small steps


def test_schedule_span_is_checked() -> None:
    with pytest.raises(ValueError, match="schedule_span"):
        stage_schedule(StageConfig(schedule_span=(3, 3)), 10)
