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
from ecs_models.saliency import occlusion_map as _occlusion
from ecs_models.saliency import overlay_rgb

__all__ = ["occlusion_map", "write_overlay"]


def occlusion_map(model: ScreeningModel, image: np.ndarray, patch_fraction: float = 0.25) -> np.ndarray:
    """:func:`ecs_models.saliency.occlusion_map` of one model input ``[R, R]`` in [-1, 1] through the
    bundle; float32 ``[R, R]``, the mean drop of P(invasion) when the pixel is hidden."""
    return _occlusion(model.probabilities, image, patch_fraction)


def write_overlay(path: Path, image: np.ndarray, saliency: np.ndarray) -> Path:
    """PNG of the model input (``[R, R]`` in [-1, 1], gray) with positive saliency in red."""
    from PIL import Image  # only for --heatmap

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(image, saliency), mode="RGB").save(path)
    return path
