"""SG-CycleGAN training: loss terms and weights, replay buffer, resume, determinism, synthesis."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from helpers import TINY_GAN

from ecs_models.sg_cyclegan import SGCycleGAN, create_sg_cyclegan, dann_lambda
from ecs_models.training.gan import (
    GanLossWeights,
    GanTrainConfig,
    GanTrainer,
    ReplayBuffer,
    generator_loss_terms,
    synthesize_us,
    total_generator_loss,
    train_gan,
)
from protocol.messages import GAN_LOSS

SG_TERMS = {"adv_us", "adv_mri", "cycle", "identity", "domain", "feature"}


def _model(vanilla: bool = False, seed: int = 0) -> SGCycleGAN:
    torch.manual_seed(seed)
    return create_sg_cyclegan("cpu", vanilla=vanilla, **TINY_GAN)


def _blobs(n: int, seed: int, bright: bool) -> torch.Tensor:
    """Smooth structured images in [-1, 1]: an ellipse (bright or dark) on a ramp."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    images = []
    for _ in range(n):
        cx, cy, r = (torch.rand(3, generator=g) * torch.tensor([1.0, 1.0, 0.3]) + torch.tensor([-0.5, -0.5, 0.3]))
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2).float()
        base = 0.3 * yy if bright else -0.3 * xx
        images.append((base + (0.8 if bright else -0.8) * inside).clamp(-1, 1))
    return torch.stack(images)[:, None]


def test_generator_terms_and_weights() -> None:
    model = _model()
    mri, us = _blobs(2, 0, False), _blobs(2, 1, True)
    terms, fake_us, fake_mri = generator_loss_terms(model, mri, us, grl_lambda=0.5)
    assert set(terms) == SG_TERMS and fake_us.shape == fake_mri.shape == (2, 1, 32, 32)
    assert GanLossWeights() == GanLossWeights(adversarial=1.0, cycle=10.0, identity=5.0, domain=5.0, feature=5.0)
    weights = GanLossWeights()
    expected = (terms["adv_us"] + terms["adv_mri"] + 10 * terms["cycle"] + 5 * terms["identity"]
                + 5 * terms["domain"] + 5 * terms["feature"])
    torch.testing.assert_close(total_generator_loss(terms, weights), expected)
    for name, key in [("adversarial", "adv_us"), ("cycle", "cycle"), ("identity", "identity"),
                      ("domain", "domain"), ("feature", "feature")]:
        without = total_generator_loss(terms, replace(weights, **{name: 0.0}))
        removed = terms[key] * getattr(weights, name)
        if name == "adversarial":
            removed = terms["adv_us"] + terms["adv_mri"]
        torch.testing.assert_close(without, expected - removed)
        assert removed.item() > 0


def test_domain_term_reaches_the_extractor_reversed() -> None:
    """Through the GRL the MAFE gets -lambda times the gradient a plain classifier loss gives."""
    mri, us = _blobs(2, 0, False), _blobs(2, 1, True)
    grads = {}
    for lam in (1.0, 0.25):
        model = _model()
        terms, _, _ = generator_loss_terms(model, mri, us, grl_lambda=lam)
        terms["domain"].backward()
        grads[lam] = model.mafe.head[1].weight.grad.clone()
        cls_grad = model.domain_classifier.fc.weight.grad
        assert cls_grad is not None and cls_grad.abs().sum() > 0
    torch.testing.assert_close(grads[0.25], 0.25 * grads[1.0])


def test_vanilla_has_only_cyclegan_terms() -> None:
    trainer = GanTrainer(_model(vanilla=True), GanTrainConfig(total_steps=10, decay_start_step=5), device="cpu")
    losses = trainer.train_step(_blobs(2, 0, False), _blobs(2, 1, True))
    assert {"adv_us", "adv_mri", "cycle", "identity"} <= set(losses)
    assert "domain" not in losses and "feature" not in losses and "grl_lambda" not in losses
    expected = losses["adv_us"] + losses["adv_mri"] + 10 * losses["cycle"] + 5 * losses["identity"]
    assert losses[GAN_LOSS] == pytest.approx(expected, rel=1e-5)


def test_train_step_reports_weighted_total_and_schedules() -> None:
    trainer = GanTrainer(_model(), GanTrainConfig(total_steps=4, decay_start_step=2), device="cpu")
    seen = [trainer.train_step(_blobs(2, s, False), _blobs(2, s + 9, True)) for s in range(4)]
    first = seen[0]
    assert SG_TERMS <= set(first) and {"d_us", "d_mri", GAN_LOSS, "grl_lambda", "lr"} <= set(first)
    expected = (first["adv_us"] + first["adv_mri"] + 10 * first["cycle"] + 5 * first["identity"]
                + 5 * first["domain"] + 5 * first["feature"])
    assert first[GAN_LOSS] == pytest.approx(expected, rel=1e-5)
    assert [s["lr"] for s in seen] == pytest.approx([2e-4, 2e-4, 2e-4, 1e-4])  # linear decay after step 2
    assert [s["grl_lambda"] for s in seen] == pytest.approx([dann_lambda(p) for p in (0, 0.25, 0.5, 0.75)])
    assert trainer.opt_g.param_groups[0]["betas"] == (0.5, 0.999)


def test_replay_buffer_fills_then_mixes_and_round_trips() -> None:
    buffer = ReplayBuffer(capacity=4, seed=1)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    torch.testing.assert_close(buffer.query(first), first)  # filling: returned as given
    assert len(buffer) == 4
    state = copy.deepcopy(buffer.state_dict())
    out_a = buffer.query(torch.full((8, 1, 1, 1), 10.0))
    assert (out_a < 10).any() and (out_a == 10).any()  # some past fakes, some current
    restored = ReplayBuffer(capacity=1, seed=99)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.query(torch.full((8, 1, 1, 1), 10.0)), out_a)


def test_a_few_steps_reduce_the_cycle_loss() -> None:
    torch.manual_seed(0)
    trainer = GanTrainer(_model(), GanTrainConfig(total_steps=1000, decay_start_step=1000, lr=1e-3), device="cpu")
    mri, us = _blobs(4, 0, False), _blobs(4, 1, True)
    cycle = [trainer.train_step(mri, us)["cycle"] for _ in range(20)]
    assert sum(cycle[-3:]) / 3 < 0.8 * sum(cycle[:3]) / 3  # ~0.57 -> ~0.37 in 20 steps


def _run(trainer: GanTrainer, steps: int, offset: int = 0) -> list[dict[str, float]]:
    return [trainer.train_step(_blobs(2, offset + s, False), _blobs(2, offset + s + 50, True)) for s in range(steps)]


def test_state_dict_round_trip_resumes_bit_identically() -> None:
    cfg = GanTrainConfig(total_steps=6, decay_start_step=2, buffer_size=3)
    trainer = GanTrainer(_model(seed=0), cfg, device="cpu")
    _run(trainer, 3)  # fills the buffer (2 per step > capacity 3) and moves the schedulers
    state = copy.deepcopy(trainer.state_dict())
    expected = _run(trainer, 3, offset=3)
    resumed = GanTrainer(_model(seed=1), cfg, device="cpu")  # different init: all must come from state
    resumed.load_state_dict(state)
    assert resumed.step == 3 and len(resumed.buffer_us) == 3
    assert _run(resumed, 3, offset=3) == expected


def test_training_is_deterministic_under_a_seed() -> None:
    cfg = GanTrainConfig(total_steps=10, decay_start_step=5)
    runs = [_run(GanTrainer(_model(seed=3), cfg, device="cpu"), 3) for _ in range(2)]
    assert runs[0] == runs[1]


def test_train_gan_cycles_the_shorter_loader_and_reports_throughput() -> None:
    trainer = GanTrainer(_model(), GanTrainConfig(total_steps=5, decay_start_step=5), device="cpu")
    mri_loader = [_blobs(2, 0, False)]  # one batch: must be cycled
    us_loader = [(_blobs(2, s, True), torch.zeros(2)) for s in range(3)]  # (images, labels) batches
    messages: list[str] = []
    metrics = train_gan(trainer, mri_loader, us_loader, steps=5, log=messages.append, log_every=2)
    assert trainer.step == 5 and metrics["steps"] == 5
    assert metrics["images_per_s"] > 0 and SG_TERMS <= set(metrics)
    assert len(messages) == 3  # steps 2, 4 and the last
    with pytest.raises(ValueError, match="no batch"):
        train_gan(trainer, [], us_loader, steps=1)


def test_synthesize_us_keeps_order_shape_range_and_mode() -> None:
    model = _model().train()
    mri = _blobs(5, 0, False)
    synthetic = synthesize_us(model, mri, batch_size=2)
    assert synthetic.shape == (5, 1, 32, 32) and synthetic.abs().max() <= 1 and not synthetic.requires_grad
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(synthetic[3:4], model.mri_to_us(mri[3:4]))
    assert synthesize_us(model, mri[:0]).shape == (0, 1, 32, 32)
