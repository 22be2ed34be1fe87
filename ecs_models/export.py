"""ONNX export of registered models (teacher, LSNet with TopK + Gather, timm) and a parity check."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["export_onnx", "check_onnx_parity"]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int, int, int],
    opset: int = 17,
    *,
    dynamo: bool = False,
) -> Path:
    """Export ``model`` (in eval mode, on the CPU) to ``path`` for a fixed input [B, C, H, W].

    Static shapes, one self-contained file (no external data); input ``image`` [B, C, H, W],
    output ``logits`` [B, num_classes]. The model's training mode and device are restored.
    ``dynamo=False`` (default) uses the TorchScript-based exporter: fast (about 1 s for LSNet)
    and fine at opset 17, but deprecated by torch (it says so with a DeprecationWarning).
    ``dynamo=True`` uses the torch.export-based exporter (about 15 s for LSNet); it needs
    ``opset >= 18`` here (onnx's down-converter to 17 fails on these graphs).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = next(model.parameters()).device
    model.eval().cpu()
    try:
        dummy = torch.zeros(input_size)
        with torch.no_grad(), warnings.catch_warnings():
            # Static export: Python-side size arithmetic (padding, k of top-k) is meant to become
            # constants, which is what the tracer warns about.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (dummy,),
                str(path),
                input_names=["image"],
                output_names=["logits"],
                opset_version=opset,
                dynamo=dynamo,
                external_data=False,
            )
    finally:
        model.train(was_training).to(device)
    return path


def check_onnx_parity(
    model: nn.Module, path: str | Path, input: torch.Tensor, atol: float = 1e-4
) -> float:
    """Max abs difference between torch (eval, no_grad) and onnxruntime logits for ``input``.

    Raises ``AssertionError`` when it exceeds ``atol * max(1, max |logit|)`` (float32 rounding
    grows with the logits' scale: a baseline with logits ~5 differs by ~1e-4 for that reason
    alone); returns the difference otherwise.
    """
    import onnxruntime as ort

    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            expected = model(input.to(device)).float().cpu().numpy()
    finally:
        model.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {session.get_inputs()[0].name: input.cpu().numpy()})
    diff = float(np.max(np.abs(actual - expected)))
    limit = atol * max(1.0, float(np.max(np.abs(expected))))
    if diff > limit:
        raise AssertionError(f"ONNX parity {diff:.3g} exceeds {limit:.3g} (atol {atol:.3g} x logit scale) for {path}")
    return diff
