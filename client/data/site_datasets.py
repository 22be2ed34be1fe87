"""A site's real ultrasound as classifier datasets: the rows of its label file, through the DICOM
data layer and its cache. Items ``([1, S, S] float32 in [0, 1], label)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from client.data.dataset import SiteImageDataset
from client.data.labels import LabelRow, read_label_file
from client.data.preprocess import PreprocessConfig

__all__ = ["site_rows", "site_us_dataset"]


def site_rows(center_dir: str | Path, splits: Sequence[str], modality: str = "US") -> list[LabelRow]:
    """Rows of a site's label file in the given splits (``""`` matches rows without a split)."""
    rows = read_label_file(Path(center_dir) / "manifest.csv")
    return [r for r in rows if r.split in splits and r.modality == modality]


def site_us_dataset(
    center_dir: str | Path, splits: Sequence[str], preprocess_cfg: PreprocessConfig, cache_dir: str | Path | None
) -> SiteImageDataset:
    """Real ultrasound frames of a site's rows in ``splits``, items ``([1, S, S] in [0, 1], label)``."""
    return SiteImageDataset(center_dir, site_rows(center_dir, splits), preprocess_cfg, cache_dir, modality="US")
