"""DICOM data layer of a site: decode, preprocess, cache, PHI check, site scan, dataset.

Public surface (torch is imported only by :class:`SiteImageDataset`, lazily)::

    decode_dicom(path, frame_policy="middle", frame_stride=1) -> DecodedImage
    preprocess(decoded, PreprocessConfig(...)) -> float32 [F, S, S]
    load_preprocessed(path, cfg, PreprocessedCache(dir)) -> PreprocessedFile
    find_phi(dataset) -> list[str]
    scan_site(data_dir, labels_csv=None, cfg=None, cache_dir=None) -> SiteReport
    SiteImageDataset(data_dir, rows, cfg, cache_dir, modality="US")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client.data.cache import PreprocessedCache
from client.data.decode import DecodedImage, DicomDecodeError, decode_dicom
from client.data.labels import LabelFileError, LabelRow, read_label_file
from client.data.phi import find_phi
from client.data.pipeline import PreprocessedFile, load_preprocessed
from client.data.preprocess import PreprocessConfig, preprocess
from client.data.site import FileReport, SiteReport, scan_site

if TYPE_CHECKING:
    from client.data.dataset import SiteImageDataset

__all__ = [
    "DecodedImage",
    "DicomDecodeError",
    "FileReport",
    "LabelFileError",
    "LabelRow",
    "PreprocessConfig",
    "PreprocessedCache",
    "PreprocessedFile",
    "SiteImageDataset",
    "SiteReport",
    "decode_dicom",
    "find_phi",
    "load_preprocessed",
    "preprocess",
    "read_label_file",
    "scan_site",
]


def __getattr__(name: str) -> Any:
    if name == "SiteImageDataset":  # keeps `import client.data` free of torch
        from client.data.dataset import SiteImageDataset

        return SiteImageDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
