"""Where the model looked: occlusion sensitivity with ONNX Runtime alone, drawn over the image.

A gray square (a ``patch`` of the input side, the input's value for black) slides over the model
input with stride ``patch / 2``; each placement's drop in P(invasion) is spread over the pixels
it covered and averaged. Red marks regions whose hiding lowers the probability (evidence the
model used for invasion). Gradient methods would need the training stack; occlusion needs only
forward passes: (2 / patch fraction - 1)^2 of them per frame (49 at the default 1/4), so a
heatmap costs about fifty model runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clinic.model import ScreeningModel

__all__ = ["occlusion_map", "write_overlay"]


def occlusion_map(model: ScreeningModel, image: np.ndarray, patch_fraction: float = 0.25) -> np.ndarray:
    """Occlusion sensitivity of one model input.

    Args:
        model: the loaded bundle.
        image: float32 ``[R, R]`` in [-1, 1] (one frame of ``Prepared.inputs``).
        patch_fraction: occluding square's side as a share of ``R``.

    Returns:
        float32 ``[R, R]``: mean drop of P(invasion) when the pixel is hidden (can be negative).
    """
    side = image.shape[-1]
    patch = max(2, int(round(side * patch_fraction)))
    stride = max(1, patch // 2)
    base = float(model.probabilities(image[None])[0])
    total = np.zeros((side, side), dtype=np.float64)
    count = np.zeros((side, side), dtype=np.float64)
    starts = list(range(0, max(1, side - patch) + 1, stride))
    if starts[-1] + patch < side:
        starts.append(side - patch)
    for top in starts:
        for left in starts:
            hidden = image.copy()
            hidden[top:top + patch, left:left + patch] = -1.0  # black, as outside the fan
            drop = base - float(model.probabilities(hidden[None])[0])
            total[top:top + patch, left:left + patch] += drop
            count[top:top + patch, left:left + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def write_overlay(path: Path, image: np.ndarray, saliency: np.ndarray) -> Path:
    """PNG of the model input (``[R, R]`` in [-1, 1], gray) with positive saliency in red."""
    from PIL import Image  # only for --heatmap

    gray = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
    peak = float(saliency.max())
    alpha = 0.6 * np.clip(saliency / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(gray)
    rgb = np.stack([gray * (1 - alpha) + alpha, gray * (1 - alpha), gray * (1 - alpha)], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB").save(path)
    return path
