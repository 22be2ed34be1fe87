"""Burned-in calipers do not survive preprocessing, and removal leaves tissue alone.

Twins (simulations.cohort.caliper_twins): one exam written with and without the endometrial-
thickness calipers, for every scanner profile (the presets and one made up here) stored in every
photometric, in every caliper colour. Through the training preprocessing at 256 px, at most 10 %
of the calipers' contrast may survive; on the twin without calipers, removal may change at most
0.5 % of the fan's pixels.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from client.data.annotations import color_deviation, detect_flat_strokes
from client.data.preprocess import PreprocessConfig
from simulations.cohort.annotations import CALIPER_GREEN, CALIPER_YELLOW, display_palette
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
# Mid-gray strokes under lossy grayscale JPEG: compression noise breaks the one-exact-level
# signature and the tissue has 1-pixel speckle ridges of the same contrast (docs/shortcut_audit.md).
KNOWN_LIMIT = {("portable_ybr_cine", "MONOCHROME2")}
CASES = [
    pytest.param(name, photometric, id=f"{name}-{photometric.replace(' ', '_')}",
                 marks=[pytest.mark.xfail(strict=True, reason="mid-gray calipers in lossy grayscale JPEG")]
                 if (name, photometric) in KNOWN_LIMIT else [])
    for name in PROFILES for photometric in PHOTOMETRICS
]


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
