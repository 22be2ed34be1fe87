"""MobileViT teacher and LSNet student (gradient-guided top-k sparse attention).

Papers:
* `Efficient endometrial carcinoma screening via cross-modal synthesis and gradient distillation`
  - https://arxiv.org/abs/2602.19822 (wide MobileViT teacher, LSNet student, gradient distillation)
* `MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer`
  - https://arxiv.org/abs/2110.02178 (MobileNetV2 + MobileViT block layout, channel lists)

Layout (MobileViT v1): 3x3 stem (stride 2), layer1 MV2, layer2 MV2 x ``layer2_depth`` (stride 2),
then three stages of [MV2 stride 2, MobileViT block], a 1x1 conv to ``channels[-1]``, global
average pooling and a linear classifier. Tokens are kept as [B, P, N, d] (batch never folded),
and every conv over a token grid is a dilated conv on the map, so Opacus hooks mode works with
``norm="group"`` (GroupNorm everywhere BatchNorm would be, MV2 blocks included).

Maps returned by ``forward_with_maps`` (one per MobileViT block, [B, P, h, N, N]):
* dense attention (teacher, ``attention="dense"``): pre-softmax scores q k^T * scale of the
  block's FIRST transformer layer, in the autograd graph, so the training code can take
  ``torch.autograd.grad(ce, maps)`` as distillation targets;
* top-k with ``gradient_generator=True`` (LSNet): g_hat = SELU(X X^T). The selection it induces
  is computed once per block and reused by every transformer layer of the block (the generator
  predicts one map per block; recomputing a dense q k^T ranking in later layers would cost the
  N^2 products the method removes). With ``selection_region`` s > 1 (the default, 2) and a token
  grid s divides, the selection is by s x s regions, ranked by the region mean of X X^T (see
  ``sparse_attention.region_attention``); the returned map is still the per-token g_hat. g_hat
  gets no gradient from CE (indices are not differentiable); it learns only through the
  distillation MSE;
* top-k without generator (ablation): each layer ranks keys by its own pre-softmax q k^T; the
  first layer's scores are returned.
Student and teacher maps have identical shapes for the same input size (same patch size, heads
and strides). Input sizes must be divisible by 32; when a token map is not divisible by the patch
size (e.g. 7x7 at 224) it is bilinearly resized to the next multiple and back, as in timm.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ecs_models._registry import register_model
from ecs_models.sparse_attention import (
    ConvFeedForward,
    GradientGenerator,
    MlpFeedForward,
    TokenAttention,
    fold_tokens,
    key_rows,
    num_topk_keys,
    region_rows,
    select_topk_keys,
    unfold_tokens,
)

__all__ = ["MobileViTConfig", "MobileViT", "ClassifierOutput", "model_cfgs"]


@dataclass(frozen=True)
class MobileViTConfig:
    """A MobileViT variant; every field can be overridden through ``create_model``."""

    # Output channels, MobileViT-paper order (11 entries): stem, layer1, layer2 first (stride 2)
    # block, layer2 other blocks, then (MV2 stride 2, MobileViT block) for layers 3, 4, 5,
    # and the final 1x1 conv (= num_features).
    channels: tuple[int, ...] = (16, 16, 24, 24, 32, 32, 48, 48, 64, 64, 128)
    transformer_dims: tuple[int, int, int] = (40, 48, 56)  # token width d of the 3 MobileViT blocks
    depths: tuple[int, int, int] = (2, 4, 3)  # transformer layers per MobileViT block
    num_heads: int = 4  # attention heads (d must be divisible)
    expansion: float = 2.0  # MobileNetV2 inverted-residual expansion ratio
    layer2_depth: int = 3  # MV2 blocks in layer2 (MobileViT: 3)
    mlp_ratio: float = 2.0  # hidden width / d of the "mlp" feed-forward
    patch_size: int = 2  # p_h = p_w; P = patch_size ** 2 token grids per block
    ffn: Literal["mlp", "dwconv"] = "dwconv"  # feed-forward: MLP or depthwise-separable grid conv
    attention: Literal["dense", "topk"] = "topk"  # dense attention or per-query top-k keys
    topk_ratio: float = 1 / 25  # k = max(1, round(N * topk_ratio)) keys per query
    gradient_generator: bool = True  # rank top-k keys by g_hat (else by the layer's own q k^T)
    # Side s (in tokens) of the square regions the generator's selection ranks: 1 = each query
    # keeps its own top-k keys; s > 1 = each s x s query region keeps its top k_r key regions
    # (k_r = max(1, round(R * topk_ratio)) of R = N / s^2; all their tokens are its keys), in
    # every block whose token grid s divides (others select per query). Why: per-query exact
    # top-k dominated LSNet's CPU latency; regions select over N / s^2 (docs/benchmarks.md).
    selection_region: int = 2
    norm: Literal["batch", "group"] = "batch"  # conv norms; "group" for Opacus DP-SGD
    norm_groups: int = 8  # GroupNorm groups (gcd with the channel count)
    num_classes: int = 2  # classifier outputs (invasion absent / present)
    in_chans: int = 1  # grayscale ultrasound
    img_size: int = 320  # default (square) input size; any multiple of 32 works
    drop_rate: float = 0.0  # dropout before the classifier

    def __post_init__(self) -> None:
        if len(self.channels) != 11:
            raise ValueError(f"channels needs 11 entries, got {len(self.channels)}")
        if len(self.transformer_dims) != 3 or len(self.depths) != 3:
            raise ValueError("transformer_dims and depths need 3 entries each")
        if self.ffn not in ("mlp", "dwconv"):
            raise ValueError(f"ffn must be 'mlp' or 'dwconv', got {self.ffn!r}")
        if self.attention not in ("dense", "topk"):
            raise ValueError(f"attention must be 'dense' or 'topk', got {self.attention!r}")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if self.selection_region < 1:
            raise ValueError(f"selection_region must be >= 1, got {self.selection_region}")
        if self.attention == "dense" and self.gradient_generator:
            # A generator only makes sense to rank keys; the dense ablation has none.
            raise ValueError("gradient_generator=True requires attention='topk'")


model_cfgs: dict[str, MobileViTConfig] = {
    # Wide MobileViT teacher: dims 128/160/192, expansion 4, dense attention, MLP FFN (ratio 4).
    # The release fixes dims, heads, expansion and depths only; the block channels
    # (MobileViT-S stem/layer1/layer2, then 144/176/224, final 4x) are chosen to give the
    # paper's "about 6.7 M" parameters (6.74 M at 2 classes, 1 input channel).
    "teacher": MobileViTConfig(
        channels=(16, 32, 64, 64, 144, 144, 176, 176, 224, 224, 896),
        transformer_dims=(128, 160, 192),
        expansion=4.0,
        ffn="mlp",
        mlp_ratio=4.0,
        attention="dense",
        gradient_generator=False,
    ),
    # LSNet student: dims 40/48/56, expansion 2, dwconv FFN, gradient-guided top-k attention.
    "lsnet": MobileViTConfig(),
}


@dataclass
class ClassifierOutput:
    """``logits`` [B, K]; ``features`` [B, F] pooled pre-classifier; ``maps`` [B, P, h, N, N] each."""

    logits: torch.Tensor
    features: torch.Tensor
    maps: list[torch.Tensor]


# --------------------------------------------------------------------------- conv layers
def make_norm(cfg: MobileViTConfig, channels: int) -> nn.Module:
    """BatchNorm2d, or GroupNorm with gcd(norm_groups, channels) groups for ``norm='group'``."""
    if cfg.norm == "group":
        return nn.GroupNorm(math.gcd(cfg.norm_groups, channels), channels)
    return nn.BatchNorm2d(channels)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) + norm + optional SiLU."""

    def __init__(
        self,
        cfg: MobileViTConfig,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
            ),
            make_norm(cfg, out_chs),
            nn.SiLU() if act else nn.Identity(),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (stride), linear 1x1 project, residual."""

    def __init__(self, cfg: MobileViTConfig, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        hidden = int(round(in_chs * cfg.expansion))
        self.expand = ConvNormAct(cfg, in_chs, hidden)
        self.depthwise = ConvNormAct(cfg, hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvNormAct(cfg, hidden, out_chs, act=False)
        self.use_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_residual else y


# --------------------------------------------------------------------------- transformer
class TransformerLayer(nn.Module):
    """Pre-norm layer on tokens [B, P, N, d]: x + attn(LN(x)); x + ffn(LN(x))."""

    def __init__(self, cfg: MobileViTConfig, dim: int) -> None:
        super().__init__()
        self_ranked_topk = cfg.attention == "topk" and not cfg.gradient_generator
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, cfg.num_heads, cfg.topk_ratio if self_ranked_topk else None)
        self.norm2 = nn.LayerNorm(dim)
        if cfg.ffn == "mlp":
            self.ffn: nn.Module = MlpFeedForward(dim, int(round(dim * cfg.mlp_ratio)))
        else:
            self.ffn = ConvFeedForward(dim, cfg.patch_size)

    def forward(
        self,
        x: torch.Tensor,
        grid: tuple[int, int],
        index: torch.Tensor | None,
        rows: torch.Tensor | None = None,
        region: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, P, N, d] -> (x [B, P, N, d], pre-softmax scores [B, P, h, N, N] or None).

        ``index`` [B, P, N, h, k]: the block's key selection; ``rows`` its ``key_rows`` (or, with
        ``region`` > 1, the ``region_rows`` of a region selection; tokens in region order).
        """
        attn_out, scores = self.attn(self.norm1(x), index, rows, region)
        x = x + attn_out
        x = x + self.ffn(self.norm2(x), grid, region)
        return x, scores


class MobileViTBlock(nn.Module):
    """Local 3x3 conv, 1x1 to d, unfold, transformer layers, LN, fold, 1x1 to C, 3x3 fusion."""

    def __init__(
        self, cfg: MobileViTConfig, in_chs: int, out_chs: int, dim: int, depth: int
    ) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.topk_ratio = cfg.topk_ratio
        self.selection_region = cfg.selection_region
        self.conv_kxk = ConvNormAct(cfg, in_chs, in_chs, 3)
        self.conv_1x1 = nn.Conv2d(in_chs, dim, 1, bias=False)
        self.generator = (
            GradientGenerator(dim, cfg.num_heads, cfg.patch_size)
            if cfg.gradient_generator
            else None
        )
        self.layers = nn.ModuleList(TransformerLayer(cfg, dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvNormAct(cfg, dim, out_chs)
        self.conv_fusion = ConvNormAct(cfg, in_chs + out_chs, out_chs, 3)

    def forward(
        self, x: torch.Tensor, with_map: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, C_in, H, W] -> (y [B, C_out, H, W], map [B, P, h, N, N] or None)."""
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))  # [B, d, H, W]
        h, w = x.shape[-2:]
        ph = self.patch_size
        new_h, new_w = math.ceil(h / ph) * ph, math.ceil(w / ph) * ph
        resized = (new_h, new_w) != (h, w)
        if resized:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        grid = (new_h // ph, new_w // ph)

        index = rows = block_map = None
        s = self.selection_region
        region = s if self.generator is not None and grid[0] % s == 0 and grid[1] % s == 0 else 1
        if self.generator is not None:
            # ranking: X X^T [B, P, h, N, N], or its region means [B, P, h, R, R]. SELU is
            # strictly increasing and so is the paper's ranking score in g_hat: rank by X X^T
            # directly (see sparse_attention.ranking_score).
            ranking, products = self.generator(x, region, full=with_map)
            chosen = select_topk_keys(ranking, num_topk_keys(ranking.shape[-1], self.topk_ratio))
            if region > 1:  # [B, P, h, R, k_r] key regions per query region
                rows = region_rows(chosen)  # shared by all layers of the block, k and v alike
            else:
                index = chosen.transpose(2, 3)  # [B, P, N, h, k], shared by all layers
                rows = key_rows(index, ranking.shape[-1])  # their gather rows, k and v alike
            if with_map:
                block_map = F.selu(products)  # g_hat per token pair, distilled on

        tokens = unfold_tokens(x, ph, region)  # [B, P, N, d]
        for i, layer in enumerate(self.layers):
            tokens, scores = layer(tokens, grid, index, rows, region)
            if i == 0 and block_map is None:
                block_map = scores
        tokens = self.norm(tokens)
        x = fold_tokens(tokens, ph, grid, region)  # [B, d, H', W']
        if resized:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)
        x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x, block_map if with_map else None


# --------------------------------------------------------------------------- model
class MobileViT(nn.Module):
    """MobileViT classifier: ``forward(x [B, C, H, W]) -> logits [B, num_classes]``."""

    def __init__(self, cfg: MobileViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.num_classes = cfg.num_classes
        self.num_features = c[10]
        self.stem = ConvNormAct(cfg, cfg.in_chans, c[0], 3, stride=2)
        layer2 = [InvertedResidual(cfg, c[1], c[2], stride=2)]
        layer2 += [
            InvertedResidual(cfg, c[2] if i == 0 else c[3], c[3], 1)
            for i in range(cfg.layer2_depth - 1)
        ]
        self.mv2_layers = nn.Sequential(InvertedResidual(cfg, c[0], c[1], stride=1), *layer2)
        self.downsamples = nn.ModuleList()
        self.vit_blocks = nn.ModuleList()
        prev = c[3]
        for i, (dim, depth) in enumerate(zip(cfg.transformer_dims, cfg.depths, strict=True)):
            mid, out = c[4 + 2 * i], c[5 + 2 * i]
            self.downsamples.append(InvertedResidual(cfg, prev, mid, stride=2))
            self.vit_blocks.append(MobileViTBlock(cfg, mid, out, dim, depth))
            prev = out
        self.final_conv = ConvNormAct(cfg, prev, self.num_features)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.classifier = nn.Linear(self.num_features, cfg.num_classes)
        self.apply(_init_weights)

    def _forward(self, x: torch.Tensor, with_maps: bool) -> ClassifierOutput:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not divisible by 32")
        x = self.mv2_layers(self.stem(x))  # [B, c3, H/4, W/4]
        maps: list[torch.Tensor] = []
        for down, block in zip(self.downsamples, self.vit_blocks, strict=True):
            x, block_map = block(down(x), with_map=with_maps)
            if block_map is not None:
                maps.append(block_map)
        features = self.final_conv(x).mean(dim=(2, 3))  # [B, F]
        logits = self.classifier(self.head_drop(features))  # [B, K]
        return ClassifierOutput(logits=logits, features=features, maps=maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, in_chans, H, W] (H, W multiples of 32) -> logits [B, num_classes]."""
        return self._forward(x, with_maps=False).logits

    def forward_with_maps(self, x: torch.Tensor) -> ClassifierOutput:
        """Logits, pooled features and one [B, P, h, N, N] map per MobileViT block (see module doc)."""
        return self._forward(x, with_maps=True)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _load_checkpoint(model: nn.Module, checkpoint_path: str | Path) -> None:
    """Load a local state dict (raw, or under 'state_dict' / 'model'); never downloads."""
    state = torch.load(Path(checkpoint_path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    model.load_state_dict(state)


_TUPLE_FIELDS = {"channels", "transformer_dims", "depths"}


def _create_mobilevit(
    variant: str, checkpoint_path: str | Path | None = None, **overrides: object
) -> MobileViT:
    """Build ``variant`` with config ``overrides`` (unknown keys raise TypeError naming them)."""
    valid = {f.name for f in dataclasses.fields(MobileViTConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(
            f"unknown config key(s) {unknown} for model {variant!r}; valid keys: {sorted(valid)} "
            "and checkpoint_path"
        )
    values = {k: tuple(v) if k in _TUPLE_FIELDS else v for k, v in overrides.items()}  # Hydra lists
    model = MobileViT(dataclasses.replace(model_cfgs[variant], **values))
    if checkpoint_path is not None:
        _load_checkpoint(model, checkpoint_path)
    return model


@register_model
def teacher(checkpoint_path: str | Path | None = None, **overrides: object) -> MobileViT:
    """Wide MobileViT teacher (dense attention, MLP FFN)."""
    return _create_mobilevit("teacher", checkpoint_path, **overrides)


@register_model
def lsnet(checkpoint_path: str | Path | None = None, **overrides: object) -> MobileViT:
    """LSNet student (gradient-guided top-k sparse attention, dwconv FFN)."""
    return _create_mobilevit("lsnet", checkpoint_path, **overrides)
