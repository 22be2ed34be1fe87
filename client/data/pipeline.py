"""One DICOM file -> preprocessed frames, through the cache.

:func:`load_preprocessed` reads the file once: its bytes are hashed for the cache key and, on
a miss, parsed from memory, checked for PHI, decoded and preprocessed; the result is stored.
On a hit nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client.data.annotations import COLOR_DEVIATION_THRESHOLD
from client.data.cache import PreprocessedCache, cache_entry_key, sha256_bytes
from client.data.decode import DecodedImage, DicomDecodeError, decode_dataset, read_dataset
from client.data.phi import find_phi
from client.data.preprocess import PreprocessConfig, preprocess_detailed

__all__ = ["PreprocessedFile", "load_preprocessed"]


@dataclass(frozen=True)
class PreprocessedFile:
    """A preprocessed file: ``image`` float32 ``[F, S, S]`` and facts about its source.

    ``meta`` keys: modality, photometric, transfer_syntax, n_frames_total, frame_indices,
    rows, cols, spacing_mm (source pixel size, mm, (row, col) or None), region, notes,
    fan_found, annotation_fraction, color_fraction (share of the tissue region's pixels far from
    gray, None for monochrome: colour Doppler shows here), output_spacing_mm, phi (tag names).
    """

    path: Path
    sha256: str
    cache_key: str
    image: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DicomDecodeError("file not found") from None
    except IsADirectoryError:
        raise DicomDecodeError("is a directory") from None
    except OSError as exc:
        raise DicomDecodeError(f"unreadable file ({exc.strerror or exc})") from None


def _color_fraction(decoded: DecodedImage) -> float | None:
    if decoded.color_deviation is None:
        return None
    deviation = decoded.color_deviation
    if decoded.region is not None:
        x0, y0, x1, y1 = decoded.region
        deviation = deviation[:, y0:y1 + 1, x0:x1 + 1]
    return round(float((deviation > COLOR_DEVIATION_THRESHOLD).mean()), 6)


def load_preprocessed(
    path: str | Path, cfg: PreprocessConfig, cache: PreprocessedCache | None = None
) -> PreprocessedFile:
    """Preprocessed frames of one file, from ``cache`` when possible.

    Args:
        path: the DICOM file.
        cfg: preprocessing settings (part of the cache key).
        cache: where entries live; None computes without caching.

    Returns:
        :class:`PreprocessedFile` (``from_cache`` tells whether decoding was skipped).

    Raises:
        DicomDecodeError: the file cannot be used (reason in ``.reason``).
    """
    path = Path(path)
    data = _read_bytes(path)
    digest = sha256_bytes(data)
    key = cache_entry_key(digest, cfg)
    if cache is not None:
        hit = cache.load(key)
        if hit is not None:
            return PreprocessedFile(path, digest, key, hit[0], hit[1], from_cache=True)
    ds, notes = read_dataset(data)
    phi = find_phi(ds)
    decoded = decode_dataset(ds, frame_policy=cfg.frame_policy, frame_stride=cfg.frame_stride,
                             notes=notes)
    del ds, data
    result = preprocess_detailed(decoded, cfg)
    meta: dict[str, Any] = {
        "modality": decoded.modality,
        "photometric": decoded.photometric,
        "transfer_syntax": decoded.transfer_syntax,
        "n_frames_total": decoded.n_frames_total,
        "frame_indices": list(decoded.frame_indices),
        "rows": decoded.rows,
        "cols": decoded.cols,
        "spacing_mm": list(decoded.spacing_mm) if decoded.spacing_mm else None,
        "region": list(decoded.region) if decoded.region else None,
        "notes": list(decoded.notes),
        "fan_found": result.fan_found,
        "annotation_fraction": round(result.annotation_fraction, 6),
        "color_fraction": _color_fraction(decoded),
        "output_spacing_mm": list(result.spacing_mm) if result.spacing_mm else None,
        "phi": phi,
    }
    if cache is not None:
        try:
            cache.store(key, result.image, meta)
        except OSError as exc:  # a full or read-only cache disk must not stop training
            meta["notes"] = [*meta["notes"], f"cache write failed ({exc.strerror or exc})"]
    return PreprocessedFile(path, digest, key, result.image, meta, from_cache=False)
