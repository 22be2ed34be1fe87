"""A center folder -> image tensors for SG-CycleGAN training and evaluation.

All pixels go through the DICOM data layer (:mod:`client.data`) and its on-disk cache:

* **US** (:func:`load_center_us`): the data layer's standard pipeline: crop to the tissue
  region, in-paint burned-in annotations, zero outside the fan, cut the square field of view
  (``apex`` by default: the square under the probe) and resize to ``S x S``.
* **MRI** (:func:`load_center_mri`): decoded and cached at native size, then cut to a
  :class:`VirtualProbe` view so that it resembles what the US pipeline produces: a square
  physical field around the image centre, resampled to ``S x S``, and a standard sector
  mask (apex at the top) laid out exactly as the US pipeline lays out a fan for the same field
  of view. By default the field is as large as the US square, so MR and US share one physical
  scale (mm per pixel).

  Assumption: the MR field of view is centred near the uterus. True for the synthetic cohort
  (centre jitter ~8 mm) and for typical pelvic T2 sagittal protocols, but not guaranteed for
  real data; a site with off-centre MR would need a uterus localiser (not done here).
* **Paired renders** (:func:`load_paired_renders`, evaluation only, never trained on): the
  US through the standard pipeline, and the MR, tissue map and fan cropped to the US region
  and letterboxed onto the same ``S x S`` grid (images bilinear, labels nearest).

Tensors are float32 ``[N, 1, S, S]`` in [-1, 1]; a center without MRI gives ``N = 0``.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from client.data import (
    DicomDecodeError,
    PreprocessConfig,
    PreprocessedCache,
    load_preprocessed,
    read_label_file,
)
from client.data.dataset import SiteImageDataset
from client.data.preprocess import FIELDS_OF_VIEW, square_window

__all__ = [
    "GanImages",
    "PairedRenders",
    "VirtualProbe",
    "load_center_mri",
    "load_center_us",
    "load_paired_renders",
    "to_signed",
]

logger = logging.getLogger(__name__)


def to_signed(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] float32 tensor."""
    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32))
    return tensor.mul(2.0).sub(1.0).clamp_(-1.0, 1.0)


@dataclass(frozen=True)
class GanImages:
    """``images`` float32 ``[N, 1, S, S]`` in [-1, 1], ``labels`` int64 ``[N]``, ``patient_ids``."""

    images: torch.Tensor
    labels: torch.Tensor
    patient_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class VirtualProbe:
    """A US-like view of an MR slice: square physical field + standard sector mask.

    The sector (micro-convex, apex at the top) is placed as the US pipeline places a fan of the
    same geometry for ``field_of_view`` (:func:`client.data.preprocess.square_window`):
    ``"apex"`` keeps the square under the probe (side = the sector's depth, its lateral edges
    cut), ``"fan"`` letterboxes the whole sector (its bounding box spans the field's width and
    is centred vertically).
    """

    sector_angle_deg: float = 130.0  # full opening angle of the fan
    apex_radius_mm: float = 10.0  # the fan starts this far from its apex (probe radius)
    depth_mm: float = 72.0  # imaging depth below the probe face
    field_mm: float | None = None  # side of the square field; None = the US square's side
    field_of_view: str = "apex"  # as the data layer's PreprocessConfig.field_of_view

    def __post_init__(self) -> None:
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise ValueError(f"field_of_view {self.field_of_view!r} not in {FIELDS_OF_VIEW}")

    @property
    def sector_width_mm(self) -> float:
        """Width of the sector's bounding box (mm)."""
        half = math.radians(self.sector_angle_deg) / 2
        return 2 * (self.apex_radius_mm + self.depth_mm) * math.sin(min(half, math.pi / 2))

    @property
    def sector_height_mm(self) -> float:
        """Height of the sector's bounding box (mm): from the inner arc's ends to the far arc."""
        half = math.radians(self.sector_angle_deg) / 2
        return self.apex_radius_mm + self.depth_mm - self.apex_radius_mm * math.cos(half)

    @property
    def field_side_mm(self) -> float:
        """Side of the square field (mm)."""
        if self.field_mm is not None:
            return self.field_mm
        return square_window(self.sector_height_mm, self.sector_width_mm, self.field_of_view)[2]

    def sector_mask(self, size: int) -> np.ndarray:
        """bool ``[size, size]``: the sector, laid out as the US pipeline lays out a fan (its
        square window always fills the output, whatever ``field_mm`` is)."""
        half = math.radians(self.sector_angle_deg) / 2
        top, left, side = square_window(self.sector_height_mm, self.sector_width_mm, self.field_of_view)
        apex_y = -self.apex_radius_mm * math.cos(half) - top  # mm below the window's top edge
        apex_x = self.sector_width_mm / 2 - left
        centres = (np.arange(size, dtype=np.float64) + 0.5) * side / size  # mm in the window
        dy, dx = np.meshgrid(centres - apex_y, centres - apex_x, indexing="ij")
        radius, angle = np.hypot(dx, dy), np.arctan2(dx, dy)
        r_max = self.apex_radius_mm + self.depth_mm
        return (radius >= self.apex_radius_mm) & (radius <= r_max) & (np.abs(angle) <= half)

    def view(self, image: np.ndarray, spacing_mm: tuple[float, float] | None, size: int) -> np.ndarray:
        """MR ``[H, W]`` in [0, 1] (pixel size ``spacing_mm`` (row, col)) -> float32 ``[size, size]``.

        Outside the MR image is 0. With unknown spacing the whole image is the field.
        """
        height, width = image.shape
        if spacing_mm is None:
            spacing_mm = (self.field_side_mm / height, self.field_side_mm / width)
        out_mm = self.field_side_mm / size
        zoom = (spacing_mm[0] / out_mm, spacing_mm[1] / out_mm)
        sigma = tuple(max(0.0, (1.0 / z - 1.0) / 2.0) for z in zoom)  # anti-aliasing, input px
        smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma) if max(sigma) > 0 else image
        offsets = (np.arange(size, dtype=np.float64) + 0.5) * out_mm - self.field_side_mm / 2
        rows = (height - 1) / 2 + offsets / spacing_mm[0]
        cols = (width - 1) / 2 + offsets / spacing_mm[1]
        grid = np.meshgrid(rows, cols, indexing="ij")
        out = ndimage.map_coordinates(smooth, grid, order=1, mode="constant", cval=0.0)
        return (np.clip(out, 0.0, 1.0) * self.sector_mask(size)).astype(np.float32)


def _rows(center_dir: Path, labels_csv: str | Path | None, modality: str, splits: tuple[str, ...] | None):
    path = Path(labels_csv) if labels_csv is not None else center_dir / "manifest.csv"
    if not path.is_file():
        return []
    rows = [row for row in read_label_file(path) if row.modality == modality]
    if splits is not None:  # rows without a split are not yet assigned: kept
        rows = [row for row in rows if row.split in splits or row.split == ""]
    return rows


def load_center_us(
    center_dir: str | Path, *, image_size: int, cache_dir: str | Path | None,
    splits: tuple[str, ...] | None = ("train",), labels_csv: str | Path | None = None,
) -> GanImages:
    """A center's ultrasound frames (data-layer pipeline, middle frame of cines).

    Args:
        center_dir: the center folder (label file paths are relative to it).
        image_size: output side ``S`` in pixels.
        cache_dir: data-layer cache (None: no caching).
        splits: label-file splits to use (rows with an empty split are kept); None = all.
        labels_csv: label file (default ``<center_dir>/manifest.csv``).

    Returns:
        :class:`GanImages`, ``images`` ``[N, 1, S, S]`` in [-1, 1]; unusable files are skipped.
    """
    center_dir = Path(center_dir)
    rows = _rows(center_dir, labels_csv, "US", splits)
    if not rows:
        return _empty(image_size)
    dataset = SiteImageDataset(center_dir, rows, PreprocessConfig(output_size=image_size), cache_dir, modality="US")
    if len(dataset) == 0:
        return _empty(image_size)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return GanImages(to_signed(images), torch.tensor(dataset.labels, dtype=torch.int64),
                     tuple(dataset.patient_ids))


def load_center_mri(
    center_dir: str | Path, *, image_size: int, cache_dir: str | Path | None,
    probe: VirtualProbe | None = None, splits: tuple[str, ...] | None = ("train",),
    labels_csv: str | Path | None = None,
) -> GanImages:
    """A center's MR slices as virtual-probe views (:class:`VirtualProbe`).

    Arguments as :func:`load_center_us`; ``probe`` defaults to ``VirtualProbe()``.
    Returns ``N = 0`` images for a center without MRI.
    """
    center_dir = Path(center_dir)
    probe = probe or VirtualProbe()
    cfg = PreprocessConfig(output_size=None)  # native size: the probe needs the pixel spacing
    cache = PreprocessedCache(cache_dir) if cache_dir is not None else None
    images, labels, patients = [], [], []
    for row in _rows(center_dir, labels_csv, "MR", splits):
        try:
            loaded = load_preprocessed(center_dir / row.file, cfg, cache)
        except DicomDecodeError as exc:
            logger.warning("skipped %s: %s", center_dir / row.file, exc.reason)
            continue
        spacing = loaded.meta.get("spacing_mm")
        for frame in loaded.image:
            images.append(probe.view(frame, tuple(spacing) if spacing else None, image_size))
            labels.append(row.label)
            patients.append(row.patient_id)
    if not images:
        return _empty(image_size)
    return GanImages(to_signed(np.stack(images)[:, None]), torch.tensor(labels, dtype=torch.int64),
                     tuple(patients))


def _empty(image_size: int) -> GanImages:
    return GanImages(torch.empty(0, 1, image_size, image_size), torch.empty(0, dtype=torch.int64), ())


@dataclass(frozen=True)
class PairedRenders:
    """One anatomy in both modalities on one ``S x S`` grid (evaluation only).

    ``mri``, ``us``: float32 ``[N, 1, S, S]`` in [-1, 1] (MR zeroed, i.e. -1, outside the fan);
    ``tissue``: uint8 ``[N, S, S]`` (:class:`simulations.cohort.anatomy.Tissue` codes);
    ``fan``: bool ``[N, S, S]``; ``labels``: int64 ``[N]``; ``patient_ids``.
    """

    mri: torch.Tensor
    us: torch.Tensor
    tissue: np.ndarray
    fan: np.ndarray
    labels: torch.Tensor
    patient_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.us.shape[0])


def _square_sample(image: np.ndarray, size: int, order: int, field_of_view: str) -> np.ndarray:
    """Like the data layer's square cut (:func:`square_window`, zero padded), resampled to ``size``."""
    height, width = image.shape
    top, left, side = (int(v) for v in square_window(height, width, field_of_view))
    zoom = size / side
    if order > 0 and zoom < 1:
        image = ndimage.gaussian_filter(image.astype(np.float32), (1.0 / zoom - 1.0) / 2.0, mode="nearest")
    centres = (np.arange(size, dtype=np.float64) + 0.5) / zoom - 0.5
    grid = np.meshgrid(centres + top, centres + left, indexing="ij")
    if order == 0:
        grid = [np.rint(g) for g in grid]
    return ndimage.map_coordinates(image, grid, order=order, mode="constant", cval=0)


def load_paired_renders(center_dir: str | Path, *, image_size: int, cache_dir: str | Path | None) -> PairedRenders:
    """The center's ``paired/paired.csv`` renders on one grid; empty when there are none."""
    center_dir = Path(center_dir)
    index = center_dir / "paired" / "paired.csv"
    s = image_size
    mri, us, tissue, fan, labels, patients = [], [], [], [], [], []
    cache = PreprocessedCache(cache_dir) if cache_dir is not None else None
    us_cfg = PreprocessConfig(output_size=s)
    fov = us_cfg.field_of_view
    if index.is_file():
        with index.open(newline="") as stream:
            records = list(csv.DictReader(stream))
        for record in records:
            us_file = load_preprocessed(center_dir / record["us_file"], us_cfg, cache)
            mr_file = load_preprocessed(center_dir / record["mr_file"], PreprocessConfig(output_size=None), cache)
            with np.load(center_dir / record["tissue_file"]) as npz:
                tissue_full, fan_full = npz["tissue"], npz["fan"]
            region = us_file.meta.get("region")
            x0, y0, x1, y1 = region if region else (0, 0, tissue_full.shape[1] - 1, tissue_full.shape[0] - 1)
            crop = (slice(y0, y1 + 1), slice(x0, x1 + 1))
            fan_s = _square_sample(fan_full[crop].astype(np.uint8), s, 0, fov).astype(bool)
            mr_s = np.clip(_square_sample(mr_file.image[0][crop], s, 1, fov), 0, 1) * fan_s
            mri.append(mr_s)
            us.append(us_file.image[0])
            tissue.append(_square_sample(tissue_full[crop], s, 0, fov).astype(np.uint8))
            fan.append(fan_s)
            labels.append(int(record["label"]))
            patients.append(record["patient_id"])
    if not us:
        return PairedRenders(torch.empty(0, 1, s, s), torch.empty(0, 1, s, s), np.zeros((0, s, s), np.uint8),
                             np.zeros((0, s, s), bool), torch.empty(0, dtype=torch.int64), ())
    return PairedRenders(to_signed(np.stack(mri)[:, None]), to_signed(np.stack(us)[:, None]),
                         np.stack(tissue), np.stack(fan), torch.tensor(labels, dtype=torch.int64), tuple(patients))
