"""Photometric / encoding matrix and failure reasons on small hand-made DICOM files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import US_MULTIFRAME_STORAGE, build_dataset, save
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

import client.data.decode as decode_module
from client.data.decode import DicomDecodeError, decode_dicom, select_frame_indices

WriteDicom = Callable[..., Path]
LUMA = np.array([0.299, 0.587, 0.114])


def _gradient_rgb(rows: int = 16, cols: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    rgb = np.stack([xx * 12, yy * 15, (xx + yy) * 6], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _expected_luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float64) @ LUMA) / 255.0


def test_monochrome2_and_monochrome1(write_dicom: WriteDicom) -> None:
    pixels = np.arange(16 * 20, dtype=np.uint8).reshape(16, 20)
    mono2 = decode_dicom(write_dicom("m2.dcm", pixels))
    mono1 = decode_dicom(write_dicom("m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono2.frames[0], pixels / 255.0, atol=1e-6)
    np.testing.assert_allclose(mono1.frames[0], 1.0 - pixels / 255.0, atol=1e-6)
    assert mono2.color_deviation is None and mono2.photometric == "MONOCHROME2"


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb_planar_configurations(write_dicom: WriteDicom, planar: int) -> None:
    rgb = _gradient_rgb()
    image = decode_dicom(write_dicom(f"rgb{planar}.dcm", rgb, photometric="RGB", planar=planar))
    np.testing.assert_allclose(image.frames[0], _expected_luma(rgb), atol=1e-5)
    assert image.color_deviation is not None and image.color_deviation.shape == (1, 16, 20)


def test_ybr_full_is_converted_to_rgb_before_luminance(write_dicom: WriteDicom) -> None:
    rgb = _gradient_rgb()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    image = decode_dicom(write_dicom("ybr.dcm", ybr, photometric="YBR_FULL"))
    np.testing.assert_allclose(image.frames[0], _expected_luma(rgb), atol=3 / 255)


def test_rgb_big_endian(write_dicom: WriteDicom) -> None:
    rgb = _gradient_rgb()
    path = write_dicom("be.dcm", rgb, photometric="RGB", transfer_syntax=ExplicitVRBigEndian)
    image = decode_dicom(path)
    assert image.transfer_syntax == ExplicitVRBigEndian
    np.testing.assert_allclose(image.frames[0], _expected_luma(rgb), atol=1e-5)


def test_rle_compressed_multiframe(tmp_path: Path) -> None:
    frames = np.stack([np.full((12, 10), v, dtype=np.uint8) for v in (10, 100, 200)])
    ds = build_dataset(frames, sop_class=US_MULTIFRAME_STORAGE)
    ds.compress(RLELossless)
    path = save(ds, tmp_path / "rle.dcm")
    image = decode_dicom(path, frame_policy="all")
    assert image.transfer_syntax == RLELossless
    np.testing.assert_allclose(image.frames[:, 0, 0], [10 / 255, 100 / 255, 200 / 255], atol=1e-6)


def test_multiframe_under_single_frame_sop_class(write_dicom: WriteDicom) -> None:
    frames = np.stack([np.full((8, 8), 20 * k, dtype=np.uint8) for k in range(5)])
    path = write_dicom("mf.dcm", frames)  # default SOP class: single-frame US Image Storage
    assert decode_dicom(path).frame_indices == (2,)
    image = decode_dicom(path, frame_policy="stride", frame_stride=2)
    assert image.n_frames_total == 5 and image.frame_indices == (0, 2, 4)
    np.testing.assert_allclose(image.frames[:, 0, 0], [0.0, 40 / 255, 80 / 255], atol=1e-6)


def test_middle_policy_decodes_only_the_middle_frame(write_dicom: WriteDicom,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    frames = np.stack([np.full((8, 8), k, dtype=np.uint8) for k in range(7)])
    path = write_dicom("cine.dcm", frames, sop_class=US_MULTIFRAME_STORAGE)
    calls: list[object] = []
    real = decode_module.pixel_array

    def counting(src: object, **kwargs: object) -> np.ndarray:
        calls.append(kwargs.get("index"))
        return real(src, **kwargs)

    monkeypatch.setattr(decode_module, "pixel_array", counting)
    image = decode_dicom(path)
    assert calls == [3] and image.frames.shape == (1, 8, 8)


def test_invalid_number_of_frames_does_not_crash(tmp_path: Path) -> None:
    frames = np.stack([np.full((8, 8), 50 * k, dtype=np.uint8) for k in range(2)])
    ds = build_dataset(frames, transfer_syntax=ImplicitVRLittleEndian)
    ds.add_new(0x00280008, "LO", "2A")  # read back as IS "2A": invalid
    path = save(ds, tmp_path / "bad_is.dcm")
    image = decode_dicom(path, frame_policy="all")
    assert image.n_frames_total == 2  # inferred from the pixel data size
    assert any("NumberOfFrames" in note for note in image.notes)


def test_signed_mr_with_bits_stored_below_allocated(write_dicom: WriteDicom) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(-2048, 2048, size=(32, 32)).astype(np.int16)  # 12 bits stored, signed
    path = write_dicom("mr.dcm", pixels, modality="MR", sop_class="1.2.840.10008.5.1.4.1.1.4",
                       signed=True, bits_stored=12)
    image = decode_dicom(path)
    assert image.modality == "MR" and image.frames.min() == 0.0 and image.frames.max() == 1.0
    low, high = np.percentile(pixels, [0.5, 99.5])
    middle = pixels[5, 5]
    assert image.frames[0, 5, 5] == pytest.approx(np.clip((middle - low) / (high - low), 0, 1), abs=1e-4)


def test_bits_stored_12_of_16_ultrasound(write_dicom: WriteDicom) -> None:
    pixels = np.array([[0, 4095], [2048, 1024]], dtype=np.uint16)
    image = decode_dicom(write_dicom("us12.dcm", pixels, bits_stored=12))
    np.testing.assert_allclose(image.frames[0], pixels / 4095.0, atol=1e-6)


def test_region_in_cm_gives_spacing_in_mm(write_dicom: WriteDicom) -> None:
    pixels = np.zeros((40, 60), dtype=np.uint8)
    region = {"delta_cm": 0.025, "x0": 5, "y0": 4, "x1": 50, "y1": 70}  # y1 beyond the image
    image = decode_dicom(write_dicom("reg.dcm", pixels, region=region))
    assert image.spacing_mm == pytest.approx((0.25, 0.25))
    assert image.region == (5, 4, 50, 39)  # clipped to the image


def test_region_not_in_cm_or_missing_gives_no_spacing(write_dicom: WriteDicom) -> None:
    pixels = np.zeros((40, 60), dtype=np.uint8)
    in_seconds = decode_dicom(write_dicom("sec.dcm", pixels, region={"delta_cm": 0.01, "units": 4}))
    none = decode_dicom(write_dicom("none.dcm", pixels))
    assert in_seconds.spacing_mm is None and in_seconds.region is None
    assert none.spacing_mm is None and none.region is None


def test_enhanced_mr_functional_group_spacing(write_dicom: WriteDicom, tmp_path: Path) -> None:
    ds = build_dataset(np.arange(64, dtype=np.uint16).reshape(8, 8), modality="MR",
                       sop_class="1.2.840.10008.5.1.4.1.1.4.1")
    measures, shared = Dataset(), Dataset()
    measures.PixelSpacing = [0.7, 0.8]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    image = decode_dicom(save(ds, tmp_path / "emr.dcm"))
    assert image.spacing_mm == pytest.approx((0.7, 0.8))


def test_frame_policy_validation() -> None:
    assert select_frame_indices(1, "middle") == [0]
    assert select_frame_indices(4, "all") == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        select_frame_indices(4, "random")


def test_failure_reasons(tmp_path: Path, write_dicom: WriteDicom) -> None:
    good = write_dicom("good.dcm", np.full((64, 64), 7, dtype=np.uint8))
    data = good.read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(data[:-1000])
    (tmp_path / "text.dcm").write_bytes(b"patient,label\n1,0\n" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.3", "US"
    ds.save_as(tmp_path / "nopixels.dcm", implicit_vr=False, little_endian=True)
    expected = {
        "truncated.dcm": "truncated pixel data",
        "text.dcm": "not a DICOM file",
        "empty.dcm": "not a DICOM file (empty)",
        "nopixels.dcm": "no pixel data",
        "missing.dcm": "file not found",
    }
    for name, reason in expected.items():
        with pytest.raises(DicomDecodeError) as info:
            decode_dicom(tmp_path / name)
        assert info.value.reason == reason, name


def test_unsupported_transfer_syntax_is_named(write_dicom: WriteDicom, tmp_path: Path) -> None:
    ds = build_dataset(np.zeros((8, 8), dtype=np.uint8))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pixel decoder
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00abcd\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    ds["PixelData"].VR = "OB"
    path = tmp_path / "mpeg.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    with pytest.raises(DicomDecodeError) as info:
        decode_dicom(path)
    assert info.value.reason == "unsupported transfer syntax 1.2.840.10008.1.2.4.100"
