"""On-disk cache of preprocessed frames, so later epochs and rounds never decode DICOM again.

An entry is keyed by ``sha256(file content)`` + :meth:`PreprocessConfig.cache_key`, and is
two files in ``<cache_dir>/<key[:2]>/``:

* ``<key>.npy``: the float32 ``[F, S, S]`` frames;
* ``<key>.json``: metadata (decode facts, PHI tag names, array shape), written last, so it
  marks a complete entry.

Both are written to a temporary file in the same folder and renamed (atomic on POSIX).
Unreadable, truncated or inconsistent entries count as misses and are overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from client.data.preprocess import PreprocessConfig

__all__ = ["PreprocessedCache", "cache_entry_key", "sha256_bytes"]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a file's content."""
    return hashlib.sha256(data).hexdigest()


def cache_entry_key(file_sha256: str, cfg: PreprocessConfig) -> str:
    """Entry key: file content hash + preprocessing settings key."""
    return f"{file_sha256}-{cfg.cache_key()}"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class PreprocessedCache:
    """Preprocessed arrays + metadata under ``cache_dir`` (created on first write)."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def load_meta(self, key: str) -> dict[str, Any] | None:
        """The entry's metadata, or None for a missing or unreadable entry."""
        array_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or not array_path.is_file():
            return None
        return meta

    def load_array(self, key: str, *, mmap: bool = False) -> np.ndarray | None:
        """The entry's float32 ``[F, S, S]`` array, or None when missing or corrupt.

        With ``mmap=True`` the file is memory-mapped (read-only) and only the shape and
        dtype are checked; otherwise values are also checked to be finite.
        """
        array_path, _ = self._paths(key)
        try:
            array = np.load(array_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.dtype != np.float32 or array.ndim != 3 or array.shape[0] < 1:
            return None
        if not mmap and not np.isfinite(array).all():
            return None
        return array

    def load(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """``(array, meta)`` for a complete, consistent entry; None otherwise (a miss)."""
        meta = self.load_meta(key)
        if meta is None:
            return None
        array = self.load_array(key)
        if array is None or list(array.shape) != meta.get("shape"):
            return None
        return array, meta

    def store(self, key: str, array: np.ndarray, meta: dict[str, Any]) -> None:
        """Write an entry atomically (array first, metadata last)."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        array_path, meta_path = self._paths(key)
        _atomic_write(array_path, lambda stream: np.save(stream, array, allow_pickle=False))
        payload = json.dumps({**meta, "shape": list(array.shape)}, sort_keys=True).encode()
        _atomic_write(meta_path, lambda stream: stream.write(payload))
