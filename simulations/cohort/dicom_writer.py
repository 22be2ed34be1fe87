"""Write rendered TVUS frames and T2 MRI slices as standard DICOM Part 10 files.

Ultrasound files look like a center's scanner exports them (``shared/reference/realism.md``
section 4): US Image / US Multi-frame Image Storage, a Sequence of Ultrasound Regions with the
spacing in cm, the profile's photometric interpretation (MONOCHROME2, RGB, YBR_FULL_422 JPEG
baseline, 8-bit PALETTE COLOR) and compression (none, RLE, JPEG baseline, JPEG-LS, JPEG 2000).
Every identifier is pseudonymous and derived from the cohort seed, never from the clock, so the
same inputs give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from simulations.cohort.dicom_pixels import (
    add_pixel_data,
    check_encodable,
    describe_pixels,
    set_native_pixel_data,
)
from simulations.cohort.scanners import ScannerProfile

__all__ = [
    "DicomIdentity",
    "UltrasoundRegion",
    "make_identity",
    "check_encodable",
    "write_ultrasound",
    "write_mri",
]

_UID_NAMESPACE = "ecs-fl synthetic cohort"
_DEIDENTIFICATION_METHOD = "synthetic"


@dataclass(frozen=True)
class DicomIdentity:
    """Pseudonymous patient / study / series / instance identity of one DICOM file.

    Dates are DICOM DA strings "YYYYMMDD", times TM "HHMMSS", ages AS "054Y".
    """

    center: str
    modality: str  # "US" | "MR"
    patient_id: str
    patient_name: str  # "SYNTH^<patient_id>"
    patient_birth_date: str
    patient_age: str
    patient_sex: str
    study_date: str
    study_time: str
    content_date: str
    content_time: str
    accession_number: str
    study_id: str
    institution_name: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    series_number: int
    instance_number: int


@dataclass(frozen=True)
class UltrasoundRegion:
    """The 2D tissue region of an ultrasound frame (the fan's bounding box).

    x0, y0, x1, y1: inclusive pixel bounds in the image; physical_delta_x/y_mm: pixel size in
    mm (written in cm); reference_pixel_x0/y0: the probe apex in region coordinates (pixels
    from (x0, y0), may be negative); transducer_frequency_mhz: written in kHz.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    physical_delta_x_mm: float
    physical_delta_y_mm: float
    reference_pixel_x0: int
    reference_pixel_y0: int
    transducer_frequency_mhz: float

    def __post_init__(self) -> None:
        if not (0 <= self.x0 <= self.x1 and 0 <= self.y0 <= self.y1):
            raise ValueError(f"bad region bounds {(self.x0, self.y0, self.x1, self.y1)}")
        if self.physical_delta_x_mm <= 0 or self.physical_delta_y_mm <= 0:
            raise ValueError("physical deltas must be > 0 mm")

    @classmethod
    def from_fan(
        cls,
        fan_bbox: tuple[int, int, int, int],
        apex_xy_px: tuple[float, float],
        pixel_size_mm: float,
        transducer_frequency_mhz: float,
    ) -> UltrasoundRegion:
        """Region of a fan with inclusive bbox (x0, y0, x1, y1) and apex at image (x, y) px."""
        x0, y0, x1, y1 = (int(v) for v in fan_bbox)
        return cls(
            x0, y0, x1, y1, pixel_size_mm, pixel_size_mm,
            int(round(apex_xy_px[0])) - x0, int(round(apex_xy_px[1])) - y0,
            transducer_frequency_mhz,
        )


# --------------------------------------------------------------------------------- identity
def _key_rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(json.dumps([_UID_NAMESPACE, *key]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _uid(*key: object) -> str:
    # One JSON string: generate_uid joins its entropy sources without a separator.
    return str(generate_uid(PYDICOM_ROOT_UID, entropy_srcs=[json.dumps([_UID_NAMESPACE, *key])]))


def _age_on(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _birth_date(exam_day: dt.date, age: int, day_offset: int) -> dt.date:
    """A birth date ``day_offset`` (0-364) days before the ``age``-th birthday at ``exam_day``."""
    birth = exam_day - dt.timedelta(days=round(age * 365.2425) + day_offset)
    while _age_on(birth, exam_day) > age:
        birth += dt.timedelta(days=1)
    while _age_on(birth, exam_day) < age:
        birth -= dt.timedelta(days=1)
    return birth


def make_identity(
    *,
    center: str,
    patient_id: str,
    index: int,
    modality: str,
    seed: int,
    institution_name: str | None = None,
    series_number: int = 1,
    age_years: int | None = None,
) -> DicomIdentity:
    """Deterministic pseudonymous identity of instance ``index`` of a patient's exam.

    One study per (seed, center, patient_id, modality): same StudyInstanceUID, dates and
    accession for every series / instance of it; one series per ``series_number``; one
    SOPInstanceUID per ``index``. The patient's index date and birth date come from a RNG
    seeded by (seed, center, patient_id); an MR study follows the US exam by 5-35 days.
    ``age_years`` (at the US exam) overrides the sampled age (40-80 years).
    """
    if modality not in ("US", "MR"):
        raise ValueError(f"modality must be 'US' or 'MR', got {modality!r}")
    patient_key = (seed, center, patient_id)
    study_key = (*patient_key, modality)
    series_key = (*study_key, series_number)

    patient_rng = _key_rng("patient", *patient_key)
    exam_day = dt.date(2016, 1, 1) + dt.timedelta(days=int(patient_rng.integers(0, 9 * 365)))
    age = int(age_years) if age_years is not None else int(patient_rng.integers(40, 81))
    birth = _birth_date(exam_day, age, int(patient_rng.integers(0, 365)))

    study_rng = _key_rng("study", *study_key)
    delay_days = 0 if modality == "US" else int(study_rng.integers(5, 36))
    study_day = exam_day + dt.timedelta(days=delay_days)
    study_start = dt.datetime.combine(study_day, dt.time(8)) + dt.timedelta(
        seconds=int(study_rng.integers(0, 9 * 3600))
    )
    content = study_start + dt.timedelta(seconds=60 * (series_number - 1) + 4 * index)

    return DicomIdentity(
        center=center,
        modality=modality,
        patient_id=patient_id,
        patient_name=f"SYNTH^{patient_id}",
        patient_birth_date=birth.strftime("%Y%m%d"),
        patient_age=f"{_age_on(birth, study_day):03d}Y",
        patient_sex="F",
        study_date=study_day.strftime("%Y%m%d"),
        study_time=study_start.strftime("%H%M%S"),
        content_date=content.strftime("%Y%m%d"),
        content_time=content.strftime("%H%M%S"),
        accession_number=f"A{int(study_rng.integers(10**8, 10**9))}",
        study_id=str(int(study_rng.integers(1000, 100000))),
        institution_name=institution_name or f"SYNTHETIC CENTER {center.upper()}",
        study_instance_uid=_uid("study", *study_key),
        series_instance_uid=_uid("series", *series_key),
        sop_instance_uid=_uid("instance", *series_key, index),
        frame_of_reference_uid=_uid("frame-of-reference", *series_key),
        series_number=series_number,
        instance_number=index + 1,
    )


# --------------------------------------------------------------------------- common modules
def _ds_number(value: float) -> str:
    return f"{value:.6g}"


def _base_dataset(identity: DicomIdentity, sop_class_uid: UID, transfer_syntax: UID) -> Dataset:
    """Patient, study, series, equipment (institution), image and SOP common attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = identity.sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = identity.sop_instance_uid
    ds.StudyDate = identity.study_date
    ds.SeriesDate = identity.study_date
    ds.ContentDate = identity.content_date
    ds.StudyTime = identity.study_time
    ds.SeriesTime = identity.study_time
    ds.ContentTime = identity.content_time
    ds.AccessionNumber = identity.accession_number
    ds.Modality = identity.modality
    ds.InstitutionName = identity.institution_name
    ds.ReferringPhysicianName = ""
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.patient_birth_date
    ds.PatientSex = identity.patient_sex
    ds.PatientAge = identity.patient_age
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = _DEIDENTIFICATION_METHOD
    ds.StudyInstanceUID = identity.study_instance_uid
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.StudyID = identity.study_id
    ds.SeriesNumber = identity.series_number
    ds.InstanceNumber = identity.instance_number
    return ds


def _save(ds: Dataset, path: str | os.PathLike[str]) -> None:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


# ------------------------------------------------------------------------------- ultrasound
def _region_item(region: UltrasoundRegion) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0  # high priority, no scaling protection
    item.RegionLocationMinX0 = region.x0
    item.RegionLocationMinY0 = region.y0
    item.RegionLocationMaxX1 = region.x1
    item.RegionLocationMaxY1 = region.y1
    item.ReferencePixelX0 = region.reference_pixel_x0
    item.ReferencePixelY0 = region.reference_pixel_y0
    item.PhysicalUnitsXDirection = 3  # cm
    item.PhysicalUnitsYDirection = 3
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    item.PhysicalDeltaX = region.physical_delta_x_mm / 10.0
    item.PhysicalDeltaY = region.physical_delta_y_mm / 10.0
    item.TransducerFrequency = int(round(region.transducer_frequency_mhz * 1000))  # kHz
    return item


def _check_frames(frames_rgb: np.ndarray, profile: ScannerProfile, region: UltrasoundRegion) -> None:
    if frames_rgb.dtype != np.uint8 or frames_rgb.ndim != 4 or frames_rgb.shape[3] != 3:
        raise ValueError(f"frames_rgb must be uint8 [F, H, W, 3], got {frames_rgb.dtype} "
                         f"{frames_rgb.shape}")
    if frames_rgb.shape[1:3] != (profile.rows, profile.cols):
        raise ValueError(f"frames are {frames_rgb.shape[1:3]}, profile says "
                         f"{(profile.rows, profile.cols)}")
    if region.x1 >= profile.cols or region.y1 >= profile.rows:
        raise ValueError(f"region {region} exceeds the {profile.rows}x{profile.cols} image")


def write_ultrasound(
    path: str | os.PathLike[str],
    frames_rgb: np.ndarray,
    *,
    profile: ScannerProfile,
    identity: DicomIdentity,
    region: UltrasoundRegion,
) -> None:
    """Write display frames uint8 [F, H, W, 3] (H, W = profile.rows, cols) as one US file.

    F == 1: Ultrasound Image Storage; F > 1: Ultrasound Multi-frame Image Storage with
    NumberOfFrames, FrameTime = profile.frame_time_ms (ms) and FrameIncrementPointer.
    """
    check_encodable(profile)
    _check_frames(frames_rgb, profile, region)
    if identity.modality != "US":
        raise ValueError(f"identity is for modality {identity.modality!r}, not 'US'")
    n_frames = frames_rgb.shape[0]
    sop_class = UltrasoundMultiFrameImageStorage if n_frames > 1 else UltrasoundImageStorage
    ds = _base_dataset(identity, sop_class, ExplicitVRLittleEndian)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ENDOVAGINAL", "0001"]  # 0001 = 2D imaging
    ds.Manufacturer = profile.manufacturer
    ds.ManufacturerModelName = profile.model
    ds.BodyPartExamined = "UTERUS"
    ds.SeriesDescription = "TV GYN"
    ds.TransducerData = profile.probe
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"
    if n_frames > 1:
        ds.FrameTime = _ds_number(profile.frame_time_ms)
        ds.FrameIncrementPointer = Tag("FrameTime")
        ds.CineRate = int(round(1000.0 / profile.frame_time_ms))
    ds.SequenceOfUltrasoundRegions = Sequence([_region_item(region)])
    add_pixel_data(ds, frames_rgb, profile)
    _save(ds, path)


# ------------------------------------------------------------------------------------- MRI
def _scale_to_bits(image: np.ndarray, bits_stored: int) -> np.ndarray:
    """Linear map of [0, max] to [0, 2**bits_stored - 1]: uint16 [H, W]."""
    if not np.all(np.isfinite(image)) or image.min() < 0:
        raise ValueError("MR signal must be finite and >= 0")
    top = float(image.max())
    scale = (2**bits_stored - 1) / top if top > 0 else 0.0
    return np.rint(image.astype(np.float64) * scale).astype(np.uint16)


def write_mri(
    path: str | os.PathLike[str],
    image: np.ndarray,
    *,
    identity: DicomIdentity,
    pixel_spacing_mm: tuple[float, float],
    slice_thickness_mm: float,
    repetition_time_ms: float,
    echo_time_ms: float,
    field_strength_t: float,
    manufacturer: str,
    model: str,
    bits_stored: int = 12,
) -> None:
    """Write a sagittal T2 slice (signal float [H, W], >= 0) as MR Image Storage.

    Stored unsigned 16-bit with ``bits_stored`` bits, the maximum signal mapped to
    2**bits_stored - 1. ``pixel_spacing_mm`` = (row spacing, column spacing) in mm, the DICOM
    PixelSpacing order; TR / TE in ms; field strength in tesla.
    """
    if image.ndim != 2:
        raise ValueError(f"image must be [H, W], got {image.shape}")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be in 8..16, got {bits_stored}")
    if identity.modality != "MR":
        raise ValueError(f"identity is for modality {identity.modality!r}, not 'MR'")
    stored = _scale_to_bits(image, bits_stored)
    rows, cols = stored.shape
    ds = _base_dataset(identity, MRImageStorage, ExplicitVRLittleEndian)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, model
    ds.BodyPartExamined = "PELVIS"
    ds.SeriesDescription = ds.ProtocolName = "T2 SAG"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "SK", ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = _ds_number(repetition_time_ms)
    ds.EchoTime = _ds_number(echo_time_ms)
    ds.EchoTrainLength = 16
    ds.MagneticFieldStrength = _ds_number(field_strength_t)
    ds.ImagingFrequency = _ds_number(42.577478 * field_strength_t)
    ds.ImagedNucleus = "1H"
    ds.SliceThickness = _ds_number(slice_thickness_mm)
    ds.PixelSpacing = [_ds_number(pixel_spacing_mm[0]), _ds_number(pixel_spacing_mm[1])]
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]  # rows: A->P, columns: S->I
    half_width, half_height = cols * pixel_spacing_mm[1] / 2, rows * pixel_spacing_mm[0] / 2
    ds.ImagePositionPatient = ["0", _ds_number(-half_width), _ds_number(half_height)]
    ds.SliceLocation = "0"
    describe_pixels(ds, "MONOCHROME2", 1, rows, cols)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    low, high = np.percentile(stored, [0.5, 99.5])
    ds.WindowCenter = _ds_number(round((low + high) / 2))
    ds.WindowWidth = _ds_number(max(round(high - low), 1))
    set_native_pixel_data(ds, stored.astype("<u2"))
    _save(ds, path)
