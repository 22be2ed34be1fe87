"""SG-CycleGAN training under patient-level DP-SGD (a site's GAN round with ``privacy=local``).

Why every parameter, not only the discriminators: a CycleGAN's generators see real images
directly (cycle, identity, the MAFE's domain and feature terms), so the usual DP-GAN argument
("the generator sees data only through the discriminator") does not hold. What does hold: every
term of :mod:`ecs_models.training.gan`'s losses is a function of **one** real image::

    an MRI image m (its patient)               an ultrasound image u (its patient)
    LSGAN(D_us(G_mri->us(m)), 1)                LSGAN(D_mri(G_us->mri(u)), 1)
    |G_us->mri(G_mri->us(m)) - m|               |G_mri->us(G_us->mri(u)) - u|
    |G_us->mri(m) - m|                          |G_mri->us(u) - u|
    BCE(C(F(m)), 0), |F(m) - F(G_mri->us(m))|   BCE(C(F(u)), 1), |F(u) - F(G_us->mri(u))|
    D_mri: (D_mri(m) - 1)^2, D_us(fake)^2       D_us: (D_us(u) - 1)^2, D_mri(fake)^2

So one step takes a *mixed* batch: Poisson-sampled patients of the site (MRI and ultrasound alike,
one image each, :class:`~ecs_models.training.dp_sgd.PatientSampler`), each row with its
modality. A row's loss is its column above (InstanceNorm only: rows do not mix), Opacus's
per-example gradient of it is the patient's gradient over **every** GAN parameter (generators,
MAFE, domain classifier, discriminators), clipped jointly and noised once per step: one
Poisson-subsampled Gaussian release per step, as in a classifier round.

Two differences from :class:`~ecs_models.training.gan.GanTrainer`, both for the guarantee:
no replay buffers (past fakes are functions of past patients' images, outside the step's
clip), and one Adam over all parameters (the generator's and discriminators' gradients are
clipped as one vector; with equal settings Adam's per-parameter update is the same as two).
The generator's and discriminators' gradients are both taken at the step's starting parameters,
with the fakes detached for the discriminators, as in the non-private step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ecs_models.sg_cyclegan import SGCycleGAN, dann_lambda
from ecs_models.training.dp_sgd import DpSgd
from ecs_models.training.gan import GanLossWeights, GanTrainConfig, _linear_decay, position_schedule

__all__ = ["DpGanTrainer", "patient_discriminator_losses", "patient_generator_losses", "train_gan_dp"]


def _row_mean(values: torch.Tensor) -> torch.Tensor:
    """``[B, ...] -> [B]``: the mean of each row."""
    return values.flatten(1).mean(1)


def patient_generator_losses(model: SGCycleGAN, images: torch.Tensor, is_us: torch.Tensor, grl_lambda: float,
                             weights: GanLossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Each row's generator loss (its column of the module docstring's table).

    Args:
        images: ``[B, 1, S, S]`` in [-1, 1], MRI and ultrasound rows mixed.
        is_us: ``[B]`` bool, True for an ultrasound row.
        grl_lambda: gradient-reversal strength (:func:`~ecs_models.sg_cyclegan.dann_lambda`).

    Returns:
        ``(loss [B], terms, fakes [B, 1, S, S])``: the weighted loss of each row; the unweighted
        terms ``[B]`` each (``adversarial``, ``cycle``, ``identity`` and, for SG-CycleGAN,
        ``domain``, ``feature``); each row translated to the other modality.
    """
    us = is_us.view(-1, 1, 1, 1)
    feat = model.features(images)
    to_us, to_mri = model.mri_to_us(images, feat), model.us_to_mri(images, feat)
    fakes, same = torch.where(us, to_mri, to_us), torch.where(us, to_us, to_mri)
    feat_fake = model.features(fakes)
    back = torch.where(us, model.mri_to_us(fakes, feat_fake), model.us_to_mri(fakes, feat_fake))
    adv_us, adv_mri = _row_mean((model.disc_us(fakes) - 1) ** 2), _row_mean((model.disc_mri(fakes) - 1) ** 2)
    terms = {
        "adversarial": torch.where(is_us, adv_mri, adv_us),
        "cycle": _row_mean((back - images).abs()),
        "identity": _row_mean((same - images).abs()),
    }
    loss = weights.adversarial * terms["adversarial"] + weights.cycle * terms["cycle"] + weights.identity * terms["identity"]
    if model.domain_classifier is not None:
        logits = model.domain_classifier(feat, grl_lambda)  # [B]
        terms["domain"] = F.binary_cross_entropy_with_logits(logits, is_us.to(logits.dtype), reduction="none")
        terms["feature"] = _row_mean((feat - feat_fake).abs())
        loss = loss + weights.domain * terms["domain"] / 2 + weights.feature * terms["feature"]
    return loss, terms, fakes


def patient_discriminator_losses(model: SGCycleGAN, images: torch.Tensor, is_us: torch.Tensor,
                                 fakes: torch.Tensor) -> torch.Tensor:
    """Each row's discriminator loss ``[B]``: its own modality's discriminator on the real image
    (target 1) and the other's on its detached translation (target 0), halved as in the LSGAN loss."""
    fakes = fakes.detach()
    real = torch.where(is_us, _row_mean((model.disc_us(images) - 1) ** 2), _row_mean((model.disc_mri(images) - 1) ** 2))
    fake = torch.where(is_us, _row_mean(model.disc_mri(fakes) ** 2), _row_mean(model.disc_us(fakes) ** 2))
    return 0.5 * (real + fake)


class DpGanTrainer:
    """The DP-SGD state of one GAN round: model, one Adam under Opacus, its schedule, the step.

    Args:
        model: the GAN (moved to ``device``; Opacus's hooks are on it until :meth:`close`).
        dp: the round's DP-SGD (the site's accountant records every step).
        total_steps: steps of the whole schedule (constant ``lr``, then linear decay to 0 over the
            second half; the DANN schedule over the whole), as :func:`~ecs_models.training.gan.gan_trainer`.
        start_step: where this round starts on that schedule.
    """

    def __init__(self, model: SGCycleGAN, dp: DpSgd, *, total_steps: int, lr: float, start_step: int = 0,
                 device: torch.device | str = "cpu", weights: GanLossWeights | None = None) -> None:
        total = max(1, int(total_steps))
        self.config = GanTrainConfig(total_steps=total, decay_start_step=total // 2, lr=lr, buffer_size=0,
                                     weights=weights or GanLossWeights())
        self.device, self.dp, self.step = torch.device(device), dp, int(start_step)
        self.model = model.to(self.device)
        adam = torch.optim.Adam(model.parameters(), lr=lr, betas=self.config.betas)
        self.optimizer = dp.wrap(model, adam)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _linear_decay(self.config))
        position_schedule(self.optimizer, self.scheduler, self.step)

    def per_patient_gradients(self, images: torch.Tensor, is_us: torch.Tensor) -> dict[str, float]:
        """Forward and backward of a non-empty mixed batch: every parameter's ``grad_sample``
        ``[B, *shape]`` is then each row's (patient's) gradient of its own loss, the generator
        side's from :func:`patient_generator_losses`, the discriminators' from
        :func:`patient_discriminator_losses`.

        Returns:
            The batch means of the unweighted terms, ``g_total`` and ``d_total``.
        """
        model = self.model
        model.train()
        images, is_us = images.to(self.device), is_us.to(self.device).bool()
        self.optimizer.zero_grad(set_to_none=True)
        progress = min(1.0, self.step / self.config.total_steps)
        g_rows, terms, fakes = patient_generator_losses(model, images, is_us, dann_lambda(progress), self.config.weights)
        g_rows.mean().backward()
        for param in model.discriminator_parameters():  # the generator's loss is not the discriminators' gradient
            param.grad_sample, param.grad = None, None
        d_rows = patient_discriminator_losses(model, images, is_us, fakes)
        d_rows.mean().backward()
        figures = {name: float(value.detach().mean()) for name, value in terms.items()}
        return {**figures, "g_total": float(g_rows.detach().mean()), "d_total": float(d_rows.detach().mean())}

    def train_step(self, images: torch.Tensor, is_us: torch.Tensor) -> dict[str, float]:
        """One DP-SGD step on a mixed batch (possibly empty: the step still adds noise and is accounted).

        Returns:
            :meth:`per_patient_gradients`' figures (none for an empty batch) and the ``lr`` used.
        """
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        figures = self.per_patient_gradients(images, is_us) if len(images) else {}
        self.dp.fill_missing(len(images))
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {**figures, "lr": lr}

    def close(self) -> None:
        """Remove Opacus's hooks: the model is a plain module again."""
        self.dp.close()


def train_gan_dp(trainer: DpGanTrainer, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                 log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Every batch of ``loader`` (``(images [B, 1, S, S], is_us [B])``, a Poisson patient loader)
    as one :meth:`DpGanTrainer.train_step`; then the hooks are removed.

    Returns:
        Means of each figure over the non-empty steps, plus ``steps``, ``seconds`` and
        ``images_per_s``. Under DP these stay at the site (they are functions of its images).
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    steps = n_images = 0
    start = time.perf_counter()
    try:
        for images, is_us in loader:
            figures = trainer.train_step(images, is_us)
            steps, n_images = steps + 1, n_images + len(images)
            for name, value in figures.items():
                sums[name], counts[name] = sums.get(name, 0.0) + value, counts.get(name, 0) + 1
            if log is not None:
                log(f"step {trainer.step}: " + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    finally:
        trainer.close()
    seconds = time.perf_counter() - start
    return {**{name: sums[name] / counts[name] for name in sums}, "steps": float(steps), "seconds": seconds,
            "images_per_s": n_images / max(seconds, 1e-9)}
