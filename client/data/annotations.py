"""Burned-in annotations in ultrasound frames: detection and in-painting.

Scanners burn text (patient/study fields, depth ticks, probe and preset names) and calipers
("+"/"x" marks, dotted measurement lines, "D1 12.3 mm") into the pixels. They are

* **coloured** (yellow/green/cyan calipers, colour Doppler boxes) in a colour image, or
* **thin and near-saturated** (white text, white caliper crosses) in any image.

Colour is judged against the image's own gray map, so a tinted B-mode display (sepia or
blue tint maps, PALETTE COLOR) is not mistaken for annotation: for every luminance level the
typical RGB colour is estimated and a pixel's *colour deviation* is its Chebyshev distance
from that colour. All images here are float32 in [0, 1]; shapes are ``[H, W]`` (one frame)
or ``[H, W, 3]`` (RGB).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["color_deviation", "detect_annotations", "inpaint_background"]

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_N_LUMA_BINS = 32
COLOR_DEVIATION_THRESHOLD = 0.12  # ~30 gray levels away from the image's own tint map
BRIGHT_THRESHOLD = 0.75  # near-saturated glyph pixels (>= ~191/255)
TOPHAT_SIZE_PX = 7  # structures narrower than this stand out in the white top-hat
TOPHAT_CONTRAST = 0.3  # glyph minus its local background


def color_deviation(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel's colour is from the image's gray/tint map.

    The tint map (luminance -> RGB) is the mean colour per luminance bin (twice: the second
    time without the pixels far from the first map); bins holding too few pixels (< 0.5 % of
    the non-black pixels) fall back to a global ratio model ``RGB = c * luminance`` (``c`` fitted over non-black pixels), so a
    small yellow caliper cannot define the colour of "its" brightness level.

    Args:
        rgb: float32 ``[H, W, 3]`` in [0, 1].

    Returns:
        float32 ``[H, W]`` in [0, 1]: Chebyshev distance to the tint map; 0 for pure gray or
        a consistent tint, large for calipers, coloured text and Doppler.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    luma = rgb @ LUMA_WEIGHTS
    lit = luma > 0.02
    ratio = np.ones(3, dtype=np.float32)
    if lit.any():
        ratio = (rgb[lit].sum(axis=0) / max(float(luma[lit].sum()), 1e-6)).astype(np.float32)
    bins = np.clip((luma * _N_LUMA_BINS).astype(np.intp), 0, _N_LUMA_BINS - 1)
    centers = (np.arange(_N_LUMA_BINS, dtype=np.float32) + 0.5) / _N_LUMA_BINS
    min_count = max(20, int(0.005 * lit.sum()))
    keep = np.ones(luma.shape, dtype=bool)
    deviation = np.zeros(luma.shape, dtype=np.float32)
    for _ in range(2):  # the second pass re-estimates the map without the outliers
        counts = np.bincount(bins[keep], minlength=_N_LUMA_BINS)
        table = np.clip(centers[:, None] * ratio, 0.0, 1.0).astype(np.float32)
        enough = counts >= min_count
        for channel in range(3):
            sums = np.bincount(bins[keep], weights=rgb[..., channel][keep], minlength=_N_LUMA_BINS)
            table[enough, channel] = sums[enough] / counts[enough]
        deviation = np.abs(rgb - table[bins]).max(axis=-1).astype(np.float32)
        keep = deviation < COLOR_DEVIATION_THRESHOLD
    return deviation


def detect_annotations(gray: np.ndarray, deviation: np.ndarray | None = None) -> np.ndarray:
    """Mask of burned-in glyph pixels in one frame.

    Args:
        gray: float32 ``[H, W]`` in [0, 1].
        deviation: optional float32 ``[H, W]`` from :func:`color_deviation` (colour images).

    Returns:
        bool ``[H, W]``: coloured pixels and the bright pixels connected to them, plus
        near-saturated pixels of structures thinner than ``TOPHAT_SIZE_PX`` that stand
        ``TOPHAT_CONTRAST`` above their surroundings, dilated by one pixel to catch
        anti-aliased glyph edges.
    """
    gray = np.asarray(gray, dtype=np.float32)
    bright = gray >= BRIGHT_THRESHOLD
    mask = np.zeros(gray.shape, dtype=bool)
    if bright.any():
        background = ndimage.grey_opening(gray, size=(TOPHAT_SIZE_PX, TOPHAT_SIZE_PX))
        mask = bright & ((gray - background) > TOPHAT_CONTRAST)
    if deviation is not None:
        colored = deviation > COLOR_DEVIATION_THRESHOLD
        if colored.any() and bright.any():
            # white cores of colour overlays (power Doppler, filled caliper marks) belong to them
            labels, _ = ndimage.label(bright | colored)
            touching = np.unique(labels[colored])
            mask |= np.isin(labels, touching[touching > 0]) & bright
        mask |= colored
    if mask.any():
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))
    return mask


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a 4x mean-pooled copy (then nearest-upsampled)."""
    if sigma < 8.0 or min(image.shape) < 16:
        return ndimage.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)
    factor = 4
    height, width = image.shape
    padded = np.pad(image, ((0, (-height) % factor), (0, (-width) % factor)), mode="edge")
    pooled = padded.reshape(padded.shape[0] // factor, factor, -1, factor).mean(axis=(1, 3))
    blurred = ndimage.gaussian_filter(pooled, sigma / factor, mode="nearest", truncate=3.0)
    return np.repeat(np.repeat(blurred, factor, axis=0), factor, axis=1)[:height, :width]


def inpaint_background(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace masked pixels by the local mean of the unmasked pixels around them.

    Normalised Gaussian convolution at growing scales (sigma 2, 6, 18, 54 px), so thin glyphs
    take their immediate neighbourhood and large blobs (a Doppler box) a wider one.

    Args:
        image: float32 ``[H, W]``.
        mask: bool ``[H, W]``, True where the pixel must be replaced.

    Returns:
        A new float32 ``[H, W]`` array; unmasked pixels are unchanged.
    """
    image = np.asarray(image, dtype=np.float32)
    out = image.copy()
    if not mask.any():
        return out
    valid = (~mask).astype(np.float32)
    if not valid.any():
        out[:] = 0.0
        return out
    todo = mask.copy()
    weighted = image * valid
    for sigma in (2.0, 6.0, 18.0, 54.0):
        numerator = _smooth(weighted, sigma)
        denominator = _smooth(valid, sigma)
        ready = todo & (denominator > 1e-3)
        out[ready] = numerator[ready] / denominator[ready]
        todo &= ~ready
        if not todo.any():
            break
    if todo.any():
        out[todo] = float(np.median(image[~mask]))
    return out
