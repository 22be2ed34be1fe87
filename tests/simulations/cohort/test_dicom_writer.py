"""Round trips of the synthetic US / MR DICOM writer through pydicom."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.pixels import apply_color_lut
from pydicom.uid import UID

from simulations.cohort.annotations import (
    ANNOTATION_COLORS,
    apply_tint,
    burn_in_annotations,
    screen_text_lines,
)
from simulations.cohort.dicom_pixels import SUPPORTED_ENCODINGS
from simulations.cohort.dicom_writer import (
    UltrasoundRegion,
    check_encodable,
    make_identity,
    write_mri,
    write_ultrasound,
)
from simulations.cohort.scanners import SCANNER_PROFILES, ScannerProfile

ROWS, COLS = 120, 160
US_IMAGE, US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1"
TRANSFER_SYNTAX = {
    "none": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg_baseline": "1.2.840.10008.1.2.4.50",
    "jpeg_ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
}
ENCODABLE = sorted(SUPPORTED_ENCODINGS)


@pytest.fixture(autouse=True)
def strict_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid VR values must raise while writing and reading, not just warn."""
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)


def _small(profile: ScannerProfile, **changes: object) -> ScannerProfile:
    return dataclasses.replace(profile, rows=ROWS, cols=COLS, **changes)


def _screen_frames(profile: ScannerProfile, fan_factory, n_frames: int):
    """Tinted, annotated frames uint8 [F, H, W, 3] of a small fan, and its region."""
    frames = []
    for k in range(n_frames):
        fan = fan_factory(profile.rows, profile.cols, seed=10 + k)
        x0, y0, x1, y1 = fan.bbox
        calipers = [(((x0 + x1) / 2, y0 + 15.0), ((x0 + x1) / 2 + 3, y0 + 45.0))]
        lines = screen_text_lines(profile, institution="Synthetic Hospital", patient_id="C1-0007",
                                  study_date="20230412", study_time="101530")
        frames.append(burn_in_annotations(
            apply_tint(fan.gray, profile.tint), layout=profile.annotation_layout,
            text_lines=lines, calipers=calipers, caliper_label="D1 7.5 mm",
            depth_mm=profile.depth_mm, fan_bbox=fan.bbox, rng=np.random.default_rng(k)))
    region = UltrasoundRegion.from_fan(fan.bbox, fan.apex_xy, profile.pixel_size_mm,
                                       profile.center_frequency_mhz)
    return np.stack(frames), region


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _decoded_rgb(ds: pydicom.Dataset) -> np.ndarray:
    """Decoded pixels as float RGB [F, H, W, 3] whatever the photometric interpretation."""
    pixels = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1))
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds) / 257.0  # 16-bit palette entries
    elif ds.SamplesPerPixel == 1:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.asarray(pixels, np.float64).reshape(n_frames, ds.Rows, ds.Columns, 3)


def _assert_pixels_match(ds: pydicom.Dataset, frames: np.ndarray) -> None:
    """Decoded pixels equal the written frames: exactly, up to luma or palette, or like JPEG."""
    decoded = _decoded_rgb(ds)
    error = np.abs(_luma(decoded) - _luma(frames.astype(np.float64)))
    if ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX["jpeg_baseline"]:
        assert ds.LossyImageCompression == "01" and error.mean() < 3.0
    elif ds.PhotometricInterpretation == "RGB":
        assert np.array_equal(decoded, frames)
    elif ds.PhotometricInterpretation == "MONOCHROME2":
        assert error.max() <= 0.5  # the stored value is the rounded luma
    else:
        assert error.max() <= 1.0  # nearest of the palette's evenly spaced tint levels
    assert ds.LossyImageCompression in ("00", "01")


def _write(tmp_path: Path, name: str, frames, profile, region, index: int = 0) -> Path:
    path = tmp_path / name
    identity = make_identity(center="c1", patient_id="C1-0007", index=index, modality="US", seed=7)
    write_ultrasound(path, frames, profile=profile, identity=identity, region=region)
    return path


@pytest.mark.parametrize("name", sorted(SCANNER_PROFILES))
def test_scanner_profile_round_trip(name: str, tmp_path: Path, fan_factory) -> None:
    profile = _small(SCANNER_PROFILES[name])
    frames, region = _screen_frames(profile, fan_factory, profile.cine_frames)
    path = _write(tmp_path, "a.dcm", frames, profile, region)
    assert path.read_bytes()[128:132] == b"DICM"  # Part 10 preamble + prefix
    ds = pydicom.dcmread(path)

    multi = profile.cine_frames > 1
    assert ds.SOPClassUID == (US_MULTIFRAME if multi else US_IMAGE)
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX[profile.compression]
    assert ds.PhotometricInterpretation == profile.photometric
    assert int(ds.get("NumberOfFrames", 1)) == profile.cine_frames
    if multi:
        assert ds.FrameIncrementPointer == 0x00181063
        assert float(ds.FrameTime) == pytest.approx(profile.frame_time_ms)
    assert (ds.Modality, ds.Manufacturer, ds.ManufacturerModelName, ds.TransducerData) == (
        "US", profile.manufacturer, profile.model, profile.probe)
    assert (ds.BurnedInAnnotation, ds.PatientIdentityRemoved) == ("YES", "YES")

    (item,) = ds.SequenceOfUltrasoundRegions
    assert (item.RegionSpatialFormat, item.RegionDataType) == (1, 1)
    assert (item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection) == (3, 3)
    assert item.PhysicalDeltaX == pytest.approx(profile.pixel_size_mm / 10)
    assert item.PhysicalDeltaY == pytest.approx(profile.pixel_size_mm / 10)
    assert (item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1,
            item.RegionLocationMaxY1) == (region.x0, region.y0, region.x1, region.y1)
    assert (item.ReferencePixelX0, item.ReferencePixelY0) == (
        region.reference_pixel_x0, region.reference_pixel_y0)
    assert item.TransducerFrequency == round(profile.center_frequency_mhz * 1000)

    _assert_pixels_match(ds, frames)
    identity = make_identity(center="c1", patient_id="C1-0007", index=0, modality="US", seed=7)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        identity.study_instance_uid, identity.series_instance_uid, identity.sop_instance_uid)
    assert all(UID(u).is_valid for u in (ds.StudyInstanceUID, ds.SOPInstanceUID))
    again = _write(tmp_path, "b.dcm", frames.copy(), profile, region)
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(("photometric", "compression"), ENCODABLE)
@pytest.mark.parametrize("n_frames", [1, 2])
def test_every_supported_encoding_is_lossless_or_close_and_byte_identical(
    photometric: str, compression: str, n_frames: int, tmp_path: Path, fan_factory
) -> None:
    tint = "gray" if photometric == "MONOCHROME2" else "sepia"
    profile = _small(SCANNER_PROFILES["midrange_rgb"], photometric=photometric,
                     compression=compression, tint=tint, cine_frames=n_frames, jpeg_quality=90)
    frames, region = _screen_frames(profile, fan_factory, n_frames)
    first = _write(tmp_path, "first.dcm", frames, profile, region)
    second = _write(tmp_path, "second.dcm", frames.copy(), profile, region)
    assert first.read_bytes() == second.read_bytes()

    ds = pydicom.dcmread(first)
    assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAX[compression]
    _assert_pixels_match(ds, frames)
    decoded = _decoded_rgb(ds)
    if photometric == "PALETTE COLOR":
        for color in ANNOTATION_COLORS:  # annotation colours survive the palette exactly
            drawn = np.all(frames == np.asarray(color, np.uint8), axis=-1)
            assert np.array_equal(decoded[drawn], np.broadcast_to(color, decoded[drawn].shape))


@pytest.mark.parametrize("compression", ["none", "rle", "jpeg_ls", "jpeg2000"])
def test_unwritable_combination_fails_at_validation(compression: str, tmp_path: Path) -> None:
    profile = _small(SCANNER_PROFILES["portable_ybr_cine"], compression=compression)
    with pytest.raises(ValueError, match="cannot write"):
        check_encodable(profile)
    frames = np.zeros((1, ROWS, COLS, 3), np.uint8)
    region = UltrasoundRegion(10, 10, 100, 100, 0.3, 0.3, 45, -5, 6.0)
    with pytest.raises(ValueError, match="cannot write"):
        _write(tmp_path, "bad.dcm", frames, profile, region)
    assert not (tmp_path / "bad.dcm").exists()


def test_bad_inputs_are_rejected(tmp_path: Path) -> None:
    profile = _small(SCANNER_PROFILES["midrange_rgb"])
    region = UltrasoundRegion(10, 10, 100, 100, 0.3, 0.3, 45, -5, 6.0)
    with pytest.raises(ValueError, match="profile says"):
        _write(tmp_path, "x.dcm", np.zeros((1, ROWS + 1, COLS, 3), np.uint8), profile, region)
    mr_identity = make_identity(center="c1", patient_id="P", index=0, modality="MR", seed=1)
    with pytest.raises(ValueError, match="not 'US'"):
        write_ultrasound(tmp_path / "x.dcm", np.zeros((1, ROWS, COLS, 3), np.uint8),
                         profile=profile, identity=mr_identity, region=region)
    with pytest.raises(ValueError):
        UltrasoundRegion(10, 10, 5, 100, 0.3, 0.3, 0, 0, 6.0)


def test_identities_are_valid_consistent_and_seeded() -> None:
    def ident(**changes):
        args = dict(center="c2", patient_id="C2-0001", index=0, modality="US", seed=3) | changes
        return make_identity(**args)

    base = ident()
    uids = [base.study_instance_uid, base.series_instance_uid, base.sop_instance_uid,
            base.frame_of_reference_uid]
    assert all(UID(u).is_valid for u in uids) and len(set(uids)) == 4
    assert ident() == base  # no clock, no global RNG
    second = ident(index=1)
    assert second.study_instance_uid == base.study_instance_uid
    assert second.series_instance_uid == base.series_instance_uid
    assert second.sop_instance_uid != base.sop_instance_uid
    assert second.instance_number == base.instance_number + 1
    assert ident(series_number=2).series_instance_uid != base.series_instance_uid
    other = ident(patient_id="C2-0002")
    assert other.study_instance_uid != base.study_instance_uid
    reseeded = ident(seed=4)
    assert reseeded.sop_instance_uid != base.sop_instance_uid

    mr = ident(modality="MR")
    assert mr.study_instance_uid != base.study_instance_uid
    assert mr.patient_birth_date == base.patient_birth_date and mr.study_date > base.study_date
    assert base.patient_name == "SYNTH^C2-0001" and base.patient_sex == "F"
    aged = ident(age_years=57)
    assert aged.patient_age == "057Y"
    assert int(aged.study_date[:4]) - int(aged.patient_birth_date[:4]) in (57, 58)


def test_patient_age_matches_birth_and_study_dates_for_many_patients() -> None:
    for number in range(500):  # covers leap-day birthdays and exam days
        for modality in ("US", "MR"):
            identity = make_identity(center="c9", patient_id=f"C9-{number:04d}", index=0,
                                     modality=modality, seed=11)
            birth, study = identity.patient_birth_date, identity.study_date
            age = int(study[:4]) - int(birth[:4]) - (study[4:] < birth[4:])
            assert identity.patient_age == f"{age:03d}Y" and 40 <= age <= 81
            assert "20160101" <= study <= "20250301"


def test_mri_round_trip(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    image = (np.hypot(yy - 24, xx - 32) < 18) * (100.0 + xx).astype(np.float32)
    identity = make_identity(center="c1", patient_id="C1-0007", index=3, modality="MR", seed=7)
    kwargs = dict(identity=identity, pixel_spacing_mm=(0.7, 0.8), slice_thickness_mm=4.0,
                  repetition_time_ms=4200.0, echo_time_ms=95.0, field_strength_t=1.5,
                  manufacturer="SIEMENS", model="MAGNETOM Aera")
    write_mri(tmp_path / "a.dcm", image, **kwargs)
    write_mri(tmp_path / "b.dcm", image.copy(), **kwargs)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()

    ds = pydicom.dcmread(tmp_path / "a.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.8]
    assert (float(ds.SliceThickness), float(ds.RepetitionTime), float(ds.EchoTime),
            float(ds.MagneticFieldStrength)) == (4.0, 4200.0, 95.0, 1.5)
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SeriesDescription == "T2 SAG"
    assert ds.ScanningSequence == "SE" and ds.InstanceNumber == 4
    pixels = ds.pixel_array
    expected = np.rint(image / image.max() * 4095)
    assert pixels.max() == 4095 and np.array_equal(pixels, expected)
    assert 0 < float(ds.WindowWidth) <= 4095
    with pytest.raises(ValueError):
        write_mri(tmp_path / "neg.dcm", image - 1000.0, **kwargs)
