"""SG-CycleGAN: structure-guided CycleGAN for unpaired MRI -> ultrasound translation.

From "Efficient endometrial carcinoma screening via cross-modal synthesis and gradient
distillation" (arXiv 2602.19822), stage 1 (see ``shared/reference/paper.md``).

Layout:

* :class:`ModalityAgnosticFeatureExtractor` (MAFE): one encoder-decoder shared by both
  directions; an image of either modality ``[B, 1, S, S]`` -> features ``[B, 32, S, S]``.
* :class:`TranslationBranch`, one per direction (MRI->US, US->MRI), on top of the MAFE
  features: 7x7 conv stem, 3 stride-2 convs, a :class:`DynamicConv`, N residual blocks, 3
  transposed convs, 7x7 conv to the image, tanh. InstanceNorm throughout.
* :class:`PatchDiscriminator` per image domain (4x4 convs, LeakyReLU 0.2, InstanceNorm; the
  least-squares loss lives in :mod:`ecs_models.training.gan`).
* :class:`DomainClassifier` on the MAFE features behind a :class:`GradientReversal` whose
  strength follows the DANN schedule :func:`dann_lambda`.

The dynamic (region-aware) convolution is our choice, since the paper does not specify it:
``K`` candidate 3x3 kernels and a per-pixel softmax router (a 3x3 conv on the same features).
Because convolution is linear, ``sum_k a_k(p) (W_k * x)(p) = ((sum_k a_k(p) W_k) * x)(p)``: each
position is filtered by its own mixture of kernels, chosen from the local content (fluid,
myometrium, speckle, background), which is what "region-aware" asks for. It is computed as
one conv with ``K * C`` outputs and a weighted sum (no unfold), so it costs K convs.

``vanilla=True`` is a plain CycleGAN with the same branches fed by the image itself (no MAFE,
no domain classifier): the baseline for the side-by-side comparison.

Images are single-channel in [-1, 1]. All conv / linear weights are initialised N(0, 0.02)
(InstanceNorm here has no affine parameters), biases 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from ecs_models._registry import register_model

__all__ = [
    "SGCycleGAN",
    "SGCycleGANCfg",
    "SG_CYCLEGAN_CFGS",
    "DomainClassifier",
    "DynamicConv",
    "GradientReversal",
    "ModalityAgnosticFeatureExtractor",
    "PatchDiscriminator",
    "TranslationBranch",
    "dann_lambda",
    "grad_reverse",
    "create_sg_cyclegan",
    "sg_cyclegan",
    "cyclegan_vanilla",
]


@dataclass(frozen=True)
class SGCycleGANCfg:
    """Sizes of an SG-CycleGAN (or, with ``vanilla``, a plain CycleGAN)."""

    image_size: int = 256  # side of the square training images, px (divisible by 2**n_down)
    in_channels: int = 1  # grayscale images
    mafe_channels: int = 32  # MAFE output channels (paper: 32, full resolution)
    mafe_width: int = 32  # MAFE first-stage channels (x2 per encoder stage)
    mafe_depth: int = 2  # stride-2 stages of the MAFE encoder (mirrored by its decoder)
    gen_width: int = 64  # translation-branch stem channels (x2 per downsampling)
    gen_max_width: int = 256  # cap on branch channels (the bottleneck width)
    n_down: int = 3  # stride-2 convs / transposed convs in each branch (paper: 3)
    n_res_blocks: int = 7  # residual blocks at the bottleneck (paper: 7)
    dynamic_kernels: int = 4  # K candidate kernels of the dynamic conv
    disc_width: int = 64  # first-layer channels of the PatchGAN discriminators
    disc_stride2_layers: int = 3  # stride-2 4x4 convs of the discriminator (3 = 70x70 PatchGAN)
    domain_width: int = 64  # first-layer channels of the domain classifier
    vanilla: bool = False  # plain CycleGAN: no MAFE, no domain classifier

    def __post_init__(self) -> None:
        if self.image_size % (2 ** max(self.n_down, self.mafe_depth)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**n_down")
        if min(self.mafe_channels, self.mafe_width, self.gen_width, self.disc_width) < 1:
            raise ValueError("widths must be >= 1")
        if self.dynamic_kernels < 1 or self.n_res_blocks < 0 or self.n_down < 1:
            raise ValueError("dynamic_kernels >= 1, n_res_blocks >= 0, n_down >= 1 required")


SG_CYCLEGAN_CFGS: dict[str, SGCycleGANCfg] = {
    # the paper's sizes: 256x256 crops, 7 residual blocks
    "paper": SGCycleGANCfg(),
    # seconds per step on 2 CPU cores, for tests, benchmarks and federated smoke runs
    "cpu": SGCycleGANCfg(
        image_size=128, mafe_width=16, mafe_depth=2, gen_width=16, gen_max_width=64,
        n_res_blocks=2, dynamic_kernels=4, disc_width=32, disc_stride2_layers=3, domain_width=32,
    ),
}


def dann_lambda(progress: float) -> float:
    """DANN reversal strength ``2 / (1 + exp(-5 p)) - 1`` for training progress ``p`` in [0, 1]."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-5.0 * p)) - 1.0


class _GradReverseFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-lambda_`` backward."""
    return _GradReverseFn.apply(x, float(lambda_))


class GradientReversal(nn.Module):
    """Gradient reversal layer; set ``lambda_`` (e.g. from :func:`dann_lambda`) before use."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:.4f}"


def _conv_norm_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Reflection-padded conv -> InstanceNorm -> ReLU (same size for stride 1)."""
    pad = kernel // 2
    return nn.Sequential(
        nn.ReflectionPad2d(pad) if stride == 1 else nn.ZeroPad2d(pad),
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride),
        nn.InstanceNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _up_norm_act(in_ch: int, out_ch: int) -> nn.Sequential:
    """Transposed 3x3 stride-2 conv (exact x2) -> InstanceNorm -> ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1),
        nn.InstanceNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """CycleGAN residual block: two reflection-padded 3x3 convs with InstanceNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DynamicConv(nn.Module):
    """Region-aware conv: per-pixel softmax mixture of ``num_kernels`` 3x3 kernels.

    ``[B, C, H, W] -> [B, out, H, W]``, followed by InstanceNorm and ReLU. The router is a
    3x3 conv on the same input, so the mixture follows the local content.
    """

    def __init__(self, in_ch: int, out_ch: int, num_kernels: int) -> None:
        super().__init__()
        self.num_kernels = num_kernels
        self.out_ch = out_ch
        self.pad = nn.ReflectionPad2d(1)
        self.kernels = nn.Conv2d(in_ch, out_ch * num_kernels, 3)
        self.router = nn.Conv2d(in_ch, num_kernels, 3)
        self.norm = nn.InstanceNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Mixture weights ``[B, K, H, W]`` (softmax over K)."""
        return torch.softmax(self.router(self.pad(x)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self.pad(x)
        batch, _, height, width = x.shape
        # [B, K, out, H, W]: every candidate kernel's response
        responses = self.kernels(padded).view(batch, self.num_kernels, self.out_ch, height, width)
        weights = torch.softmax(self.router(padded), dim=1)  # [B, K, H, W]
        mixed = (responses * weights.unsqueeze(2)).sum(dim=1)  # [B, out, H, W]
        return self.act(self.norm(mixed))


class ModalityAgnosticFeatureExtractor(nn.Module):
    """MAFE: U-shaped encoder-decoder, ``[B, in, S, S] -> [B, mafe_channels, S, S]``.

    7x7 stem, ``mafe_depth`` stride-2 convs, a residual block, as many transposed convs back
    with additive skips from the encoder (keeps full-resolution structure), a 3x3 conv to
    ``mafe_channels``, InstanceNorm and ReLU (the normalisation keeps the features from
    collapsing to a constant under the consistency and domain losses).
    """

    def __init__(self, cfg: SGCycleGANCfg) -> None:
        super().__init__()
        widths = [cfg.mafe_width * 2**i for i in range(cfg.mafe_depth + 1)]
        self.stem = _conv_norm_act(cfg.in_channels, widths[0], 7)
        self.down = nn.ModuleList(
            _conv_norm_act(widths[i], widths[i + 1], 3, stride=2) for i in range(cfg.mafe_depth)
        )
        self.middle = ResidualBlock(widths[-1])
        self.up = nn.ModuleList(
            _up_norm_act(widths[i + 1], widths[i]) for i in reversed(range(cfg.mafe_depth))
        )
        self.head = _conv_norm_act(widths[0], cfg.mafe_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        x = self.middle(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(x) + skip
        return self.head(x)


class TranslationBranch(nn.Module):
    """One direction's private generator, ``[B, in, S, S] -> [B, 1, S, S]`` in [-1, 1]."""

    def __init__(self, in_channels: int, cfg: SGCycleGANCfg) -> None:
        super().__init__()
        widths = [min(cfg.gen_width * 2**i, cfg.gen_max_width) for i in range(cfg.n_down + 1)]
        self.stem = _conv_norm_act(in_channels, widths[0], 7)
        self.down = nn.Sequential(
            *(_conv_norm_act(widths[i], widths[i + 1], 3, stride=2) for i in range(cfg.n_down))
        )
        self.dynamic = DynamicConv(widths[-1], widths[-1], cfg.dynamic_kernels)
        self.res_blocks = nn.Sequential(*(ResidualBlock(widths[-1]) for _ in range(cfg.n_res_blocks)))
        self.up = nn.Sequential(*(_up_norm_act(widths[i + 1], widths[i]) for i in reversed(range(cfg.n_down))))
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(widths[0], cfg.in_channels, 7), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(self.stem(x))  # [B, C, S / 2**n_down, S / 2**n_down]
        x = self.res_blocks(self.dynamic(x))
        return self.head(self.up(x))


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``[B, 1, S, S] -> [B, 1, P, P]`` real/fake scores (raw, for least squares)."""

    def __init__(self, cfg: SGCycleGANCfg) -> None:
        super().__init__()
        width = cfg.disc_width
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for i in range(1, cfg.disc_stride2_layers + 1):
            in_w, width = width, cfg.disc_width * 2 ** min(i, 3)
            stride = 2 if i < cfg.disc_stride2_layers else 1
            layers += [nn.Conv2d(in_w, width, 4, stride, 1), nn.InstanceNorm2d(width), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DomainClassifier(nn.Module):
    """MAFE features ``[B, C, S, S]`` -> one modality logit per image ``[B]`` (US = 1, MRI = 0).

    The input goes through a :class:`GradientReversal` first: minimising the classifier's
    loss trains the classifier and, reversed, pushes the MAFE towards modality invariance.
    """

    def __init__(self, cfg: SGCycleGANCfg) -> None:
        super().__init__()
        self.grl = GradientReversal(1.0)
        w = cfg.domain_width
        self.features = nn.Sequential(
            nn.Conv2d(cfg.mafe_channels, w, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.InstanceNorm2d(2 * w), nn.LeakyReLU(0.2, inplace=True),
        )
        self.fc = nn.Linear(2 * w, 1)

    def forward(self, features: torch.Tensor, lambda_: float) -> torch.Tensor:
        self.grl.lambda_ = float(lambda_)
        x = self.features(self.grl(features))
        return self.fc(x.mean(dim=(2, 3))).squeeze(1)


def init_weights_normal(module: nn.Module, std: float = 0.02) -> None:
    """N(0, ``std``) for conv / transposed conv / linear weights, zero biases (in place)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SGCycleGAN(nn.Module):
    """Both translation directions, the shared MAFE, discriminators and domain classifier.

    ``forward(mri)`` is the deployable MRI -> US translation ``[B, 1, S, S] -> [B, 1, S, S]``.
    Attributes ``mafe`` and ``domain_classifier`` are None for the vanilla CycleGAN.
    """

    def __init__(self, cfg: SGCycleGANCfg) -> None:
        super().__init__()
        self.cfg = cfg
        branch_in = cfg.in_channels if cfg.vanilla else cfg.mafe_channels
        self.mafe = None if cfg.vanilla else ModalityAgnosticFeatureExtractor(cfg)
        self.branch_mri_to_us = TranslationBranch(branch_in, cfg)
        self.branch_us_to_mri = TranslationBranch(branch_in, cfg)
        self.disc_us = PatchDiscriminator(cfg)
        self.disc_mri = PatchDiscriminator(cfg)
        self.domain_classifier = None if cfg.vanilla else DomainClassifier(cfg)
        init_weights_normal(self)

    @property
    def vanilla(self) -> bool:
        return self.cfg.vanilla

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """MAFE features ``[B, mafe_channels, S, S]`` (the image itself for vanilla)."""
        return x if self.mafe is None else self.mafe(x)

    def mri_to_us(self, mri: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """MRI ``[B, 1, S, S]`` -> synthetic US in [-1, 1]; reuses ``features`` when given."""
        return self.branch_mri_to_us(self.features(mri) if features is None else features)

    def us_to_mri(self, us: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """US ``[B, 1, S, S]`` -> synthetic MRI in [-1, 1]; reuses ``features`` when given."""
        return self.branch_us_to_mri(self.features(us) if features is None else features)

    def forward(self, mri: torch.Tensor) -> torch.Tensor:
        return self.mri_to_us(mri)

    def generator_parameters(self) -> list[nn.Parameter]:
        """MAFE, both branches and the domain classifier (trained by the generator optimiser)."""
        modules = [self.mafe, self.branch_mri_to_us, self.branch_us_to_mri, self.domain_classifier]
        return [p for m in modules if m is not None for p in m.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Both image discriminators."""
        return [*self.disc_us.parameters(), *self.disc_mri.parameters()]


def create_sg_cyclegan(
    preset: str = "paper", *, vanilla: bool = False, checkpoint_path: str | Path | None = None,
    **overrides: object,
) -> SGCycleGAN:
    """Build from a named preset (``"cpu"`` / ``"paper"``) with :class:`SGCycleGANCfg` overrides.

    ``None`` overrides are dropped (an empty config value keeps the preset's); an unknown key
    raises ``TypeError`` naming it. ``checkpoint_path``: a ``torch.save``d model state dict, or
    a :class:`~ecs_models.training.gan.GanTrainer` state (its ``"model"`` entry).
    """
    if preset not in SG_CYCLEGAN_CFGS:
        raise KeyError(f"unknown SG-CycleGAN preset {preset!r}; known: {sorted(SG_CYCLEGAN_CFGS)}")
    valid = {f.name for f in fields(SGCycleGANCfg)} - {"vanilla"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"unknown config key(s) {unknown} for SG-CycleGAN; valid keys: {sorted(valid)}, "
                        "preset and checkpoint_path")
    values = {k: v for k, v in overrides.items() if v is not None}
    model = SGCycleGAN(replace(SG_CYCLEGAN_CFGS[preset], vanilla=vanilla, **values))
    if checkpoint_path is not None:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"] if "model" in state else state)
    return model


@register_model
def sg_cyclegan(preset: str = "paper", checkpoint_path: str | Path | None = None, **overrides: object) -> SGCycleGAN:
    """SG-CycleGAN (MAFE + domain classifier) at ``preset`` with config overrides."""
    return create_sg_cyclegan(preset, vanilla=False, checkpoint_path=checkpoint_path, **overrides)


@register_model
def cyclegan_vanilla(
    preset: str = "paper", checkpoint_path: str | Path | None = None, **overrides: object
) -> SGCycleGAN:
    """Plain CycleGAN: the same branches, discriminators and budget, no MAFE / domain classifier."""
    return create_sg_cyclegan(preset, vanilla=True, checkpoint_path=checkpoint_path, **overrides)
