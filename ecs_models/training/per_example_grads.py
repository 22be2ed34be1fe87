"""Per-example gradients of grouped convolutions, one group at a time (for Opacus's hooks).

Opacus 1.6 computes a Conv2d's per-example weight gradient as one product of the output's
gradient [B, out, L] with the unfolded input [B, in x k, L] over *all* input channels, then keeps
the diagonal blocks of the groups. For a depthwise 3x3 convolution (groups = channels = C) that is
C times the work and memory needed: a [B, C, 9C] product of which [B, C, 9] is kept. MobileViT's
inverted-residual blocks are depthwise convolutions, and in the teacher + LSNet they made the DP-SGD
step several times the cost of the plain one (docs/privacy.md, "Cost of a DP-SGD step").

:func:`conv2d_grad_sample` multiplies each group's output channels with that group's input
columns only (the same numbers: ``tests/ecs_models/training/test_per_example_grads.py`` compares
it with Opacus's own), and :class:`GroupedConvGradSampleModule` is Opacus's ``GradSampleModule``
with that sampler for ``nn.Conv2d`` in its own sampler table: Opacus's global table is left as is.
"""

from __future__ import annotations

import torch
from opacus import GradSampleModule
from opacus.utils.tensor_utils import unfold2d
from torch import nn

__all__ = ["conv2d_grad_sample", "GroupedConvGradSampleModule"]


def conv2d_grad_sample(layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-example gradients of a Conv2d's weight [B, out, in/groups, kh, kw] and bias [B, out].

    Args:
        layer: the convolution (any groups, stride, padding, dilation).
        activations: ``[x]``, the layer's input [B, in, H, W].
        backprops: the loss's gradient with respect to the layer's output [B, out, H', W'].
    """
    x = activations[0].to(backprops.dtype)
    batch, groups = x.shape[0], layer.groups
    grads: dict[nn.Parameter, torch.Tensor] = {}
    if batch == 0:  # an empty Poisson batch: zero gradients of batch 1, as Opacus's own sampler
        grads[layer.weight] = torch.zeros_like(layer.weight).unsqueeze(0)
        if layer.bias is not None and layer.bias.requires_grad:
            grads[layer.bias] = torch.zeros_like(layer.bias).unsqueeze(0)
        return grads
    columns = unfold2d(x, kernel_size=layer.kernel_size, padding=layer.padding, stride=layer.stride,
                       dilation=layer.dilation)  # [B, in x kh x kw, L], input channel major
    positions = columns.shape[-1]
    output = backprops.reshape(batch, groups, -1, positions)  # [B, G, out/G, L]
    if layer.weight.requires_grad:
        columns = columns.view(batch, groups, -1, positions)  # [B, G, in/G x kh x kw, L]
        if output.shape[2] == 1:  # depthwise: one output channel per group, a weighted sum over positions
            weight = torch.einsum("bgl,bgpl->bgp", output[:, :, 0], columns).unsqueeze(2)
        else:
            weight = torch.einsum("bgol,bgpl->bgop", output, columns)
        grads[layer.weight] = weight.reshape(batch, *layer.weight.shape)
    if layer.bias is not None and layer.bias.requires_grad:
        grads[layer.bias] = backprops.reshape(batch, backprops.shape[1], -1).sum(dim=2)
    return grads


class GroupedConvGradSampleModule(GradSampleModule):
    """Opacus's ``GradSampleModule`` whose ``nn.Conv2d`` per-example gradients are
    :func:`conv2d_grad_sample`'s; every other layer keeps Opacus's sampler."""

    GRAD_SAMPLERS = {**GradSampleModule.GRAD_SAMPLERS, nn.Conv2d: conv2d_grad_sample}
