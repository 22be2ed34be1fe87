"""SG-CycleGAN training and synthesis in plain PyTorch (no flwr), for centralized and federated runs.

One :class:`GanTrainer` holds everything a checkpoint or a federated round must restore: the
model, the generator and discriminator Adam optimisers, their linear-decay schedulers, the two
50-image replay buffers of fakes and the step counter (:meth:`GanTrainer.state_dict`).

Generator loss (the paper's weights, :class:`GanLossWeights`)::

    1 * (LSGAN(D_us(G_mri->us(mri))) + LSGAN(D_mri(G_us->mri(us))))       adversarial
  + 10 * (|G_us->mri(G_mri->us(mri)) - mri| + |G_mri->us(G_us->mri(us)) - us|)   cycle L1
  + 5 * (|G_mri->us(us) - us| + |G_us->mri(mri) - mri|)                    identity L1
  + 5 * (BCE(C(GRL(F(mri))), 0) + BCE(C(GRL(F(us))), 1)) / 2              domain (DANN)
  + 5 * (|F(mri) - F(G_mri->us(mri))| + |F(us) - F(G_us->mri(us))|)        feature consistency

with ``F`` the MAFE and ``C`` the domain classifier (trained by the same optimiser; the
gradient reversal makes the MAFE fight it). Discriminators: ``0.5 * (MSE(D(real), 1) +
MSE(D(buffer(fake)), 0))`` each. The vanilla CycleGAN has no domain or feature terms.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ecs_models.sg_cyclegan import SGCycleGAN, dann_lambda

__all__ = [
    "GanLossWeights",
    "GanTrainConfig",
    "GanTrainer",
    "ReplayBuffer",
    "discriminator_loss",
    "gan_trainer",
    "position_schedule",
    "generator_loss_terms",
    "synthesize_us",
    "total_generator_loss",
    "train_gan",
]


@dataclass(frozen=True)
class GanLossWeights:
    """Generator loss weights (paper: 1 / 10 / 5 / 5 / 5)."""

    adversarial: float = 1.0  # per direction
    cycle: float = 10.0
    identity: float = 5.0
    domain: float = 5.0  # through the gradient reversal layer
    feature: float = 5.0  # modality-agnostic feature consistency


@dataclass(frozen=True)
class GanTrainConfig:
    """Optimisation settings (paper: Adam 2e-4, betas (0.5, 0.999), linear decay)."""

    total_steps: int = 10_000  # optimiser steps of the whole run (sets the decay end and DANN p)
    decay_start_step: int = 5_000  # constant LR before, linear decay to 0 at total_steps after
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    buffer_size: int = 50  # replay buffer of fakes per direction
    weights: GanLossWeights = field(default_factory=GanLossWeights)
    seed: int = 0  # replay buffers' random choices

    def __post_init__(self) -> None:
        if self.total_steps < 1 or not 0 <= self.decay_start_step <= self.total_steps:
            raise ValueError("need total_steps >= 1 and 0 <= decay_start_step <= total_steps")


class ReplayBuffer:
    """CycleGAN's image pool: show the discriminator a mix of current and past fakes.

    While fewer than ``capacity`` images are stored, every fake is stored and returned. Then
    each fake is, with probability 1/2, swapped for a random stored one (which is returned)
    or returned as is. Random choices come from the buffer's own generator, so they are
    reproducible and part of :meth:`state_dict`.
    """

    def __init__(self, capacity: int = 50, seed: int = 0) -> None:
        self.capacity = capacity
        self.images: list[torch.Tensor] = []  # each [C, H, W], detached
        self._rng = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` fakes -> ``[B, C, H, W]`` images for the discriminator (detached)."""
        if self.capacity <= 0:
            return fakes.detach()
        out = []
        for image in fakes.detach():
            if len(self.images) < self.capacity:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self._rng).item() < 0.5:
                index = int(torch.randint(len(self.images), (), generator=self._rng))
                out.append(self.images[index].to(image.device))
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, object]:
        """Stored images (CPU, ``[N, C, H, W]``) and the generator state."""
        images = torch.stack(self.images).cpu() if self.images else torch.empty(0)
        return {"capacity": self.capacity, "images": images, "rng_state": self._rng.get_state()}

    def load_state_dict(self, state: dict[str, object], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict` output; images go to ``device``."""
        self.capacity = int(state["capacity"])  # type: ignore[arg-type]
        images = state["images"]
        assert isinstance(images, torch.Tensor)
        self.images = [image.to(device).clone() for image in images] if images.numel() else []
        self._rng.set_state(state["rng_state"])  # type: ignore[arg-type]


def _lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, target))


def generator_loss_terms(
    model: SGCycleGAN, mri: torch.Tensor, us: torch.Tensor, grl_lambda: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Unweighted generator loss terms and the fakes.

    Args:
        model: the GAN (vanilla or not).
        mri, us: unpaired real batches ``[B, 1, S, S]`` in [-1, 1].
        grl_lambda: gradient-reversal strength (:func:`dann_lambda` of the progress).

    Returns:
        ``(terms, fake_us, fake_mri)``; terms ``adv_us``, ``adv_mri``, ``cycle``, ``identity``
        and, for SG-CycleGAN only, ``domain`` and ``feature`` (scalar tensors, graph attached).
    """
    feat_mri, feat_us = model.features(mri), model.features(us)
    fake_us = model.mri_to_us(mri, feat_mri)
    fake_mri = model.us_to_mri(us, feat_us)
    feat_fake_us, feat_fake_mri = model.features(fake_us), model.features(fake_mri)
    terms = {
        "adv_us": _lsgan(model.disc_us(fake_us), 1.0),
        "adv_mri": _lsgan(model.disc_mri(fake_mri), 1.0),
        "cycle": F.l1_loss(model.us_to_mri(fake_us, feat_fake_us), mri)
        + F.l1_loss(model.mri_to_us(fake_mri, feat_fake_mri), us),
        "identity": F.l1_loss(model.mri_to_us(us, feat_us), us)
        + F.l1_loss(model.us_to_mri(mri, feat_mri), mri),
    }
    if model.domain_classifier is not None:
        logits = model.domain_classifier(torch.cat([feat_mri, feat_us]), grl_lambda)  # [2B]
        targets = torch.cat([torch.zeros(len(mri)), torch.ones(len(us))]).to(logits)
        terms["domain"] = F.binary_cross_entropy_with_logits(logits, targets)
        terms["feature"] = F.l1_loss(feat_fake_us, feat_mri) + F.l1_loss(feat_fake_mri, feat_us)
    return terms, fake_us, fake_mri


def total_generator_loss(terms: dict[str, torch.Tensor], weights: GanLossWeights) -> torch.Tensor:
    """Weighted sum of :func:`generator_loss_terms` (absent terms contribute nothing)."""
    factor = {
        "adv_us": weights.adversarial, "adv_mri": weights.adversarial, "cycle": weights.cycle,
        "identity": weights.identity, "domain": weights.domain, "feature": weights.feature,
    }
    return sum((factor[name] * value for name, value in terms.items()), torch.zeros(()).to(next(iter(terms.values()))))


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss ``0.5 * (MSE(D(real), 1) + MSE(D(fake), 0))``; fake detached."""
    return 0.5 * (_lsgan(disc(real), 1.0) + _lsgan(disc(fake.detach()), 0.0))


def _linear_decay(cfg: GanTrainConfig) -> Callable[[int], float]:
    span = max(1, cfg.total_steps - cfg.decay_start_step)

    def factor(step: int) -> float:
        return max(0.0, 1.0 - max(0, step - cfg.decay_start_step) / span)

    return factor


class GanTrainer:
    """Optimisation state of one GAN: model, optimisers, schedulers, replay buffers, step.

    Args:
        model: an :class:`SGCycleGAN` (vanilla or not); moved to ``device``.
        config: optimisation settings.
        device: where to train (default: CUDA when available, else CPU).
    """

    def __init__(self, model: SGCycleGAN, config: GanTrainConfig | None = None,
                 device: torch.device | str | None = None) -> None:
        self.config = config or GanTrainConfig()
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        cfg = self.config
        self.opt_g = torch.optim.Adam(model.generator_parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=cfg.lr, betas=cfg.betas)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, _linear_decay(cfg))
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, _linear_decay(cfg))
        self.buffer_us = ReplayBuffer(cfg.buffer_size, seed=cfg.seed)
        self.buffer_mri = ReplayBuffer(cfg.buffer_size, seed=cfg.seed + 1)
        self.step = 0

    @property
    def progress(self) -> float:
        """Training progress ``step / total_steps`` in [0, 1] (the DANN ``p``)."""
        return min(1.0, self.step / self.config.total_steps)

    def _set_disc_grad(self, flag: bool) -> None:
        for p in self.model.discriminator_parameters():
            p.requires_grad_(flag)

    def train_step(self, mri: torch.Tensor, us: torch.Tensor, progress: float | None = None) -> dict[str, float]:
        """One generator and one discriminator update on unpaired batches.

        Args:
            mri, us: ``[B, 1, S, S]`` in [-1, 1] (batch sizes may differ); moved to the device.
            progress: DANN progress ``p`` in [0, 1]; None uses :attr:`progress`.

        Returns:
            Unweighted terms (``adv_us``, ``adv_mri``, ``cycle``, ``identity`` and for
            SG-CycleGAN ``domain``, ``feature`` and ``grl_lambda``), ``g_total`` (weighted),
            ``d_us``, ``d_mri`` and the ``lr`` used.
        """
        model, weights = self.model, self.config.weights
        model.train()
        mri, us = mri.to(self.device), us.to(self.device)
        grl_lambda = dann_lambda(self.progress if progress is None else progress)
        lr = self.opt_g.param_groups[0]["lr"]

        self._set_disc_grad(False)
        self.opt_g.zero_grad(set_to_none=True)
        terms, fake_us, fake_mri = generator_loss_terms(model, mri, us, grl_lambda)
        g_total = total_generator_loss(terms, weights)
        g_total.backward()
        self.opt_g.step()

        self._set_disc_grad(True)
        self.opt_d.zero_grad(set_to_none=True)
        d_us = discriminator_loss(model.disc_us, us, self.buffer_us.query(fake_us))
        d_mri = discriminator_loss(model.disc_mri, mri, self.buffer_mri.query(fake_mri))
        (d_us + d_mri).backward()
        self.opt_d.step()

        self.sched_g.step()
        self.sched_d.step()
        self.step += 1
        out = {name: float(value.detach()) for name, value in terms.items()}
        out.update(g_total=float(g_total.detach()), d_us=float(d_us.detach()),
                   d_mri=float(d_mri.detach()), lr=float(lr))
        if model.domain_classifier is not None:
            out["grl_lambda"] = grl_lambda
        return out

    def state_dict(self) -> dict[str, object]:
        """Everything needed to resume (tensors; optimiser state on its device).

        On CPU the resumed run is bit-identical to an uninterrupted one. On CUDA it matches up
        to nondeterministic kernels (reflection-pad backward uses atomics, cuDNN algorithm
        choice): seen on an H100, next-step losses differed by ~5e-3 after resuming.
        """
        return {
            "model": self.model.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "buffer_us": self.buffer_us.state_dict(), "buffer_mri": self.buffer_mri.state_dict(),
            "step": self.step, "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` output (the model config must match)."""
        self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
        self.opt_g.load_state_dict(state["opt_g"])  # type: ignore[arg-type]
        self.opt_d.load_state_dict(state["opt_d"])  # type: ignore[arg-type]
        self.sched_g.load_state_dict(state["sched_g"])  # type: ignore[arg-type]
        self.sched_d.load_state_dict(state["sched_d"])  # type: ignore[arg-type]
        self.buffer_us.load_state_dict(state["buffer_us"], self.device)  # type: ignore[arg-type]
        self.buffer_mri.load_state_dict(state["buffer_mri"], self.device)  # type: ignore[arg-type]
        self.step = int(state["step"])  # type: ignore[arg-type]


def position_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put a fresh optimiser's ``LambdaLR`` at global ``step``: its learning rate and position."""
    factor = scheduler.lr_lambdas[0](step)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * factor
    scheduler.last_epoch = step


def gan_trainer(model: SGCycleGAN, *, total_steps: int, lr: float, seed: int, device: torch.device | str | None = None,
                start_step: int = 0) -> GanTrainer:
    """A trainer for a schedule of ``total_steps`` (constant learning rate ``lr``, linear decay to 0
    over the second half, DANN schedule over the whole), positioned at ``start_step`` (a federated
    round continues the schedule where the previous round left it; 0: a centralized run)."""
    total = max(1, int(total_steps))
    trainer = GanTrainer(model, GanTrainConfig(total_steps=total, decay_start_step=total // 2, lr=lr, seed=seed), device=device)
    if start_step:
        trainer.step = start_step
        for optimizer, scheduler in ((trainer.opt_g, trainer.sched_g), (trainer.opt_d, trainer.sched_d)):
            position_schedule(optimizer, scheduler, start_step)
    return trainer


def _images(batch: object) -> torch.Tensor:
    """A loader batch: a tensor, or a tuple/list whose first item is the image tensor."""
    if isinstance(batch, tuple | list):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"expected an image tensor batch, got {type(batch).__name__}")
    return batch


def _cycle(loader: Iterable[object]) -> Iterator[torch.Tensor]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield _images(batch)
        if empty:
            raise ValueError("a GAN loader yielded no batch")


def train_gan(
    trainer: GanTrainer,
    mri_loader: Iterable[object],
    us_loader: Iterable[object],
    *,
    steps: int,
    device: torch.device | str | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
) -> dict[str, float]:
    """Run ``steps`` train steps, cycling both loaders (the shorter one restarts as needed).

    Args:
        trainer: the optimisation state (continues from its ``step``; DANN progress is
            ``trainer.step / config.total_steps``, so resumed and federated runs stay on schedule).
        mri_loader, us_loader: yield ``[B, 1, S, S]`` tensors in [-1, 1] or ``(images, labels)``.
        steps: optimiser steps to run now.
        device: move the trainer there first (None keeps the trainer's device).
        log: optional ``log(message)`` every ``log_every`` steps.

    Returns:
        Mean of every :meth:`GanTrainer.train_step` figure over the steps, plus ``steps``,
        ``seconds`` and ``images_per_s`` (real images of both domains seen per second).
    """
    if device is not None and torch.device(device) != trainer.device:
        trainer.device = torch.device(device)
        trainer.model.to(trainer.device)
        for opt in (trainer.opt_g, trainer.opt_d):  # move optimiser state with the model
            for state in opt.state.values():
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0:
                        state[key] = value.to(trainer.device)
    sums: dict[str, float] = {}
    n_images = 0
    start = time.perf_counter()
    batches = zip(_cycle(mri_loader), _cycle(us_loader), strict=False)  # both endless
    for index, (mri, us) in enumerate(itertools.islice(batches, steps), start=1):
        losses = trainer.train_step(mri, us)
        n_images += len(mri) + len(us)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value
        if log is not None and (index % log_every == 0 or index == steps):
            shown = ", ".join(f"{k}={v:.3f}" for k, v in losses.items() if k != "lr")
            log(f"step {trainer.step} ({index}/{steps}): {shown}")
    seconds = time.perf_counter() - start
    metrics = {name: total / max(1, steps) for name, total in sums.items()}
    metrics.update(steps=float(steps), seconds=seconds, images_per_s=n_images / max(seconds, 1e-9))
    return metrics


@torch.no_grad()
def synthesize_us(model: SGCycleGAN, mri_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """MRI of known label -> synthetic US with the same label (eval mode, no grad).

    Args:
        model: a trained GAN (its MRI -> US branch is used).
        mri_images: ``[B, 1, S, S]`` in [-1, 1], any device.
        batch_size: images per forward pass.

    Returns:
        ``[B, 1, S, S]`` in [-1, 1] on ``mri_images``' device, in input order.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        chunks = [model.mri_to_us(chunk.to(device)).to(mri_images.device)
                  for chunk in mri_images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else mri_images.new_empty((0, *mri_images.shape[1:]))
