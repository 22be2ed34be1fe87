"""Decode every US and MR file shipped with pydicom and pydicom-data (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from helpers import dicom_sample_files

from client.data.decode import DicomDecodeError, decode_dicom

SAMPLES = dicom_sample_files()
BY_NAME = {name: path for name, path, _ in SAMPLES}

# genuinely corrupt files shipped as such, and the reason they must be quarantined with
CORRUPT = {
    "MR_truncated.dcm": "truncated pixel data",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated pixel data",
}

# every US sample: its tissue-region spacing in mm, or None (no Sequence of US Regions)
US_SPACING_MM = {
    "ExplVR_BigEnd.dcm": None,
    "examples_jpeg2k.dcm": None,
    "examples_palette.dcm": 0.2623,
    "examples_rgb_color.dcm": None,
    "examples_ybr_color.dcm": 0.5105,
    "color3d_jpeg_baseline.dcm": 0.5105,
    "color-pl.dcm": None,
    "color-px.dcm": None,
    "JPGLosslessP14SV1_1s_1f_8b.dcm": 0.2548,
    "OBXXXX1A.dcm": 0.2623,
    "OBXXXX1A_2frame.dcm": 0.2623,
    "OBXXXX1A_expb.dcm": 0.2623,
    "OBXXXX1A_expb_2frame.dcm": 0.2623,
    "OBXXXX1A_rle.dcm": 0.2623,
    "OBXXXX1A_rle_2frame.dcm": 0.2623,
    "US1_J2KI.dcm": None,
    "US1_J2KR.dcm": None,
    "US1_UNCI.dcm": None,
    "US1_UNCR.dcm": None,
    "gdcm-US-ALOKA-16.dcm": 0.3827,
    "gdcm-US-ALOKA-16_big.dcm": 0.3827,
}


def test_sample_set_is_complete() -> None:
    us_names = {name for name, _, modality in SAMPLES if modality == "US"}
    assert us_names == set(US_SPACING_MM)
    assert sum(1 for _, _, m in SAMPLES if m == "MR") >= 30


@pytest.mark.parametrize(("name", "path", "modality"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_every_sample_decodes_or_is_quarantined(name: str, path: Path, modality: str) -> None:
    base = Path(name).name
    if base in CORRUPT:
        with pytest.raises(DicomDecodeError) as info:
            decode_dicom(path)
        assert info.value.reason == CORRUPT[base]
        return
    image = decode_dicom(path, frame_policy="middle")
    header = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    assert image.modality == modality
    assert image.frames.dtype == np.float32
    assert image.frames.shape == (1, int(header.Rows), int(header.Columns))
    assert np.isfinite(image.frames).all()
    assert image.frames.min() >= 0.0 and image.frames.max() <= 1.0
    assert image.frames.std() > 0.01, "decoded to a flat image"
    assert image.frame_indices == (image.n_frames_total // 2,)
    if modality == "US":
        expected = US_SPACING_MM[base]
        if expected is None:
            assert image.spacing_mm is None and image.region is None
        else:
            assert image.spacing_mm == pytest.approx((expected, expected), abs=1e-4)
            x0, y0, x1, y1 = image.region
            assert 0 <= x0 < x1 < image.cols and 0 <= y0 < y1 < image.rows
    else:
        spacing = header.get("PixelSpacing")
        if spacing is None:
            assert image.spacing_mm is None
        else:
            assert image.spacing_mm == pytest.approx((float(spacing[0]), float(spacing[1])))


def _frames(name: str, **kwargs: object) -> np.ndarray:
    return decode_dicom(BY_NAME[name], **kwargs).frames  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reference", "variants", "tolerance"),
    [
        ("OBXXXX1A.dcm", ["OBXXXX1A_rle.dcm"], 0.0),
        # the big-endian copy's 16-bit LUT holds 0..255 (8-bit entries), the original v << 8:
        # scaled by 255 vs 65535 they differ by < 0.4 %
        ("OBXXXX1A.dcm", ["OBXXXX1A_expb.dcm"], 0.004),
        ("gdcm-US-ALOKA-16.dcm", ["gdcm-US-ALOKA-16_big.dcm"], 0.0),
        ("MR_small.dcm", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                          "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                          "MR_small_padded.dcm", "MR_small_expb.dcm"], 0.0),
        ("emri_small.dcm", ["emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                            "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"], 0.0),
        ("US1_UNCR.dcm", ["US1_J2KR.dcm"], 2 / 255),  # reversible colour transform (YBR_RCT)
        ("color-px.dcm", ["color-pl.dcm"], 0.0),  # RGB planar configuration 0 vs 1
    ],
)
def test_encodings_of_the_same_image_agree(reference: str, variants: list[str], tolerance: float) -> None:
    expected = _frames(reference, frame_policy="all")
    for variant in variants:
        np.testing.assert_allclose(_frames(variant, frame_policy="all"), expected, atol=tolerance + 1e-6,
                                   err_msg=variant)


def test_lossy_jpeg2000_ict_is_close_to_the_original() -> None:
    difference = np.abs(_frames("US1_J2KI.dcm") - _frames("US1_UNCI.dcm"))
    assert difference.mean() < 0.02


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm",
                                  "US1_J2KR.dcm", "examples_jpeg2k.dcm"])
def test_ybr_files_are_converted_to_rgb(name: str) -> None:
    """Gray B-mode stored as YBR must come back near-gray (unconverted YBR is green/purple)."""
    image = decode_dicom(BY_NAME[name])
    assert image.color_deviation is not None
    fan = image.frames[0] > 0.05
    assert np.median(image.color_deviation[0][fan]) < 0.03


def test_palette_16_bit_segmented_lut_uses_full_range() -> None:
    frames = _frames("gdcm-US-ALOKA-16.dcm")
    assert frames.max() > 0.9  # 16-bit LUT entries scaled by 65535, not clipped at 255


def test_multiframe_under_single_frame_sop_class() -> None:
    image = decode_dicom(BY_NAME["OBXXXX1A_2frame.dcm"], frame_policy="all")
    assert image.n_frames_total == 2 and image.frames.shape[0] == 2
    assert not np.array_equal(image.frames[0], image.frames[1])


def test_large_cine_middle_and_stride() -> None:
    path = BY_NAME["color3d_jpeg_baseline.dcm"]
    assert path.stat().st_size > 4 * 2**20
    middle = decode_dicom(path, frame_policy="middle")
    assert middle.n_frames_total == 120 and middle.frame_indices == (60,)
    strided = decode_dicom(path, frame_policy="stride", frame_stride=40)
    assert strided.frame_indices == (0, 40, 80)
    np.testing.assert_array_equal(strided.frames[1], decode_dicom(path, frame_policy="stride",
                                                                  frame_stride=20).frames[2])
