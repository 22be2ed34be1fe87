"""Burned-in annotations in ultrasound frames: detection and in-painting.

Scanners burn text (patient/study fields, depth ticks, probe and preset names) and calipers
("+"/"x" marks, dotted measurement lines, "D1 12.3 mm") into the pixels. A caliper and its label
carry the measurement a model could read instead of the anatomy, so every kind must go:

* **coloured** pixels (yellow/green/cyan calipers, colour Doppler boxes) in a colour image;
* **thin near-saturated** strokes (white text, white caliper crosses) in any image;
* **flat strokes** in any image: a screen draws its graphics in a few exact colours, so a
  caliper stored in grayscale is a thin structure of one exact gray level that stands out from
  the tissue around it (a green caliper becomes mid-gray, invisible to the two tests above).
  Speckle never holds one exact value along a line of several pixels.

Colour is judged against the image's own gray map, so a tinted B-mode display (sepia or
blue tint maps, PALETTE COLOR) is not mistaken for annotation: the typical RGB colour of each
luminance level is estimated robustly and a pixel's *colour deviation* is its Chebyshev
distance from that colour. All images here are float32 in [0, 1]; shapes are ``[H, W]`` (one
frame) or ``[H, W, 3]`` (RGB). docs/shortcut_audit.md measures what survives removal.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from client.data.caliper_marks import detect_caliper_marks

__all__ = ["color_deviation", "detect_annotations", "detect_flat_strokes", "inpaint_background", "local_background"]

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_N_LUMA_BINS = 32
COLOR_DEVIATION_THRESHOLD = 0.12  # ~30 gray levels away from the image's own tint map
BRIGHT_THRESHOLD = 0.75  # near-saturated glyph pixels (>= ~191/255)
TOPHAT_CONTRAST = 0.3  # bright glyph minus its local background (the median of the pixels 3 away)
TOPHAT_MIN_PIXELS = 4  # a glyph stroke or caliper arm; bright speckle spots are smaller
FLAT_STROKE_CONTRAST = 0.06  # ~15 gray levels from the local median: below, a stroke is barely visible
FLAT_STROKE_MIN_PIXELS = 5  # the smallest caliper mark or glyph; speckle rarely repeats one level this often
FLAT_STROKE_RUN_PIXELS = 5  # a straight run of one level this long is drawn, not speckle
FLAT_STROKE_GROWTH_STEPS = 3  # reach the glyphs of a label that sit on tissue of their own brightness
DENSE_BIN_SHARE = 0.02  # a luminance bin defines its own tint colour only above this share of lit pixels


def _tint_exponents(centers: np.ndarray, table: np.ndarray, counts: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Per-channel ``e`` of the power law ``channel = luminance ** e`` that best fits the dense bins.

    Weighted least squares in log-log through (1, 1); a gray map gives ``e = 1``. Without two
    usable dense bins the map is taken as gray.
    """
    usable = dense & (centers > 0.05) & (centers < 0.95) & np.all(table > 1e-3, axis=1)
    if usable.sum() < 2:
        return np.ones(3, dtype=np.float32)
    log_luma = np.log(centers[usable])[:, None]
    weights = counts[usable][:, None].astype(np.float64)
    exponents = (weights * log_luma * np.log(table[usable])).sum(0) / (weights * log_luma**2).sum(0)
    return np.clip(exponents, 0.25, 4.0).astype(np.float32)


def color_deviation(rgb: np.ndarray) -> np.ndarray:
    """How far each pixel's colour is from the image's gray/tint map.

    The tint map (luminance -> RGB) is the mean colour of each luminance bin, estimated twice
    (the second time without the pixels far from the first map). Only bins holding at least
    :data:`DENSE_BIN_SHARE` of the lit pixels are trusted; the others take a per-channel power
    law fitted to the trusted ones. A caliper's few hundred pixels can therefore never define
    the colour of "their" brightness level, even in a dark image where no tissue shares it,
    and a tint map's curvature (sepia, blue) is followed where tissue is sparse.

    Args:
        rgb: float32 ``[H, W, 3]`` in [0, 1].

    Returns:
        float32 ``[H, W]`` in [0, 1]: Chebyshev distance to the tint map; 0 for pure gray or
        a consistent tint, large for calipers, coloured text and Doppler.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    luma = rgb @ LUMA_WEIGHTS
    lit = luma > 0.02
    bins = np.clip((luma * _N_LUMA_BINS).astype(np.intp), 0, _N_LUMA_BINS - 1)
    centers = (np.arange(_N_LUMA_BINS, dtype=np.float32) + 0.5) / _N_LUMA_BINS
    min_count = max(20, int(DENSE_BIN_SHARE * lit.sum()))
    keep = lit.copy()
    deviation = np.zeros(luma.shape, dtype=np.float32)
    for _ in range(2):  # the second pass re-estimates the map without the outliers
        counts = np.bincount(bins[keep], minlength=_N_LUMA_BINS)
        dense = counts >= min_count
        table = np.repeat(centers[:, None], 3, axis=1)
        for channel in range(3):
            sums = np.bincount(bins[keep], weights=rgb[..., channel][keep], minlength=_N_LUMA_BINS)
            table[dense, channel] = sums[dense] / counts[dense]
        fitted = centers[:, None] ** _tint_exponents(centers, table, counts, dense)[None, :]
        table[~dense] = fitted[~dense]
        deviation = np.abs(rgb - table[bins]).max(axis=-1).astype(np.float32)
        keep = lit & (deviation < COLOR_DEVIATION_THRESHOLD)
    return deviation


def _pair_slices(shape: tuple[int, int], dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices ``(a, b)`` such that ``x[a]`` and ``x[b]`` pair every pixel with its ``(dy, dx)`` neighbour."""
    height, width = shape
    rows_a, rows_b = slice(0, height - dy), slice(dy, height)
    cols_a, cols_b = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
    return (rows_a, cols_a), (rows_b, cols_b)


_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))  # half of the 8-neighbourhood: each pair once
# Half of the 7x7 neighbourhood: links the 2-pixel dots of a dotted caliper line (2-pixel gaps).
_STROKE_LINKS = tuple((dy, dx) for dy in range(0, 4) for dx in range(-3, 4) if (dy, dx) > (0, 0))
# The local background of a stroke: the median of the pixels 3 away (a 7x7 square's border), which
# lie beside a 1-pixel stroke and mostly outside a glyph even at its interior.
_BACKGROUND_RING = np.pad(np.zeros((5, 5), dtype=bool), 1, constant_values=True)


def _equal_neighbour_counts(level: np.ndarray) -> np.ndarray:
    """int8 ``[H, W]``: how many 8-neighbours hold exactly the pixel's level."""
    counts = np.zeros(level.shape, dtype=np.int8)
    for dy, dx in _NEIGHBOURS:
        a, b = _pair_slices(level.shape, dy, dx)
        equal = level[a] == level[b]
        counts[a] += equal
        counts[b] += equal
    return counts


def _straight_runs(level: np.ndarray, length: int) -> np.ndarray:
    """bool ``[H, W]``: pixels on a horizontal, vertical or diagonal run of ``length`` equal levels."""
    on_run = np.zeros(level.shape, dtype=bool)
    for dy, dx in _NEIGHBOURS:
        a, b = _pair_slices(level.shape, dy, dx)
        equal_next = np.zeros(level.shape, dtype=bool)  # level[p] == level[p + (dy, dx)]
        equal_next[a] = level[a] == level[b]
        starts = equal_next.copy()
        for step in range(1, length - 1):
            a, b = _pair_slices(level.shape, step * dy, step * dx)
            shifted = np.zeros(level.shape, dtype=bool)
            shifted[a] = equal_next[b]
            starts &= shifted
        for step in range(length):
            a, b = _pair_slices(level.shape, step * dy, step * dx)
            on_run[b] |= starts[a]
    return on_run


def _contrast_strokes(level: np.ndarray, candidate: np.ndarray, brighter: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: candidates in groups of one level and polarity (links up to 3 pixels apart)
    of at least :data:`FLAT_STROKE_MIN_PIXELS`."""
    n_candidates = int(candidate.sum())
    strokes = np.zeros(level.shape, dtype=bool)
    if n_candidates == 0:
        return strokes
    index = np.full(level.shape, -1, dtype=np.int64)
    index[candidate] = np.arange(n_candidates)
    sources, targets = [], []
    for dy, dx in _STROKE_LINKS:
        a, b = _pair_slices(level.shape, dy, dx)
        link = candidate[a] & candidate[b] & (level[a] == level[b]) & (brighter[a] == brighter[b])
        sources.append(index[a][link])
        targets.append(index[b][link])
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    graph = coo_matrix((np.ones(sources.size, dtype=np.int8), (sources, targets)), shape=(n_candidates, n_candidates))
    _, group_of = connected_components(graph, directed=False)
    strokes[candidate] = np.bincount(group_of)[group_of] >= FLAT_STROKE_MIN_PIXELS
    return strokes


def _grow_same_level(strokes: np.ndarray, level: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Grow ``strokes`` into ``allowed`` pixels of the same level up to 3 pixels away, at most
    :data:`FLAT_STROKE_GROWTH_STEPS` times."""
    for _ in range(FLAT_STROKE_GROWTH_STEPS):
        grown = strokes.copy()
        for dy, dx in _STROKE_LINKS:
            a, b = _pair_slices(level.shape, dy, dx)
            equal = level[a] == level[b]
            grown[b] |= strokes[a] & equal & allowed[b]
            grown[a] |= strokes[b] & equal & allowed[a]
        if np.array_equal(grown, strokes):
            break
        strokes = grown
    return strokes


def local_background(gray: np.ndarray) -> np.ndarray:
    """float32 ``[H, W]``: the median of the pixels 3 away from each pixel (a 7x7 square's border)."""
    return ndimage.median_filter(np.asarray(gray, dtype=np.float32), footprint=_BACKGROUND_RING, mode="nearest")


def detect_flat_strokes(gray: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Mask of thin structures drawn in one exact gray level (8-bit) over the tissue.

    Seeds are (a) groups of at least :data:`FLAT_STROKE_MIN_PIXELS` pixels of one level and one
    polarity, each with an equal 8-neighbour and at least :data:`FLAT_STROKE_CONTRAST` away from
    its background (the median of the pixels 3 away), linked up to 3 pixels apart so that a
    dotted line is one group; and (b) straight runs of :data:`FLAT_STROKE_RUN_PIXELS` equal
    pixels (glyph bars and caliper arms, also where the tissue has the stroke's own brightness).
    Seeds grow into pixels of their level up to 3 pixels away that have an equal 8-neighbour
    themselves (glyph interiors, the glyphs of a label). Near-black pixels (outside the fan,
    fluid) and saturated ones (255: clipped tissue) are never part of a stroke.

    Args:
        gray: float32 ``[H, W]`` in [0, 1].
        background: :func:`local_background` of ``gray`` when the caller has it already.

    Returns:
        bool ``[H, W]``.
    """
    gray = np.asarray(gray, dtype=np.float32)
    level = np.rint(gray * 255.0).astype(np.int16)
    # not saturated either: a scanner clips bright tissue to 255, which makes runs of one level
    # (white strokes are the near-saturated detector's, in detect_annotations)
    paired = (_equal_neighbour_counts(level) > 0) & (gray > 0.02) & (level < 255)
    contrast = gray - (local_background(gray) if background is None else background)
    candidate = paired & (np.abs(contrast) >= FLAT_STROKE_CONTRAST)
    seeds = _contrast_strokes(level, candidate, contrast > 0)
    seeds |= _straight_runs(level, FLAT_STROKE_RUN_PIXELS) & paired
    return _grow_same_level(seeds, level, paired)


def _without_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` less its 8-connected components of fewer than ``min_pixels`` pixels."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return mask & (np.bincount(labels.ravel())[labels] >= min_pixels)


def detect_annotations(gray: np.ndarray, deviation: np.ndarray | None = None) -> np.ndarray:
    """Mask of burned-in glyph pixels in one frame.

    Args:
        gray: float32 ``[H, W]`` in [0, 1].
        deviation: optional float32 ``[H, W]`` from :func:`color_deviation` (colour images).

    Returns:
        bool ``[H, W]``: coloured pixels and the bright pixels connected to them, and
        near-saturated pixels that stand ``TOPHAT_CONTRAST`` above their background (the median
        of the pixels 3 away; groups of ``TOPHAT_MIN_PIXELS``), dilated by one pixel to catch anti-aliased
        and compressed glyph edges; plus flat strokes (:func:`detect_flat_strokes`) and calipers
        found by their shape (:func:`client.data.caliper_marks.detect_caliper_marks`: crosses,
        dotted lines and labels whose level a lossy file has blurred).
    """
    gray = np.asarray(gray, dtype=np.float32)
    bright = gray >= BRIGHT_THRESHOLD
    mask = np.zeros(gray.shape, dtype=bool)
    # A median background, not a grey opening: the opening follows speckle minima, so every
    # speckle peak of a bright interface beside fluid stood out as a "glyph".
    background = local_background(gray)
    if bright.any():
        mask |= _without_small_components(bright & ((gray - background) > TOPHAT_CONTRAST), TOPHAT_MIN_PIXELS)
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
    # exact levels: no anti-aliased edge to catch; the marks' own mask is dilated (lossy edges)
    return mask | detect_flat_strokes(gray, background) | detect_caliper_marks(gray, background)


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
