"""Estimate the ultrasound fan (the acquired sector) from the pixels themselves.

Outside the fan a scanner stores black (plus text, scales and logos); inside there is
speckle, even in fluid where it is faint. The estimate:

1. temporal max over the frames, mean-pooled so the longer side is <= 256 px (speckle
   averages into a solid area, thin glyph strokes fade);
2. threshold a little above the background level, a 3x3 opening (detaches thin strokes);
3. a closing (joins speckle), the largest connected component, filled holes;
4. an orthogonal-convexity fill: a pixel is kept if the component has pixels on both its
   left and right *and* above and below it. A sector or annular sector (curved top) is
   preserved, while dark fluid pockets open to the edge of the fan are filled in.

Works on full frames or a region crop; shapes are ``[F, H, W]`` in, ``[H, W]`` bool out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["FanEstimate", "estimate_fan_mask"]

WORK_SIZE_PX = 256
MIN_FAN_FRACTION = 0.05  # a fan covering less of the image is treated as "not found"
SIGNAL_THRESHOLD = 0.03  # above background, in [0, 1] intensity units (~8/255)


@dataclass(frozen=True)
class FanEstimate:
    """``mask``: bool ``[H, W]`` (all True when not found); ``found``; ``fraction`` of image."""

    mask: np.ndarray
    found: bool
    fraction: float


def _pool_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    height, width = image.shape
    pad_h, pad_w = (-height) % factor, (-width) % factor
    padded = np.pad(image, ((0, pad_h), (0, pad_w)), mode="edge")
    return padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).mean(
        axis=(1, 3)
    )


def _largest_component(binary: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(binary)
    if count == 0:
        return binary
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _orthogonal_fill(binary: np.ndarray) -> np.ndarray:
    """Keep pixels that have component pixels left+right and above+below (inclusive)."""
    left = np.maximum.accumulate(binary, axis=1)
    right = np.maximum.accumulate(binary[:, ::-1], axis=1)[:, ::-1]
    top = np.maximum.accumulate(binary, axis=0)
    bottom = np.maximum.accumulate(binary[::-1], axis=0)[::-1]
    return (left & right) & (top & bottom)


def estimate_fan_mask(frames: np.ndarray, threshold: float = SIGNAL_THRESHOLD) -> FanEstimate:
    """Estimate the fan of an ultrasound image.

    Args:
        frames: float32 ``[F, H, W]`` (or ``[H, W]``) in [0, 1], annotations ideally already
            in-painted.
        threshold: intensity above the background level that counts as signal.

    Returns:
        :class:`FanEstimate`; ``mask`` is bool ``[H, W]``.
    """
    frames = np.asarray(frames, dtype=np.float32)
    projection = frames.max(axis=0) if frames.ndim == 3 else frames
    height, width = projection.shape
    factor = max(1, int(np.ceil(max(height, width) / WORK_SIZE_PX)))
    small = _pool_mean(projection, factor)
    background = min(float(np.percentile(small, 1.0)), 0.1)  # black outside the fan
    binary = small > background + threshold
    binary = ndimage.binary_opening(binary, structure=np.ones((3, 3), dtype=bool))
    radius = 3
    padded = np.pad(binary, radius + 1, mode="edge")
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    padded = ndimage.binary_closing(padded, structure=disk)
    binary = padded[radius + 1:-radius - 1, radius + 1:-radius - 1]
    binary = _largest_component(binary)
    binary = ndimage.binary_fill_holes(binary)
    binary = _orthogonal_fill(binary)
    fraction = float(binary.mean()) if binary.size else 0.0
    if fraction < MIN_FAN_FRACTION:
        return FanEstimate(np.ones((height, width), dtype=bool), False, fraction)
    full = np.repeat(np.repeat(binary, factor, axis=0), factor, axis=1)[:height, :width]
    return FanEstimate(np.ascontiguousarray(full), True, float(full.mean()))
