"""Parameter and multiply-add counts.

Convention (everywhere a figure is printed): one multiply-add = one FLOP, i.e. the figures are
MACs (GMACs = 1e9 MACs), the convention of the MobileViT paper, fvcore and the screening paper's
"0.289 GFLOPs". Counted: convolutions, linear layers and every matrix product of the attention,
including the top-k sparse products over gathered keys (N k dh each) and the gradient
generator's X X^T. Not counted: normalisation layers, activations, softmax, additions, pooling,
resizing, top-k selection and gathers (no multiply-adds, or a few per element).

``count_macs`` runs one eval-mode forward without autograd (the path of inference and of the ONNX
export, so the count describes what runs there: LSNet's blocks with one key per query, k = 1,
then skip q, k and the products, 1.9 M multiply-adds at 320x320; a training forward does them)
under ``torch.utils.flop_counter.FlopCounterMode``, which counts
aten conv/mm/addmm/bmm (einsum and batched matmul decompose into these) at 2 FLOPs per
multiply-add, and halves the total. Products over gathered keys are ordinary batched matmuls
there, so they are counted with their true (sparse) size; nothing is counted for the [N, N] that
is never formed. The CPU fused-attention kernel (timm models use scaled_dot_product_attention)
gets an explicit formula, the same as FlopCounterMode's for the GPU kernels. ``count_macs_fvcore`` is the independent cross-check (fvcore traces with
torch.jit and counts matmul/einsum/conv/linear; it counts norms too, which it leaves out unless
``include_norms``; it skips fused scaled_dot_product_attention, so timm models read low there).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_parameters", "count_macs", "count_macs_fvcore", "complexity_report"]

_FVCORE_NORM_OPS = ("batch_norm", "group_norm", "layer_norm", "instance_norm")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _cpu_sdpa_flop(query: torch.Size, key: torch.Size, value: torch.Size, *args, **kwargs) -> int:
    """FLOPs of the CPU fused attention kernel, which FlopCounterMode has no formula for."""
    return sdpa_flop_count(query, key, value)


# Ops without a built-in FlopCounterMode formula: fused attention on the CPU (timm's MobileViT).
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


def _dummy_input(model: nn.Module, input_size: tuple[int, int, int, int]) -> torch.Tensor:
    param = next(model.parameters())
    return torch.zeros(input_size, device=param.device, dtype=param.dtype)


def count_macs(model: nn.Module, input_size: tuple[int, int, int, int]) -> int:
    """Multiply-adds of one eval-mode forward of a [B, C, H, W] zero input (see module doc)."""
    was_training = model.training
    model.eval()
    try:
        with (
            torch.no_grad(),
            FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter,
        ):
            model(_dummy_input(model, input_size))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_macs_fvcore(
    model: nn.Module, input_size: tuple[int, int, int, int], include_norms: bool = False
) -> int:
    """fvcore's multiply-adds (FlopCountAnalysis) for a [B, C, H, W] input; norms excluded by default.

    Requires the optional ``fvcore`` package (a dev dependency).
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)  # skipped ops (topk, gather, softmax) carry no MACs
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, _dummy_input(model, input_size))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            by_op = analysis.by_operator()
    finally:
        fvcore_logger.setLevel(level)
        model.train(was_training)
    return int(sum(v for op, v in by_op.items() if include_norms or op not in _FVCORE_NORM_OPS))


def complexity_report(
    name_or_model: str | nn.Module, input_size: tuple[int, int, int, int]
) -> dict[str, object]:
    """{'model', 'input_size', 'params', 'macs', 'gmacs'} for a registered name or a module."""
    if isinstance(name_or_model, str):
        from ecs_models._registry import create_model

        model, name = create_model(name_or_model), name_or_model
    else:
        model, name = name_or_model, type(name_or_model).__name__
    macs = count_macs(model, input_size)
    return {
        "model": name,
        "input_size": tuple(input_size),
        "params": count_parameters(model),
        "macs": macs,
        "gmacs": macs / 1e9,
    }
