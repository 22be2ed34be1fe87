"""PyTorch dataset over one site's labelled DICOM files (no Flower import).

Every file of the requested modality is decoded and preprocessed once, when the dataset is
built (or found in the cache); files that fail are quarantined with the reason and left out.
Items are one per ``(file, selected frame)``: ``(image float32 tensor [1, S, S], label)``.
With a ``cache_dir`` the frames are read back memory-mapped from the cache, so training
epochs and federated rounds never decode DICOM; without one they are kept in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from client.data.cache import PreprocessedCache
from client.data.decode import DicomDecodeError
from client.data.labels import LabelRow
from client.data.pipeline import load_preprocessed
from client.data.preprocess import PreprocessConfig

__all__ = ["SiteImageDataset"]

logger = logging.getLogger(__name__)


class SiteImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Frames of a site's labelled files.

    Args:
        data_dir: folder the rows' ``file`` paths are relative to (the label file's folder).
        rows: label rows (from :func:`client.data.labels.read_label_file`).
        cfg: preprocessing settings; ``output_size`` should be set so items batch.
        cache_dir: preprocessed cache folder; None keeps the frames in memory instead.
        modality: only rows of this modality (``"US"`` or ``"MR"``) are used.
        progress: optional ``progress(done, total, path)`` while building.

    Attributes:
        quarantined: ``(path, reason)`` of files left out.
        files: ``(path, row, n_frames)`` of the files used, in item order.
    """

    def __init__(
        self,
        data_dir: str | Path,
        rows: Sequence[LabelRow],
        cfg: PreprocessConfig,
        cache_dir: str | Path | None,
        modality: str = "US",
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.cfg = cfg
        self.modality = modality.upper()
        self._cache = PreprocessedCache(cache_dir) if cache_dir is not None else None
        self.quarantined: list[tuple[str, str]] = []
        self.files: list[tuple[Path, LabelRow, int]] = []
        self._keys: list[str] = []
        self._in_memory: list[np.ndarray] = []
        self._items: list[tuple[int, int]] = []  # (file index, frame index)
        selected = [row for row in rows if row.modality.upper() == self.modality]
        for done, row in enumerate(selected, start=1):
            path = self.data_dir / row.file
            try:
                result = load_preprocessed(path, cfg, self._cache)
            except DicomDecodeError as exc:
                self._quarantine(path, exc.reason)
            except Exception as exc:  # one bad file must not stop training
                self._quarantine(path, f"internal error ({type(exc).__name__}: {exc})")
            else:
                if result.meta.get("modality") not in (None, self.modality):
                    logger.warning("%s: label says %s but DICOM says %s", path, self.modality,
                                   result.meta.get("modality"))
                file_index = len(self.files)
                n_frames = int(result.image.shape[0])
                self.files.append((path, row, n_frames))
                self._keys.append(result.cache_key)
                if self._cache is None:
                    self._in_memory.append(result.image)
                self._items.extend((file_index, frame) for frame in range(n_frames))
            if progress is not None:
                progress(done, len(selected), str(path))

    def _quarantine(self, path: Path, reason: str) -> None:
        logger.warning("quarantined %s: %s", path, reason)
        self.quarantined.append((str(path), reason))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def labels(self) -> list[int]:
        """Label of every item, in item order."""
        return [self.files[file_index][1].label for file_index, _ in self._items]

    @property
    def patient_ids(self) -> list[str]:
        """Patient of every item, in item order (for per-patient splits)."""
        return [self.files[file_index][1].patient_id for file_index, _ in self._items]

    def _frames(self, file_index: int) -> np.ndarray:
        if self._cache is None:
            return self._in_memory[file_index]
        array = self._cache.load_array(self._keys[file_index], mmap=True)
        if array is not None:
            return array
        # entry deleted or damaged since the dataset was built: rebuild it from the file
        path, _, n_frames = self.files[file_index]
        result = load_preprocessed(path, self.cfg, self._cache)
        if result.cache_key != self._keys[file_index] or result.image.shape[0] != n_frames:
            raise RuntimeError(f"{path} changed on disk while the dataset was in use")
        return result.image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image float32 [1, S, S] in [0, 1], label 0/1)``."""
        file_index, frame = self._items[index]
        image = np.array(self._frames(file_index)[frame], dtype=np.float32)
        return torch.from_numpy(image)[None], int(self.files[file_index][1].label)
