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


def _tiny_distillation_model():
    import torch

    from ecs_models import create_model
    from ecs_models.training.distill import DistillationModel

    torch.manual_seed(0)
    student = create_model("lsnet", img_size=64, in_chans=1)
    teacher = create_model("teacher", img_size=64, in_chans=1)
    return DistillationModel(student, teacher)


def test_teacher_gets_its_own_learning_rate() -> None:
    """With ``teacher_lr`` the teacher and its projector train at that rate, the rest at ``lr``."""
    import torch

    from ecs_models.training.distill import optimizer_groups, train_stage

    model = _tiny_distillation_model()
    assert len(optimizer_groups(model, StageConfig(lr=1e-3))) == 1
    student_group, teacher_group = optimizer_groups(model, StageConfig(lr=1e-3, teacher_lr=2e-4))
    assert (student_group["lr"], teacher_group["lr"]) == (1e-3, 2e-4)
    teacher_ids = {id(p) for part in (model.teacher, model.teacher_projector) for p in part.parameters()}
    assert {id(p) for p in teacher_group["params"]} == teacher_ids
    assert len(student_group["params"]) + len(teacher_group["params"]) == len(list(model.parameters()))

    # A teacher rate of ~0 leaves the teacher where it was while the student trains (Adam's step ~ lr).
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(4, 1, 64, 64), torch.tensor([0, 1, 0, 1])
    loader = [(images, labels)] * 2
    train_stage(model, loader, StageConfig(epochs=1, lr=1e-2, teacher_lr=1e-12, warmup_fraction=0.0),
                device=torch.device("cpu"), log=lambda _m: None)
    after = model.state_dict()
    moved = {k for k in before if before[k].is_floating_point() and not torch.allclose(before[k], after[k], atol=1e-9)
             and not k.endswith(("running_mean", "running_var"))}
    assert any(k.startswith("student.") for k in moved)
    assert not any(k.startswith(("teacher.", "teacher_projector.")) for k in moved)


def test_teacher_lr_must_be_positive() -> None:
    with pytest.raises(ValueError, match="teacher_lr"):
        StageConfig(teacher_lr=0.0)
