"""Occlusion sensitivity: where a classifier looked, from forward passes alone (numpy).

A gray square (a ``patch`` of the input side, the input's value for black) slides over the model
input with stride ``patch / 2``; each placement's drop in P(invasion) is spread over the pixels
it covered and averaged: (2 / patch fraction - 1)^2 forward passes per frame (49 at the default
1/4). Any scorer works (ONNX Runtime in ``clinic``, the run report in ``simulations.report``),
so there is one implementation for the clinic's heatmaps and the reports' saliency.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["occlusion_map", "overlay_rgb"]


def occlusion_map(probabilities: Callable[[np.ndarray], np.ndarray], image: np.ndarray, patch_fraction: float = 0.25) -> np.ndarray:
    """Occlusion sensitivity of one model input.

    Args:
        probabilities: P(invasion) of inputs ``[N, R, R]`` -> ``[N]`` (e.g. ``ScreeningModel.probabilities``).
        image: float32 ``[R, R]`` in [-1, 1] (one frame of ``Prepared.inputs``).
        patch_fraction: occluding square's side as a share of ``R``.

    Returns:
        float32 ``[R, R]``: mean drop of P(invasion) when the pixel is hidden (can be negative).
    """
    side = image.shape[-1]
    patch = max(2, int(round(side * patch_fraction)))
    stride = max(1, patch // 2)
    base = float(probabilities(image[None])[0])
    total = np.zeros((side, side), dtype=np.float64)
    count = np.zeros((side, side), dtype=np.float64)
    starts = list(range(0, max(1, side - patch) + 1, stride))
    if starts[-1] + patch < side:
        starts.append(side - patch)
    for top in starts:
        for left in starts:
            hidden = image.copy()
            hidden[top:top + patch, left:left + patch] = -1.0  # black, as outside the fan
            drop = base - float(probabilities(hidden[None])[0])
            total[top:top + patch, left:left + patch] += drop
            count[top:top + patch, left:left + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def overlay_rgb(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """The model input ``[R, R]`` in [-1, 1] in gray with positive ``saliency`` ``[R, R]`` in red
    (opacity up to 0.6 at its peak): uint8 ``[R, R, 3]``."""
    gray = np.clip((image + 1.0) / 2.0, 0.0, 1.0)
    peak = float(saliency.max())
    alpha = 0.6 * np.clip(saliency / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(gray)
    rgb = np.stack([gray * (1 - alpha) + alpha, gray * (1 - alpha), gray * (1 - alpha)], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)
