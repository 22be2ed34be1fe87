"""SG-CycleGAN under patient-level DP-SGD (ecs_models.training.gan_dp): the mixed batch's per-row
losses are the non-private losses split by patient, Opacus's per-example gradients are each
patient's own over every GAN parameter, and every step (an empty one too) is accounted."""

from __future__ import annotations

import copy

import pytest
import torch

from ecs_models.sg_cyclegan import create_sg_cyclegan
from ecs_models.training.dp_sgd import DpSgd, PatientSampler, PrivacyAccount, collate_or_empty
from ecs_models.training.gan import (
    GanLossWeights,
    discriminator_loss,
    generator_loss_terms,
    total_generator_loss,
)
from ecs_models.training.gan_dp import (
    DpGanTrainer,
    patient_discriminator_losses,
    patient_generator_losses,
    train_gan_dp,
)

SIZE = 32


def _gan(vanilla: bool = False):  # noqa: ANN202
    torch.manual_seed(0)
    return create_sg_cyclegan("cpu", image_size=SIZE, vanilla=vanilla)


def _batch(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, SIZE, SIZE, generator=generator) * 2 - 1
    return images, torch.arange(n) % 2 == 1  # MRI, US, MRI, US, ...


@pytest.mark.parametrize("vanilla", [False, True])
def test_the_rows_losses_are_the_non_private_losses_split_by_patient(vanilla: bool) -> None:
    model, (images, is_us) = _gan(vanilla), _batch()
    mri, us = images[~is_us], images[is_us]
    weights = GanLossWeights()
    with torch.no_grad():
        rows, terms, fakes = patient_generator_losses(model, images, is_us, 0.4, weights)
        standard, fake_us, fake_mri = generator_loss_terms(model, mri, us, 0.4)
        # equal numbers of each modality: the standard loss averages each direction over half the rows
        assert torch.allclose(2 * rows.mean(), total_generator_loss(standard, weights), rtol=1e-5)
        assert torch.allclose(fakes[~is_us], fake_us, atol=1e-6) and torch.allclose(fakes[is_us], fake_mri, atol=1e-6)
        assert ("domain" in terms) is not vanilla
        d_rows = patient_discriminator_losses(model, images, is_us, fakes)
        d_standard = discriminator_loss(model.disc_us, us, fake_us) + discriminator_loss(model.disc_mri, mri, fake_mri)
        assert torch.allclose(2 * d_rows.mean(), d_standard, rtol=1e-5)


def _alone(model, image: torch.Tensor, is_us: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """One patient's gradient, computed without Opacus: generator side from its generator loss,
    discriminators from its discriminator loss."""
    generator_side, discriminators = model.generator_parameters(), model.discriminator_parameters()
    loss, _terms, fake = patient_generator_losses(model, image, is_us, 0.0, GanLossWeights())
    grads = dict(zip(map(id, generator_side), torch.autograd.grad(loss.sum(), generator_side, allow_unused=True), strict=True))
    d_loss = patient_discriminator_losses(model, image, is_us, fake)
    grads.update(zip(map(id, discriminators), torch.autograd.grad(d_loss.sum(), discriminators), strict=True))
    return grads


def test_per_example_gradients_are_each_patients_own_over_every_parameter() -> None:
    # float64: InstanceNorm's gradients at initialisation are ill-conditioned enough that float32
    # sums of single rows and of the batch differ by percents (biases before a norm: exactly 0)
    model, (images, is_us) = _gan().double(), _batch(2)  # one MRI and one ultrasound patient
    images = images.double()
    reference = copy.deepcopy(model)
    account = PrivacyAccount("rdp", 1e-5, clipping_norm=1.0, noise_multiplier=1.0)
    trainer = DpGanTrainer(model, DpSgd(account, sample_rate=0.5, expected_batch_size=4, seed=0), total_steps=10, lr=1e-3)
    trainer.per_patient_gradients(images, is_us)
    names = dict(reference.named_parameters())
    for row in range(len(images)):
        alone = _alone(reference, images[row:row + 1], is_us[row:row + 1])
        for name, param in model.named_parameters():
            expected = alone[id(names[name])]
            expected = torch.zeros_like(param) if expected is None else expected
            assert torch.allclose(param.grad_sample[row], expected, atol=1e-9, rtol=1e-6), (row, name)
    trainer.close()


def test_every_step_of_a_round_is_accounted_and_the_hooks_go() -> None:
    model = _gan()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, is_us = _batch(6)
    patients = ["m0", "u0", "m1", "u1", "m2", "u2"]
    dataset = torch.utils.data.TensorDataset(images, is_us)
    # q = 0.2 of 6 patients: some of the 5 steps are empty, and still clip, add noise and count
    loader = torch.utils.data.DataLoader(dataset, collate_fn=collate_or_empty,
                                         batch_sampler=PatientSampler(patients, 0.2, 5, torch.Generator().manual_seed(3)))
    account = PrivacyAccount("rdp", 1e-5, clipping_norm=1.0, noise_multiplier=1.5)
    trainer = DpGanTrainer(model, DpSgd(account, sample_rate=0.2, expected_batch_size=1.2, seed=0), total_steps=10,
                           lr=1e-3, start_step=5)
    figures = train_gan_dp(trainer, loader)
    assert figures["steps"] == 5 and trainer.step == 10
    assert account.events() == [{"kind": "poisson_gaussian", "sample_rate": 0.2, "noise_multiplier": 1.5, "count": 5}]
    assert figures["lr"] < 1e-3  # the second half of the schedule decays
    assert all(not layer._forward_hooks and not layer._backward_hooks for layer in model.modules())
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.endswith("weight"))
