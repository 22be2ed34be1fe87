"""Decode one DICOM file into grayscale float frames.

``decode_dicom(path)`` reads the file once (``dcmread(force=True)``), picks the frames named
by the frame policy, decodes only those where the transfer syntax allows it, converts every
photometric interpretation to luminance and normalises intensities to [0, 1]:

* US and other 8-bit data: fixed scaling by the stored bit depth (8-bit -> /255), colour
  (RGB, YBR_* -- converted to RGB by pydicom --, PALETTE COLOR via its LUT, 8 or 16 bit)
  -> ``0.299 R + 0.587 G + 0.114 B``. MONOCHROME1 is inverted.
* MR (and non-US data stored with more than 8 bits): robust 0.5 / 99.5 percentile window
  over the selected frames.

Every failure is a :class:`DicomDecodeError` with a short human reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import UID

from client.data.annotations import LUMA_WEIGHTS, color_deviation
from client.data.regions import (
    mr_pixel_spacing_mm,
    read_ultrasound_regions,
    select_tissue_region,
)
from ecs_models.preprocessing import FRAME_POLICIES

__all__ = [
    "FRAME_POLICIES",
    "DicomDecodeError",
    "DecodedImage",
    "decode_dataset",
    "decode_dicom",
    "read_dataset",
    "select_frame_indices",
]

MR_PERCENTILES = (0.5, 99.5)
_DICOM_MARKERS = ("SOPClassUID", "Modality", "Rows", "PixelData", "StudyInstanceUID")


class DicomDecodeError(Exception):
    """A file that cannot be turned into an image; ``reason`` is short and human."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """The selected frames of one DICOM image, grayscale and normalised.

    Attributes:
        frames: float32 ``[F, H, W]`` in [0, 1] (full image, not cropped).
        color_deviation: float32 ``[F, H, W]`` distance of each pixel's colour from the
            image's gray/tint map (see :mod:`client.data.annotations`); None for monochrome.
        frame_indices: 0-based indices of ``frames`` in the file's frame order.
        n_frames_total: frames stored in the file.
        rows, cols: image size in pixels (H, W).
        spacing_mm: ``(row, col)`` pixel size in mm, or None when unknown.
        region: chosen US tissue region ``(x0, y0, x1, y1)``, inclusive pixels, or None.
        notes: non-fatal findings (pydicom warnings, several regions, ...).
    """

    frames: np.ndarray
    color_deviation: np.ndarray | None
    frame_indices: tuple[int, ...]
    n_frames_total: int
    rows: int
    cols: int
    modality: str
    photometric: str
    transfer_syntax: str
    samples_per_pixel: int
    bits_stored: int
    spacing_mm: tuple[float, float] | None
    region: tuple[int, int, int, int] | None
    region_candidates: int = 0
    notes: tuple[str, ...] = field(default=())


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message).split("\n")[0][:160] for w in caught]


def read_dataset(source: str | Path | bytes) -> tuple[Dataset, list[str]]:
    """Parse a DICOM file (path or its bytes) with ``force=True``.

    Returns:
        ``(dataset, notes)`` where notes are the pydicom warnings raised while parsing.

    Raises:
        DicomDecodeError: "file not found", "not a DICOM file", "truncated file", ...
    """
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise DicomDecodeError("file not found") from None
        except OSError as exc:
            raise DicomDecodeError(f"unreadable file ({exc.strerror or exc})") from None
    if not data:
        raise DicomDecodeError("not a DICOM file (empty)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = dcmread(io.BytesIO(data), force=True)
        except EOFError:
            raise DicomDecodeError("truncated file") from None
        except Exception as exc:  # pydicom raises many types on garbage input
            has_preamble = len(data) > 132 and data[128:132] == b"DICM"
            if has_preamble:
                raise DicomDecodeError(f"corrupt DICOM header ({type(exc).__name__})") from None
            raise DicomDecodeError("not a DICOM file") from None
    notes = _warning_notes(caught)
    has_meta = bool(getattr(ds, "file_meta", None)) and "TransferSyntaxUID" in ds.file_meta
    if not has_meta and not any(marker in ds for marker in _DICOM_MARKERS):
        raise DicomDecodeError("not a DICOM file")
    if any("End of file" in note or "truncat" in note.lower() for note in notes):
        notes.append("file ends early")
    return ds, notes


def _get(ds: Dataset, keyword: str, default: object = None) -> object:
    """Element value, tolerating values pydicom cannot convert (returns ``default``)."""
    try:
        value = ds.get(keyword, default)
    except (ValueError, TypeError, KeyError):
        return default
    return default if value is None or value == "" else value


def _as_int(value: object, default: int) -> int:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return default


def _frame_count(ds: Dataset, transfer_syntax: str, notes: list[str]) -> int:
    """Frames stored, from NumberOfFrames (IS); invalid values fall back to the data size."""
    raw = _get(ds, "NumberOfFrames")
    if raw is None:
        return 1
    count = _as_int(raw, -1)
    if count >= 1:
        return count
    notes.append(f"invalid NumberOfFrames {str(raw)[:16]!r}")
    rows, cols = _as_int(_get(ds, "Rows"), 0), _as_int(_get(ds, "Columns"), 0)
    samples = _as_int(_get(ds, "SamplesPerPixel", 1), 1)
    bits = _as_int(_get(ds, "BitsAllocated", 8), 8)
    frame_bytes = rows * cols * samples * max(1, bits // 8)
    count = 1
    if not UID(transfer_syntax).is_compressed and frame_bytes:
        stored = len(ds.get("PixelData", b"") or b"")
        count = max(1, stored // frame_bytes)
    ds.NumberOfFrames = count  # the in-memory copy only: pydicom's decoders read it too
    return count


def select_frame_indices(n_frames: int, policy: str = "middle", stride: int = 1) -> list[int]:
    """0-based frame indices to decode.

    ``middle`` -> ``[n // 2]``; ``all`` -> every frame; ``stride`` -> every ``stride``-th
    frame starting at 0.
    """
    if policy not in FRAME_POLICIES:
        raise ValueError(f"frame policy {policy!r} not in {FRAME_POLICIES}")
    if n_frames < 1:
        return []
    if policy == "middle":
        return [n_frames // 2]
    if policy == "all":
        return list(range(n_frames))
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    return list(range(0, n_frames, stride))


def _explain(exc: Exception, transfer_syntax: str) -> str:
    text = str(exc)
    lowered = text.lower()
    if "less than expected" in lowered or "end of" in lowered or "truncat" in lowered:
        return "truncated pixel data"
    if "no pixel data" in lowered or "no 'pixel data'" in lowered:
        return "no pixel data"
    if "unable to decode" in lowered or "no pixel data decoders" in lowered or (
        "not supported" in lowered
    ):
        return f"unsupported transfer syntax {transfer_syntax}"
    return f"pixel data decode failed ({type(exc).__name__}: {text.splitlines()[0][:120] if text else ''})"


def _decode_raw(ds: Dataset, indices: list[int], n_frames: int, transfer_syntax: str,
                notes: list[str]) -> np.ndarray:
    """Decoded pixel values, shape ``[F, H, W]`` or ``[F, H, W, 3]`` (RGB)."""
    if "PixelData" not in ds:
        if any("end of file" in note.lower() for note in notes):
            raise DicomDecodeError("truncated pixel data")
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise DicomDecodeError("float pixel data is not an image this loader accepts")
        raise DicomDecodeError("no pixel data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if n_frames == 1:
                arrays = [pixel_array(ds)]
            elif len(indices) == n_frames:
                arrays = list(pixel_array(ds))
            else:
                arrays = [pixel_array(ds, index=i) for i in indices]
        except DicomDecodeError:
            raise
        except (NotImplementedError, RuntimeError) as exc:
            if "decod" in str(exc).lower() and "plugin" in str(exc).lower():
                raise DicomDecodeError(f"unsupported transfer syntax {transfer_syntax}") from None
            raise DicomDecodeError(_explain(exc, transfer_syntax)) from None
        except Exception as exc:  # decoders raise ValueError, KeyError, IndexError, ...
            raise DicomDecodeError(_explain(exc, transfer_syntax)) from None
    notes.extend(_warning_notes(caught))
    return np.stack(arrays)


def _palette_to_rgb(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """PALETTE COLOR indices -> float32 RGB in [0, 1] (8- or 16-bit, segmented LUTs too)."""
    try:
        rgb = apply_color_lut(raw, ds)
    except Exception as exc:
        raise DicomDecodeError(f"invalid palette colour lookup table ({type(exc).__name__})") from None
    descriptor = _get(ds, "RedPaletteColorLookupTableDescriptor", [0, 0, 8])
    entry_bits = _as_int(descriptor[2] if isinstance(descriptor, list | tuple) else 8, 8)
    scale = 65535.0 if entry_bits > 8 or rgb.dtype.itemsize > 1 else 255.0
    if scale > 255.0 and rgb.max() <= 255:  # 8-bit entries stored in 16-bit words (seen in the wild)
        scale = 255.0
    return rgb.astype(np.float32) / scale


def _scale_fixed(raw: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Map the stored value range of ``bits_stored`` bits to [0, 1]."""
    levels = float(2**bits_stored - 1)
    values = raw.astype(np.float32)
    if signed:
        values += float(2 ** (bits_stored - 1))
    return np.clip(values / levels, 0.0, 1.0)


def _scale_percentile(raw: np.ndarray) -> np.ndarray:
    """Robust window: 0.5th -> 0, 99.5th percentile -> 1 over all selected frames."""
    values = raw.astype(np.float32)
    low, high = np.percentile(values, MR_PERCENTILES)
    if not high > low:
        low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def decode_dataset(
    ds: Dataset, *, frame_policy: str = "middle", frame_stride: int = 1,
    notes: list[str] | None = None,
) -> DecodedImage:
    """Decode an already parsed dataset (it may be modified); see :func:`decode_dicom`.

    ``notes`` (e.g. from :func:`read_dataset`) are carried into the result; pydicom warnings
    raised while decoding are added to them instead of being printed.
    """
    notes = list(notes or [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _decode_dataset(ds, frame_policy, frame_stride, notes)
        finally:
            notes.extend(_warning_notes(caught))


def _decode_dataset(ds: Dataset, frame_policy: str, frame_stride: int,
                    notes: list[str]) -> DecodedImage:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not transfer_syntax:
        transfer_syntax = "1.2.840.10008.1.2"  # pydicom guessed the encoding; report the default
    modality = str(_get(ds, "Modality", "")).strip().upper()
    photometric = str(_get(ds, "PhotometricInterpretation", "")).strip().upper()
    rows, cols = _as_int(_get(ds, "Rows"), 0), _as_int(_get(ds, "Columns"), 0)
    samples = _as_int(_get(ds, "SamplesPerPixel", 1), 1)
    bits_allocated = _as_int(_get(ds, "BitsAllocated", 8), 8)
    bits_stored = _as_int(_get(ds, "BitsStored", bits_allocated), bits_allocated)
    signed = _as_int(_get(ds, "PixelRepresentation", 0), 0) == 1
    if "PixelData" in ds and (rows < 1 or cols < 1):
        raise DicomDecodeError("missing or invalid Rows/Columns")
    n_frames = _frame_count(ds, transfer_syntax, notes) if "PixelData" in ds else 1
    indices = select_frame_indices(n_frames, frame_policy, frame_stride)
    raw = _decode_raw(ds, indices, n_frames, transfer_syntax, notes)

    deviation: np.ndarray | None = None
    if photometric == "PALETTE COLOR" and raw.ndim == 3:
        rgb = _palette_to_rgb(raw, ds)
    elif raw.ndim == 4:  # RGB after pydicom's YBR -> RGB conversion
        if raw.shape[-1] != 3:
            raise DicomDecodeError(f"unsupported samples per pixel {raw.shape[-1]}")
        rgb = _scale_fixed(raw, bits_stored if raw.dtype.itemsize > 1 else 8, False)
    else:
        rgb = None
    if rgb is not None:
        frames = np.ascontiguousarray(rgb @ LUMA_WEIGHTS, dtype=np.float32)
        deviation = np.stack([color_deviation(frame) for frame in rgb]).astype(np.float32)
    elif raw.ndim == 3:
        is_mr_like = modality == "MR" or (modality != "US" and bits_stored > 8)
        frames = _scale_percentile(raw) if is_mr_like else _scale_fixed(raw, bits_stored, signed)
        if photometric == "MONOCHROME1":
            frames = 1.0 - frames
    else:
        raise DicomDecodeError(f"unexpected decoded pixel shape {raw.shape}")
    frames = np.nan_to_num(frames.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)

    spacing: tuple[float, float] | None = None
    region: tuple[int, int, int, int] | None = None
    candidates = 0
    height, width = frames.shape[1], frames.shape[2]
    if modality == "US":
        chosen, candidates = select_tissue_region(read_ultrasound_regions(ds), height, width)
        if chosen is not None:
            spacing, region = chosen.spacing_mm, (chosen.x0, chosen.y0, chosen.x1, chosen.y1)
            if candidates > 1:
                notes.append(f"{candidates} 2D tissue regions; the largest was chosen")
    else:
        spacing = mr_pixel_spacing_mm(ds)
    return DecodedImage(
        frames=frames, color_deviation=deviation, frame_indices=tuple(indices),
        n_frames_total=n_frames, rows=height, cols=width, modality=modality or "OT",
        photometric=photometric or "UNKNOWN", transfer_syntax=transfer_syntax,
        samples_per_pixel=samples, bits_stored=bits_stored, spacing_mm=spacing, region=region,
        region_candidates=candidates, notes=tuple(dict.fromkeys(notes)),
    )


def decode_dicom(
    source: str | Path | bytes, *, frame_policy: str = "middle", frame_stride: int = 1
) -> DecodedImage:
    """Read and decode one DICOM file.

    Args:
        source: file path, or the file's bytes.
        frame_policy: ``"middle"`` (one frame), ``"all"`` or ``"stride"`` (every
            ``frame_stride``-th frame), counted by NumberOfFrames, not by SOP class.
        frame_stride: step for ``"stride"``.

    Returns:
        :class:`DecodedImage` with ``frames`` float32 ``[F, H, W]`` in [0, 1].

    Raises:
        DicomDecodeError: with a short reason ("not a DICOM file", "truncated pixel data",
            "no pixel data", "unsupported transfer syntax ...", ...).
    """
    ds, notes = read_dataset(source)
    return decode_dataset(ds, frame_policy=frame_policy, frame_stride=frame_stride, notes=notes)
