"""Tiny hand-made DICOM files and a synthetic ultrasound fan for the data-layer tests.

Imported by the tests of this folder as ``dicom_factory`` (pytest puts the folder on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def build_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    modality: str = "US",
    sop_class: str = US_IMAGE_STORAGE,
    number_of_frames: int | str | None = None,
    region: dict[str, float] | None = None,
    planar: int = 0,
    signed: bool = False,
    bits_stored: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A minimal valid image dataset. ``pixels``: [H, W], [F, H, W], [H, W, 3] or [F, H, W, 3].

    ``region``: ``{"delta_cm": .., "units": 3, "x0": .., ...}`` for one US region item.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Secret^Patient"
    ds.PatientID = "SECRET-ID-123"
    ds.StudyDate = "20240101"
    colour = photometric in ("RGB", "YBR_FULL")
    samples = 3 if colour else 1
    multi = pixels.ndim == (4 if colour else 3)
    frames = pixels.shape[0] if multi else 1
    rows, cols = pixels.shape[1:3] if multi else pixels.shape[0:2]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    itemsize = pixels.dtype.itemsize
    ds.BitsAllocated = itemsize * 8
    ds.BitsStored = bits_stored or itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if colour:
        ds.PlanarConfiguration = planar
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    elif multi:
        ds.NumberOfFrames = frames
    data = pixels
    if colour and planar == 1:
        data = np.moveaxis(pixels, -1, -3)  # [..., 3, H, W]
    if transfer_syntax == ExplicitVRBigEndian and itemsize > 1:
        data = data.astype(data.dtype.newbyteorder(">"))
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    if region is not None:
        item = Dataset()
        item.RegionSpatialFormat = int(region.get("format", 1))
        item.RegionDataType = int(region.get("data_type", 1))
        item.RegionFlags = 0
        item.RegionLocationMinX0 = int(region.get("x0", 0))
        item.RegionLocationMinY0 = int(region.get("y0", 0))
        item.RegionLocationMaxX1 = int(region.get("x1", cols - 1))
        item.RegionLocationMaxY1 = int(region.get("y1", rows - 1))
        item.PhysicalUnitsXDirection = int(region.get("units", 3))
        item.PhysicalUnitsYDirection = int(region.get("units", 3))
        item.PhysicalDeltaX = float(region["delta_cm"])
        item.PhysicalDeltaY = float(region["delta_cm"])
        ds.SequenceOfUltrasoundRegions = [item]
    return ds


def save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` with the encoding named by its transfer syntax."""
    ts = ds.file_meta.TransferSyntaxUID
    ds.save_as(
        path,
        implicit_vr=ts == ImplicitVRLittleEndian,
        little_endian=ts != ExplicitVRBigEndian,
        enforce_file_format=True,
    )
    return path


def synthetic_fan(rows: int = 240, cols: int = 320, seed: int = 0) -> dict[str, np.ndarray]:
    """A B-mode-like frame: speckled sector, a dark fluid pocket, white text, a white caliper.

    Returns float32 ``image`` [H, W] in [0, 1] and bool masks ``fan``, ``text`` (outside the
    fan), ``caliper`` (inside the fan), ``fluid`` (inside the fan).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    apex_y, apex_x = -20.0, cols / 2
    radius = np.hypot(yy - apex_y, xx - apex_x)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    fan = (radius > 40) & (radius < rows + 5) & (np.abs(angle) < 40)
    image = np.zeros((rows, cols), dtype=np.float32)
    image[fan] = rng.uniform(0.15, 0.6, size=int(fan.sum())).astype(np.float32)
    fluid = fan & (((yy - 150) / 25) ** 2 + ((xx - apex_x) / 35) ** 2 < 1)
    image[fluid] = rng.uniform(0.0, 0.02, size=int(fluid.sum())).astype(np.float32)
    text = np.zeros_like(fan)
    for k in range(5):  # five "letters": 1-px strokes in the top-left corner
        x = 6 + 8 * k
        text[8:18, x] = True
        text[8, x:x + 5] = True
        text[13, x:x + 4] = True
    text &= ~fan
    image[text] = 1.0
    caliper = np.zeros_like(fan)
    cy, cx = 110, int(apex_x) + 30
    caliper[cy - 4:cy + 5, cx] = True
    caliper[cy, cx - 4:cx + 5] = True
    image[caliper] = 1.0
    return {"image": image, "fan": fan, "text": text, "caliper": caliper, "fluid": fluid}
