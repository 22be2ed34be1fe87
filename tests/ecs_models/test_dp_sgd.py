"""Patient-level DP-SGD (ecs_models.training.dp_sgd): patients are sampled, not images; Opacus's
per-example gradients of the joint distillation loss are each example's own; the accountant's
state round-trips and a resumed accountant ends where an uninterrupted one does."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from ecs_models import create_model
from ecs_models.training.distill import DistillationModel, distillation_backward
from ecs_models.training.dp_sgd import PatientSampler, PrivacyAccount, steps_per_epoch
from ecs_models.training.per_example_grads import GroupedConvGradSampleModule
from server.privacy_ledger import epsilon_from_events

STUDENT = dict(channels=[8, 8, 12, 12, 16, 16, 24, 24, 32, 32, 64], transformer_dims=[16, 24, 32], depths=[1, 1, 1])
TEACHER = dict(channels=[8, 8, 16, 16, 24, 24, 32, 32, 40, 40, 64], transformer_dims=[32, 32, 32], depths=[1, 1, 1],
               expansion=2.0, mlp_ratio=2.0)


def test_patients_are_sampled_once_per_step_whatever_their_image_count() -> None:
    # one patient with 40 images among 10 with one: an image-level sampler would pick "big" in
    # nearly every batch, and could pick it twice
    patients = ["big"] * 40 + [f"p{i}" for i in range(10)]
    sampler = PatientSampler(patients, sample_rate=0.3, steps=3000, generator=torch.Generator().manual_seed(0))
    seen = Counter()
    for batch in sampler:
        owners = [patients[i] for i in batch]
        assert len(owners) == len(set(owners))  # at most one image per patient and step
        seen.update(owners)
    rates = {p: n / 3000 for p, n in seen.items()}
    assert abs(rates["big"] - 0.3) < 0.03  # the patient, not its images, has probability q
    assert all(abs(rates[f"p{i}"] - 0.3) < 0.03 for i in range(10))
    big_images = Counter(i for batch in PatientSampler(patients, 0.3, 3000, torch.Generator().manual_seed(1))
                         for i in batch if patients[i] == "big")
    assert len(big_images) == 40  # every image of the patient gets its turn


def test_steps_per_epoch_see_each_patient_once_in_expectation() -> None:
    assert steps_per_epoch(10, 4) == (0.4, 3)
    assert steps_per_epoch(10, 64) == (1.0, 1)
    assert steps_per_epoch(100, 8, cap=2) == (0.08, 2)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_resumed_account_ends_with_the_epsilon_of_an_uninterrupted_one(accountant: str) -> None:
    rounds = [(0.3, 5), (0.2, 5), (0.3, 5)]  # (q, steps): stage A's larger pool samples each patient less often
    z = 1.0
    whole = PrivacyAccount(accountant, delta=1e-3, clipping_norm=1.0, noise_multiplier=z)
    for q, steps in rounds:
        whole.add(z, q, steps)
    whole.add(2.0, 1.0, 1)  # a Gaussian release (e.g. a noised histogram)
    first = PrivacyAccount(accountant, delta=1e-3, clipping_norm=1.0, noise_multiplier=z)
    first.add(z, *rounds[0])
    resumed = PrivacyAccount.from_state_dict(json.loads(json.dumps(first.state_dict())))  # the site's file
    for q, steps in rounds[1:]:
        resumed.add(z, q, steps)
    resumed.add(2.0, 1.0, 1)
    entry = whole.entry()
    assert resumed.entry() == entry  # same events, same epsilon
    assert [e["kind"] for e in entry["events"]] == ["poisson_gaussian"] * 3 + ["gaussian"]
    again = epsilon_from_events(entry["events"], entry["delta"], entry["accountant"])  # dp-accounting
    assert again == pytest.approx(entry["epsilon"], rel=0.01)


def test_the_derived_noise_spends_the_planned_budget_and_no_more() -> None:
    account = PrivacyAccount("rdp", delta=1e-3, clipping_norm=1.0)
    z = account.derive_noise(target_epsilon=4.0, sample_rate=0.3, steps=15)
    assert account.derive_noise(target_epsilon=1.0, sample_rate=0.3, steps=15) == z  # fixed once for the run
    assert 3.95 <= account.epsilon((z, 0.3, 15)) <= 4.0 < account.epsilon((z, 0.3, 16))


def test_per_example_gradients_of_the_joint_distillation_loss_are_each_examples_own() -> None:
    """Opacus's per-example gradients (teacher CE + student CE + distillation + alignment, class
    weighted) equal each example's gradient alone: nothing in a step couples the examples, so the
    per-patient clip bounds a patient's influence. PyTorch's weighted-mean CE would couple them."""
    torch.manual_seed(0)
    model = DistillationModel(create_model("lsnet", norm="group", img_size=64, **STUDENT),
                              create_model("teacher", norm="group", img_size=64, **TEACHER)).train()
    model.teacher_projector.requires_grad_(False)
    x, y, weight = torch.randn(3, 1, 64, 64), torch.tensor([0, 1, 1]), torch.tensor([0.5, 2.0])
    wrapped = GroupedConvGradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)  # what DpSgd wraps
    distillation_backward(model, x, y, weight, per_example=True)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    per_example = {n: p.grad_sample.clone() for n, p in params}
    wrapped.to_standard_module()
    for i in range(3):
        model.zero_grad(set_to_none=True)
        distillation_backward(model, x[i:i + 1], y[i:i + 1], weight, per_example=True)
        for name, param in params:
            torch.testing.assert_close(per_example[name][i], param.grad, rtol=1e-3, atol=1e-5, msg=name)
