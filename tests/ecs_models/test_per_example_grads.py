"""The grouped-convolution per-example gradients that DP-SGD clips (ecs_models.training.per_example_grads).

That they are each example's own through the whole distillation model is tested in test_dp_sgd.py."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from ecs_models.training.per_example_grads import GroupedConvGradSampleModule


def _grad_samples(module_class: type, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    wrapped = module_class(model, batch_first=True, loss_reduction="sum", strict=True)
    wrapped(x).square().sum().backward()
    samples = {name: p.grad_sample.clone() for name, p in model.named_parameters()}
    wrapped.to_standard_module()
    for p in model.parameters():
        p.grad, p.grad_sample = None, None
    return samples


@pytest.mark.parametrize(("groups", "channels_in", "channels_out", "kernel", "stride", "padding", "dilation"), [
    (1, 4, 6, 3, 1, 1, 1),  # dense
    (4, 8, 8, 3, 2, 1, 1),  # grouped, strided
    (8, 8, 16, 3, 1, 2, 2),  # two outputs per group, dilated
    (16, 16, 16, 3, 1, 1, 1),  # depthwise (MobileViT's inverted residuals)
    (2, 4, 6, 1, 1, 0, 1),  # grouped 1x1
])
def test_conv_per_example_gradients_equal_opacus_own(groups: int, channels_in: int, channels_out: int, kernel: int,
                                                     stride: int, padding: int, dilation: int) -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=padding,
                                   dilation=dilation, groups=groups))
    x = torch.randn(5, channels_in, 11, 13, requires_grad=True)
    ours, opacus_own = _grad_samples(GroupedConvGradSampleModule, conv, x), _grad_samples(GradSampleModule, conv, x)
    for name in opacus_own:
        assert ours[name].shape == opacus_own[name].shape == (5, *dict(conv.named_parameters())[name].shape)
        torch.testing.assert_close(ours[name], opacus_own[name], rtol=1e-4, atol=1e-5)


def test_the_opacus_global_sampler_table_is_left_as_is() -> None:
    assert GradSampleModule.GRAD_SAMPLERS[nn.Conv2d] is not GroupedConvGradSampleModule.GRAD_SAMPLERS[nn.Conv2d]
