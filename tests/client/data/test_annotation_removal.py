"""Burned-in calipers do not survive preprocessing, and removal leaves tissue alone.

Twins (simulations.cohort.caliper_twins): one exam written with and without the endometrial-
thickness calipers, for every scanner profile (the presets and one made up here) stored in every
photometric, in every caliper colour. Through the training preprocessing at 256 px, at most 10 %
of the calipers' contrast may survive; on the twin without calipers, removal may change at most
0.5 % of the fan's pixels.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.data.annotations import color_deviation, detect_flat_strokes, local_background
from client.data.caliper_marks import detect_caliper_marks, find_caliper_marks
from client.data.preprocess import PreprocessConfig
from simulations.cohort.annotations import (
    CALIPER_GREEN,
    CALIPER_YELLOW,
    burn_in_annotations,
    display_palette,
)
from simulations.cohort.caliper_twins import (
    false_removal_fraction,
    photometric_variants,
    surviving_caliper_contrast,
    write_caliper_twins,
)
from simulations.cohort.scanners import PHOTOMETRICS, SCANNER_PROFILES, ScannerProfile

CONFIG = PreprocessConfig(output_size=256)
COLORS = {"yellow": CALIPER_YELLOW, "green": CALIPER_GREEN}
MAX_SURVIVING_CONTRAST = 0.1
MAX_FALSE_REMOVAL = 0.005

# Not a preset: blue tint, median speckle reduction, its own matrix, pixel size and layout.
MADE_UP = ScannerProfile(
    manufacturer="Test", model="Made-up", probe="T1", center_frequency_mhz=8.0, sector_angle_deg=110.0,
    depth_mm=66.0, gain_db=4.0, dynamic_range_db=52.0, gamma=0.9, speckle_reduction="median",
    speckle_reduction_strength=0.4, rows=520, cols=700, pixel_size_mm=0.22, tint="blue",
    annotation_layout="side",
)
PROFILES = {**SCANNER_PROFILES, "made_up": MADE_UP}
CASES = [pytest.param(name, photometric, id=f"{name}-{photometric.replace(' ', '_')}")
         for name in PROFILES for photometric in PHOTOMETRICS]


@pytest.mark.parametrize(("profile_name", "photometric"), CASES)
def test_calipers_removed_and_tissue_kept(profile_name: str, photometric: str, tmp_path: Path) -> None:
    profile = photometric_variants(PROFILES[profile_name])[photometric]
    surviving = {}
    for color_name, rgb in COLORS.items():
        twins = write_caliper_twins(tmp_path / color_name, profile, seed=3, caliper_color=rgb)
        surviving[color_name] = surviving_caliper_contrast(twins, CONFIG)
    false_removal = false_removal_fraction(twins.without_calipers, replace(CONFIG, output_size=None))
    print(f"{profile_name} {photometric} {profile.compression}: surviving {surviving}, false removal {false_removal:.4f}")
    assert max(surviving.values()) <= MAX_SURVIVING_CONTRAST, surviving
    assert false_removal <= MAX_FALSE_REMOVAL


@pytest.mark.parametrize("seed", [1, 9, 11])
def test_lossy_grayscale_calipers_on_tissue_of_their_own_level(seed: int, tmp_path: Path) -> None:
    """A green caliper stored as mid-gray baseline JPEG, on participants where it lies on tissue
    as bright as itself: one mark fails the shape test (its partner is found along the dotted
    line), the label's glyphs break up (joined by either edge), and a bright fan clips to 255
    (no flat stroke). These three once left 0.78, 0.11 and 0.88 of the contrast, and 1.9 % of
    seed 9's caliper-free fan was erased."""
    profile = photometric_variants(SCANNER_PROFILES["portable_ybr_cine"])["MONOCHROME2"]
    assert profile.compression == "jpeg_baseline"  # lossy: no exact level survives
    twins = write_caliper_twins(tmp_path, profile, seed=seed, caliper_color=CALIPER_GREEN)
    assert surviving_caliper_contrast(twins, CONFIG) <= MAX_SURVIVING_CONTRAST
    assert false_removal_fraction(twins.without_calipers, replace(CONFIG, output_size=None)) <= MAX_FALSE_REMOVAL


def test_calipers_left_in_place_are_measured_as_surviving(tmp_path: Path) -> None:
    """The measure is not blind: with removal off, the whole contrast survives."""
    twins = write_caliper_twins(tmp_path, SCANNER_PROFILES["premium_mono"], seed=3, caliper_color=CALIPER_GREEN)
    assert surviving_caliper_contrast(twins, replace(CONFIG, remove_annotations=False)) == pytest.approx(1.0)


def test_flat_strokes_find_a_mid_gray_line_and_not_speckle() -> None:
    rng = np.random.default_rng(0)
    speckle = np.clip(rng.rayleigh(0.2, size=(120, 160)), 0, 1).astype(np.float32)
    assert detect_flat_strokes(speckle).mean() < 0.001
    drawn = speckle.copy()
    drawn[60, 20:140:4] = drawn[60, 21:141:4] = 157 / 255  # a dotted line of 2-pixel dots
    found = detect_flat_strokes(drawn)
    line = np.zeros_like(found)
    line[60, 20:140:4] = line[60, 21:141:4] = True
    contrasted = line & (np.abs(speckle - 157 / 255) > 0.1)
    assert found[contrasted].mean() > 0.9


def test_sparse_caliper_level_does_not_define_the_tint() -> None:
    """A dark palette image: the only pixels of the caliper's brightness are the caliper's."""
    palette = display_palette("sepia").astype(np.float32) / 255
    rng = np.random.default_rng(1)
    levels = np.clip(rng.exponential(20, size=(200, 200)), 0, 120).astype(np.intp)
    rgb = palette[levels]
    rgb[100:102, 40:160] = np.asarray(CALIPER_GREEN, np.float32) / 255  # 0.7 % of the lit pixels
    deviation = color_deviation(rgb)
    assert deviation[100:102, 40:160].min() > 0.5
    tissue = levels > 3
    tissue[100:102, 40:160] = False
    assert np.percentile(deviation[tissue], 99.9) < 0.12


def _jpeg(gray: np.ndarray, quality: int = 85) -> np.ndarray:
    """uint8 ``[H, W]`` through a grayscale JPEG and back, float32 in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255


def test_caliper_marks_found_through_jpeg_and_not_in_speckle() -> None:
    """A green caliper stored as mid-gray JPEG has no exact level left; its shape finds it."""
    rng = np.random.default_rng(2)
    speckle = np.clip(rng.rayleigh(45, size=(160, 240)), 0, 255).astype(np.uint8)
    drawn = burn_in_annotations(
        np.repeat(speckle[..., None], 3, axis=2), layout="side", text_lines=[], calipers=[((60, 50), (110, 80))],
        caliper_label="D1 12.3 mm", depth_mm=80.0, fan_bbox=(0, 0, 239, 159), rng=np.random.default_rng(0),
        caliper_color=CALIPER_GREEN)
    gray = np.rint(drawn.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
    caliper = gray != speckle
    with_calipers, without = _jpeg(gray), _jpeg(speckle)
    assert detect_flat_strokes(with_calipers)[caliper].mean() < 0.5  # the exact level is gone
    found = detect_caliper_marks(with_calipers, local_background(with_calipers))
    visible = caliper & (np.abs(gray.astype(np.float32) - speckle) > 25)
    assert found[visible].mean() > 0.9
    assert not find_caliper_marks(without * 255, (without - local_background(without)) * 255)
    assert not detect_caliper_marks(without, local_background(without)).any()
