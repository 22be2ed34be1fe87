"""Turn decoded frames into model input: crop, fan mask, annotation removal, resampling.

Ultrasound (in this order): crop to the chosen tissue region; in-paint burned-in glyphs
(coloured pixels and thin near-saturated strokes) with the local background; zero pixels
outside the estimated fan; resample to an isotropic physical pixel size when the spacing is
known; cut the square field of view (:func:`square_window`) and resize. MR: resample and
letterbox only (intensities are already normalised by :mod:`client.data.decode`).

Field of view (``field_of_view``): a transvaginal fan is about twice as wide as it is deep, so
letterboxing the whole fan (``"fan"``) spends half of the square on black and shrinks the
uterus. ``"apex"`` (default) keeps the square under the probe instead: side = the image's depth,
centred on the fan's axis. The uterus lies in the near field under the probe, so only lateral
fan edges are cut; anatomy is drawn at twice the pixel size for the same output side.

The settings (:class:`PreprocessConfig`, :data:`PIPELINE_VERSION`) live in
:mod:`ecs_models.preprocessing`, re-exported here: the exported model bundle records them.

Arrays are float32 in [0, 1]; ``[F, H, W]`` in, ``[F, S, S]`` out (``S = output_size``) or
``[F, H', W']`` when ``output_size`` is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from client.data.annotations import detect_annotations, inpaint_background
from client.data.decode import DecodedImage
from client.data.fan import estimate_fan_mask
from ecs_models.preprocessing import FIELDS_OF_VIEW, PIPELINE_VERSION, PreprocessConfig

__all__ = ["FIELDS_OF_VIEW", "PIPELINE_VERSION", "PreprocessConfig", "PreprocessResult", "preprocess", "preprocess_detailed",
           "square_window"]


@dataclass(frozen=True)
class PreprocessResult:
    """``image``: float32 ``[F, S, S]``; what the pipeline found on the way."""

    image: np.ndarray
    fan_found: bool | None  # None when no fan was looked for
    annotation_fraction: float  # share of (cropped) pixels in-painted, mean over frames
    spacing_mm: tuple[float, float] | None  # pixel size of ``image`` in mm when known


def _resample(frames: np.ndarray, zoom_rows: float, zoom_cols: float) -> np.ndarray:
    """Bilinear zoom of every frame, Gaussian pre-filter when shrinking (anti-aliasing)."""
    if abs(zoom_rows - 1.0) < 1e-6 and abs(zoom_cols - 1.0) < 1e-6:
        return frames
    sigma = (0.0, max(0.0, (1.0 / zoom_rows - 1.0) / 2.0), max(0.0, (1.0 / zoom_cols - 1.0) / 2.0))
    if sigma[1] > 0 or sigma[2] > 0:
        frames = ndimage.gaussian_filter(frames, sigma=sigma, mode="nearest")
    out_rows = max(1, round(frames.shape[1] * zoom_rows))
    out_cols = max(1, round(frames.shape[2] * zoom_cols))
    zoom = (1.0, out_rows / frames.shape[1], out_cols / frames.shape[2])
    return ndimage.zoom(frames, zoom, order=1, prefilter=False, mode="nearest", grid_mode=True)


def square_window(height: float, width: float, field_of_view: str = "fan") -> tuple[float, float, float]:
    """The square cut from a ``height x width`` image: ``(top, left, side)``, same units.

    ``"fan"``: the centred square that holds the whole image (letterbox; negative offsets are
    zero padding). ``"apex"``: for an image wider than deep, the ``height x height`` square
    centred horizontally (a fan's apex is on its bounding box's vertical centre line); otherwise
    as ``"fan"``. Offsets are exact halves; pixel callers truncate them with ``int``.
    """
    if field_of_view == "apex" and width > height:
        return 0.0, (width - height) / 2, height
    side = max(height, width)
    return -(side - height) / 2, -(side - width) / 2, side


def _to_square(frames: np.ndarray, size: int, field_of_view: str) -> tuple[np.ndarray, float]:
    """Cut the :func:`square_window` (zero padded), resize to ``size``; returns (frames, zoom)."""
    _, height, width = frames.shape
    top, left, side = (int(v) for v in square_window(height, width, field_of_view))
    square = np.zeros((frames.shape[0], side, side), dtype=np.float32)
    rows = slice(max(0, top), min(height, top + side))
    cols = slice(max(0, left), min(width, left + side))
    square[:, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = frames[:, rows, cols]
    zoom = size / side
    out = _resample(square, zoom, zoom)
    if out.shape[1:] != (size, size):  # rounding guard
        fixed = np.zeros((out.shape[0], size, size), dtype=np.float32)
        fixed[:, : min(size, out.shape[1]), : min(size, out.shape[2])] = out[:, :size, :size]
        out = fixed
    return out, zoom


def _clean_ultrasound(
    frames: np.ndarray, deviation: np.ndarray | None, cfg: PreprocessConfig
) -> tuple[np.ndarray, bool | None, float]:
    annotation_fraction = 0.0
    if cfg.remove_annotations:
        cleaned = np.empty_like(frames)
        fractions = []
        for index, frame in enumerate(frames):
            mask = detect_annotations(frame, None if deviation is None else deviation[index])
            fractions.append(float(mask.mean()))
            cleaned[index] = inpaint_background(frame, mask)
        frames, annotation_fraction = cleaned, float(np.mean(fractions))
    fan_found: bool | None = None
    if cfg.mask_fan:
        fan = estimate_fan_mask(frames)
        fan_found = fan.found
        if fan.found:
            frames = frames * fan.mask[None]
    return frames, fan_found, annotation_fraction


def preprocess_detailed(decoded: DecodedImage, cfg: PreprocessConfig) -> PreprocessResult:
    """Run the pipeline on a decoded image; see the module docstring for the steps.

    Args:
        decoded: from :func:`client.data.decode.decode_dicom` (its frame policy should match
            ``cfg``; the frames given are the frames processed).
        cfg: the settings.

    Returns:
        :class:`PreprocessResult` with ``image`` float32 ``[F, S, S]`` in [0, 1].
    """
    frames = decoded.frames.astype(np.float32, copy=False)
    deviation = decoded.color_deviation
    spacing = decoded.spacing_mm
    fan_found: bool | None = None
    annotation_fraction = 0.0
    if decoded.modality == "US":
        if cfg.crop_to_region and decoded.region is not None:
            x0, y0, x1, y1 = decoded.region
            frames = frames[:, y0:y1 + 1, x0:x1 + 1]
            deviation = None if deviation is None else deviation[:, y0:y1 + 1, x0:x1 + 1]
        frames, fan_found, annotation_fraction = _clean_ultrasound(frames, deviation, cfg)
    if cfg.target_spacing_mm is not None and spacing is not None:
        frames = _resample(frames, spacing[0] / cfg.target_spacing_mm, spacing[1] / cfg.target_spacing_mm)
        spacing = (cfg.target_spacing_mm, cfg.target_spacing_mm)
    if cfg.output_size is not None:
        fov = cfg.field_of_view if decoded.modality == "US" else "fan"
        frames, zoom = _to_square(frames, cfg.output_size, fov)
        if spacing is not None:
            spacing = (spacing[0] / zoom, spacing[1] / zoom)
    image = np.clip(np.ascontiguousarray(frames, dtype=np.float32), 0.0, 1.0)
    return PreprocessResult(image, fan_found, annotation_fraction, spacing)


def preprocess(decoded: DecodedImage, cfg: PreprocessConfig) -> np.ndarray:
    """Model-ready frames, float32 ``[F, S, S]`` (``[F, H, W]`` if ``output_size`` is None)."""
    return preprocess_detailed(decoded, cfg).image
