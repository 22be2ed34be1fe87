"""Distillation training: the stage learning-rate schedule (whole and split over federated
rounds), the teacher's own rate, and one training step's gradients."""

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


def test_one_backward_pass_equals_the_two_pass_definition() -> None:
    """The teacher's backward gives its parameter gradients and the distillation targets at once:
    every gradient equals the definition (targets by ``autograd.grad``, then ``total.backward()``)."""
    import torch
    import torch.nn.functional as F

    from ecs_models.training.distill import _standardise, distillation_backward

    model = _tiny_distillation_model()
    images, labels = torch.randn(3, 1, 64, 64), torch.tensor([0, 1, 1])
    weight = torch.tensor([0.7, 1.6])

    t_out = model.teacher.forward_with_maps(images)
    ce_t = F.cross_entropy(t_out.logits, labels, weight=weight)
    targets = [_standardise(g) for g in torch.autograd.grad(ce_t, t_out.maps, retain_graph=True)]
    s_out = model.student.forward_with_maps(images)
    ce_s = F.cross_entropy(s_out.logits, labels, weight=weight)
    distill = sum(F.mse_loss(g_hat, target) for g_hat, target in zip(s_out.maps, targets, strict=True))
    z_t = F.normalize(model.teacher_projector(t_out.features), dim=-1).detach()
    z_s = F.normalize(model.student_predictor(model.student_projector(s_out.features)), dim=-1)
    total = ce_t + ce_s + distill + (2 - 2 * (z_s * z_t).sum(dim=-1)).mean()
    total.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    parts = distillation_backward(model, images, labels, weight)
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    assert any(k.startswith("teacher.") for k in got) and any(k.startswith("student.") for k in got)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    assert parts["loss"] == pytest.approx(total.item(), rel=1e-5)
    assert parts["distill"] == pytest.approx(distill.item(), rel=1e-5)


def test_non_finite_loss_is_refused_naming_the_step() -> None:
    import torch

    from ecs_models.training.distill import train_stage

    model = _tiny_distillation_model()
    images = torch.randn(2, 1, 64, 64)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="epoch 0 step 0: non-finite loss: ce_teacher=nan"):
        train_stage(model, [(images, torch.tensor([0, 1]))], StageConfig(epochs=1), device=torch.device("cpu"),
                    log=lambda _m: None)
