"""Fan mask, annotation removal, cropping and resizing on synthetic images with known pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from client.data.annotations import color_deviation, detect_annotations
from client.data.decode import decode_dicom
from client.data.fan import estimate_fan_mask
from client.data.preprocess import PreprocessConfig, preprocess, preprocess_detailed, square_window

RAW = PreprocessConfig(output_size=None, crop_to_region=False)


def test_fan_mask_matches_the_sector(fan_scene: dict[str, np.ndarray]) -> None:
    estimate = estimate_fan_mask(fan_scene["image"][None])
    truth = fan_scene["fan"]
    iou = (estimate.mask & truth).sum() / (estimate.mask | truth).sum()
    assert estimate.found and iou > 0.9
    assert estimate.mask[fan_scene["fluid"]].all(), "dark fluid inside the fan was cut out"
    assert not estimate.mask[fan_scene["text"]].any()


def test_fan_not_found_on_a_blank_image() -> None:
    estimate = estimate_fan_mask(np.zeros((1, 50, 60), dtype=np.float32))
    assert not estimate.found and estimate.mask.all()


def test_annotations_removed_and_tissue_kept(write_dicom: Callable[..., Path],
                                            fan_scene: dict[str, np.ndarray]) -> None:
    pixels = np.round(fan_scene["image"] * 255).astype(np.uint8)
    decoded = decode_dicom(write_dicom("fan.dcm", pixels))
    out = preprocess(decoded, RAW)[0]
    original = decoded.frames[0]
    assert out.shape == original.shape
    assert out[fan_scene["text"]].max() == 0.0  # text outside the fan is gone
    assert out[fan_scene["caliper"]].max() < 0.7  # white caliper in-painted...
    assert out[fan_scene["caliper"]].mean() == pytest.approx(0.37, abs=0.1)  # ...with tissue level
    away = fan_scene["fan"] & ~detect_annotations(original)
    kept = np.abs(out[away] - original[away]) < 1e-6
    assert kept.mean() > 0.97  # tissue left untouched
    untouched = fan_scene["fan"] & (np.abs(out - original) < 1e-6)
    assert untouched.sum() > 0.9 * fan_scene["fan"].sum()


def test_coloured_caliper_removed_in_tinted_image(write_dicom: Callable[..., Path],
                                                 fan_scene: dict[str, np.ndarray]) -> None:
    gray = fan_scene["image"].copy()
    gray[fan_scene["caliper"]] = gray[~fan_scene["caliper"] & fan_scene["fan"]].mean()
    sepia = np.stack([gray, gray * 0.85, gray * 0.65], axis=-1)  # a tint map, not annotation
    yellow = np.zeros_like(fan_scene["fan"])
    yellow[60:63, 150:190] = True  # a yellow measurement bar inside the fan
    sepia[yellow] = [0.9, 0.9, 0.1]
    rgb = np.round(sepia * 255).astype(np.uint8)
    deviation = color_deviation(rgb.astype(np.float32) / 255)
    assert deviation[yellow].min() > 0.12
    assert (deviation[fan_scene["fan"] & ~yellow] > 0.12).mean() < 0.01  # tint is not "colour"
    decoded = decode_dicom(write_dicom("sepia.dcm", rgb, photometric="RGB"))
    out = preprocess(decoded, RAW)[0]
    luma_before = decoded.frames[0][yellow].mean()
    assert luma_before > 0.75
    assert out[yellow].max() < 0.6


def test_crop_to_region_then_apex_or_letterbox(write_dicom: Callable[..., Path]) -> None:
    pixels = np.zeros((100, 200), dtype=np.uint8)
    pixels[20:80, 50:150] = 120
    pixels[20:80, 50:70] = 240  # the region's left edge: outside the apex square
    region = {"delta_cm": 0.02, "x0": 50, "y0": 20, "x1": 149, "y1": 79}
    decoded = decode_dicom(write_dicom("crop.dcm", pixels, region=region))
    raw = {"mask_fan": False, "remove_annotations": False}
    cropped = preprocess(decoded, PreprocessConfig(output_size=None, **raw))
    assert cropped.shape == (1, 60, 100) and np.allclose(cropped[:, :, 20:], 120 / 255)
    fan = preprocess_detailed(decoded, PreprocessConfig(output_size=50, field_of_view="fan", **raw))
    assert fan.image.shape == (1, 50, 50) and fan.image.dtype == np.float32
    assert fan.image[:, :8].max() == 0.0 and fan.image[:, 25].min() > 0.4  # letterboxed
    assert fan.image[:, 25, :5].min() > 0.8  # the bright edge is kept
    assert fan.spacing_mm == pytest.approx((0.4, 0.4))  # 0.2 mm * 100/50
    apex = preprocess_detailed(decoded, PreprocessConfig(output_size=50, **raw))  # the default
    assert apex.image.shape == (1, 50, 50) and np.allclose(apex.image, 120 / 255, atol=0.01)  # all tissue
    assert apex.spacing_mm == pytest.approx((0.24, 0.24))  # 0.2 mm * 60/50


def test_square_window() -> None:
    assert square_window(60, 100, "apex") == (0, 20, 60)  # depth x depth under the apex
    assert square_window(60, 100, "fan") == (-20, 0, 100)  # padded above and below
    assert square_window(100, 60, "apex") == square_window(100, 60, "fan") == (0, -20, 100)
    with pytest.raises(ValueError, match="field_of_view"):
        PreprocessConfig(field_of_view="wide")


def test_resample_to_target_spacing(write_dicom: Callable[..., Path]) -> None:
    pixels = np.full((40, 60), 90, dtype=np.uint8)
    decoded = decode_dicom(write_dicom("sp.dcm", pixels, region={"delta_cm": 0.05}))
    cfg = PreprocessConfig(output_size=None, target_spacing_mm=1.0, mask_fan=False)
    out = preprocess_detailed(decoded, cfg)
    assert out.image.shape == (1, 20, 30) and out.spacing_mm == (1.0, 1.0)


def test_mr_is_not_fan_masked(write_dicom: Callable[..., Path]) -> None:
    pixels = np.zeros((32, 32), dtype=np.uint16)
    pixels[8:24, 8:24] = 500
    pixels[0, 0] = 1000
    decoded = decode_dicom(write_dicom("mr.dcm", pixels, modality="MR"))
    result = preprocess_detailed(decoded, PreprocessConfig(output_size=16))
    assert result.fan_found is None and result.image.shape == (1, 16, 16)


def test_cache_key_is_stable_and_config_sensitive() -> None:
    assert PreprocessConfig().cache_key() == PreprocessConfig().cache_key()
    keys = {PreprocessConfig().cache_key(), PreprocessConfig(output_size=128).cache_key(),
            PreprocessConfig(mask_fan=False).cache_key(),
            PreprocessConfig(frame_policy="all").cache_key()}
    assert len(keys) == 4
    with pytest.raises(ValueError):
        PreprocessConfig(frame_policy="nope")
