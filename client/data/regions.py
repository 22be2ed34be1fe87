"""Physical pixel spacing: the Sequence of Ultrasound Regions (US) and Pixel Spacing (MR).

Ultrasound IODs normally carry no Pixel Spacing (0028,0030); spacing is given per *region*
of the Sequence of Ultrasound Regions (0018,6011) as PhysicalDeltaX/Y in the unit named by
PhysicalUnitsX/YDirection (3 = cm). Several regions are normal (dual B-mode, waveform strip,
gray bar), so the 2D tissue region (RegionSpatialFormat 1, RegionDataType 1, both units cm)
with the largest area is chosen.

All spacings returned here are in **millimetres**, ordered ``(row, col)`` = ``(y, x)``.
Region bounds are inclusive pixel indices ``(x0, y0, x1, y1)`` clipped to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["UltrasoundRegion", "read_ultrasound_regions", "select_tissue_region", "mr_pixel_spacing_mm"]

SPATIAL_FORMAT_2D = 1
DATA_TYPE_TISSUE = 1
UNITS_CM = 3
CM_TO_MM = 10.0


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions (bounds inclusive, pixels)."""

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int | None
    data_type: int | None
    units_x: int | None
    units_y: int | None
    delta_x: float | None  # in the unit given by units_x (cm when units_x == 3)
    delta_y: float | None

    @property
    def area_px(self) -> int:
        """Region area in pixels (0 for degenerate bounds)."""
        return max(0, self.x1 - self.x0 + 1) * max(0, self.y1 - self.y0 + 1)

    @property
    def is_tissue_2d_cm(self) -> bool:
        """True for a 2D tissue region calibrated in cm on both axes with positive deltas."""
        return (
            self.spatial_format == SPATIAL_FORMAT_2D
            and self.data_type == DATA_TYPE_TISSUE
            and self.units_x == UNITS_CM
            and self.units_y == UNITS_CM
            and _positive(self.delta_x)
            and _positive(self.delta_y)
        )

    @property
    def spacing_mm(self) -> tuple[float, float] | None:
        """(row, col) pixel size in mm, or None unless the region is calibrated in cm."""
        if not self.is_tissue_2d_cm:
            return None
        assert self.delta_x is not None and self.delta_y is not None
        return (abs(self.delta_y) * CM_TO_MM, abs(self.delta_x) * CM_TO_MM)


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and abs(value) > 0.0


def _number(item: Dataset, keyword: str) -> Any:
    """Element value as a Python number, or None when absent, empty or unparsable."""
    try:
        value = item.get(keyword)
    except (ValueError, TypeError, KeyError):
        return None
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(item: Dataset, keyword: str) -> int | None:
    number = _number(item, keyword)
    return None if number is None or not math.isfinite(number) else int(number)


def read_ultrasound_regions(ds: Dataset) -> list[UltrasoundRegion]:
    """All regions of the Sequence of Ultrasound Regions, items with missing bounds skipped."""
    try:
        sequence = ds.get("SequenceOfUltrasoundRegions")
    except (ValueError, TypeError):
        return []
    if not sequence:
        return []
    regions: list[UltrasoundRegion] = []
    for item in sequence:
        if not isinstance(item, Dataset):
            continue
        bounds = [_int(item, k) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                           "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if any(b is None for b in bounds):
            continue
        x0, y0, x1, y1 = (int(b) for b in bounds)  # type: ignore[arg-type]
        regions.append(
            UltrasoundRegion(
                x0=x0, y0=y0, x1=x1, y1=y1,
                spatial_format=_int(item, "RegionSpatialFormat"),
                data_type=_int(item, "RegionDataType"),
                units_x=_int(item, "PhysicalUnitsXDirection"),
                units_y=_int(item, "PhysicalUnitsYDirection"),
                delta_x=_number(item, "PhysicalDeltaX"),
                delta_y=_number(item, "PhysicalDeltaY"),
            )
        )
    return regions


def select_tissue_region(
    regions: list[UltrasoundRegion], rows: int, cols: int
) -> tuple[UltrasoundRegion | None, int]:
    """Pick the largest calibrated 2D tissue region that lies (after clipping) in the image.

    Args:
        regions: from :func:`read_ultrasound_regions`.
        rows, cols: image size in pixels; bounds are clipped to ``[0, cols-1] x [0, rows-1]``.

    Returns:
        ``(region with clipped bounds or None, number of candidate regions)``.
    """
    candidates: list[UltrasoundRegion] = []
    for region in regions:
        if not region.is_tissue_2d_cm:
            continue
        x0, y0 = max(0, region.x0), max(0, region.y0)
        x1, y1 = min(cols - 1, region.x1), min(rows - 1, region.y1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        candidates.append(
            UltrasoundRegion(x0, y0, x1, y1, region.spatial_format, region.data_type,
                             region.units_x, region.units_y, region.delta_x, region.delta_y)
        )
    if not candidates:
        return None, 0
    best = max(candidates, key=lambda r: r.area_px)  # first of equal areas wins
    return best, len(candidates)


def _spacing_from(item: Dataset | None) -> tuple[float, float] | None:
    if item is None:
        return None
    try:
        value = item.get("PixelSpacing")
    except (ValueError, TypeError):
        return None
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        row, col = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (_positive(row) and _positive(col)):
        return None
    return (row, col)


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    try:
        sequence = ds.get(keyword)
    except (ValueError, TypeError):
        return None
    if not sequence:
        return None
    item = sequence[0]
    return item if isinstance(item, Dataset) else None


def mr_pixel_spacing_mm(ds: Dataset) -> tuple[float, float] | None:
    """(row, col) Pixel Spacing in mm from the top level or the Enhanced MR functional groups."""
    spacing = _spacing_from(ds)
    if spacing is not None:
        return spacing
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        group = _first_item(ds, groups)
        if group is None:
            continue
        spacing = _spacing_from(_first_item(group, "PixelMeasuresSequence"))
        if spacing is not None:
            return spacing
    return None
