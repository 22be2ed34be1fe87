"""Tint maps, palette and burned-in annotations of the synthetic ultrasound screens."""

from __future__ import annotations

import time

import numpy as np
import pytest

from simulations.cohort.annotations import (
    ANNOTATION_COLORS,
    CALIPER_GREEN,
    CALIPER_YELLOW,
    LAYOUTS,
    PALETTE_GRAY_LEVELS,
    TEXT_RGB,
    TINTS,
    apply_tint,
    burn_in_annotations,
    display_palette,
    screen_text_lines,
)
from simulations.cohort.scanners import SCANNER_PROFILES

LINES = ["St. Synthetic Hospital", "ID: C1-0007", "2023/04/12 10:15", "ICTx GYN/TV", "6.5MHz",
         "D 8.5cm", "G52 DR60", "FR 25Hz"]


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _inside(bbox: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    x0, y0, x1, y1 = bbox
    inside = np.zeros(shape[:2], bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    return inside


def _color_mask(rgb: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(rgb == np.asarray(color, np.uint8), axis=-1)


@pytest.mark.parametrize("tint", TINTS)
def test_tint_is_monotone_in_luminance_and_spans_black_to_white(tint: str) -> None:
    levels = np.arange(256, dtype=np.uint8)[None, :]
    rgb = apply_tint(levels, tint)
    assert rgb.shape == (1, 256, 3) and rgb.dtype == np.uint8
    luma = _luma(rgb[0])
    assert np.all(np.diff(luma) >= 0)
    assert np.all(np.diff(rgb[0].astype(int), axis=0) >= 0)  # every channel monotone too
    assert luma[0] == 0 and luma[-1] > 250


def test_gray_tint_is_identity_and_colour_tints_are_coloured() -> None:
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(apply_tint(gray, "gray"), np.repeat(gray[..., None], 3, axis=-1))
    mid = np.full((1, 1), 128, np.uint8)
    r, g, b = apply_tint(mid, "sepia")[0, 0].astype(int)
    assert r > g > b
    r, g, b = apply_tint(mid, "blue")[0, 0].astype(int)
    assert b > g > r
    with pytest.raises(ValueError):
        apply_tint(mid, "green")


@pytest.mark.parametrize("tint", TINTS)
def test_palette_represents_tint_levels_and_annotation_colours(tint: str) -> None:
    palette = display_palette(tint)
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert [tuple(c) for c in palette[PALETTE_GRAY_LEVELS:]] == list(ANNOTATION_COLORS)
    tint_luma = _luma(apply_tint(np.arange(256, dtype=np.uint8)[None], tint)[0])
    palette_luma = _luma(palette[:PALETTE_GRAY_LEVELS])
    nearest_error = np.abs(tint_luma[:, None] - palette_luma[None, :]).min(axis=1)
    assert nearest_error.max() <= 1.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_and_graphics_stay_outside_the_fan(layout: str, fan_factory) -> None:
    fan = fan_factory(240, 320, seed=1, top_margin=60, side_margin=70)
    rgb = apply_tint(fan.gray, "sepia")
    out = burn_in_annotations(rgb, layout=layout, text_lines=LINES, calipers=[],
                              caliper_label=None, depth_mm=80.0, fan_bbox=fan.bbox,
                              rng=np.random.default_rng(0))
    changed = np.any(out != rgb, axis=-1)
    assert _color_mask(out, TEXT_RGB).sum() > 200  # several lines of text were burned in
    assert changed.any() and not np.any(changed & _inside(fan.bbox, out.shape))
    assert np.array_equal(rgb, apply_tint(fan.gray, "sepia"))  # input untouched


def test_calipers_and_their_label_lie_inside_the_fan(fan_factory) -> None:
    fan = fan_factory(240, 320, seed=2, top_margin=60, side_margin=70)
    rgb = apply_tint(fan.gray, "gray")
    x0, y0, x1, y1 = fan.bbox
    cx = (x0 + x1) / 2
    calipers = [((cx, y0 + 40.0), (cx + 4.0, y0 + 90.0))]
    kwargs = dict(layout="top_left", text_lines=LINES, calipers=calipers,
                  caliper_label="D1 12.3 mm", depth_mm=80.0, fan_bbox=fan.bbox)
    out = burn_in_annotations(rgb, rng=np.random.default_rng(5), **kwargs)
    caliper = _color_mask(out, CALIPER_YELLOW) | _color_mask(out, CALIPER_GREEN)
    inside = _inside(fan.bbox, out.shape)
    changed = np.any(out != rgb, axis=-1)
    assert not np.any(caliper & ~inside)
    assert np.array_equal(changed & inside, caliper & inside)  # only caliper pixels in the fan
    for (x, y) in calipers[0]:
        assert caliper[int(round(y)), int(round(x))]  # the mark's centre
    right_of_marks = caliper[:, int(cx + 4 + 6) :]
    assert right_of_marks.sum() > 20  # the "D1 12.3 mm" label beside the lower mark
    again = burn_in_annotations(rgb, rng=np.random.default_rng(5), **kwargs)
    assert np.array_equal(out, again)


def test_calipers_near_the_edge_are_clipped_to_the_fan(fan_factory) -> None:
    fan = fan_factory(120, 160, seed=3)
    rgb = apply_tint(fan.gray, "blue")
    x0, y0, x1, y1 = fan.bbox
    out = burn_in_annotations(rgb, layout="side", text_lines=[], calipers=[((x1, y1), (x1 - 10.0, y1 - 10.0))],
                              caliper_label="D1 3.1 mm", depth_mm=60.0, fan_bbox=fan.bbox,
                              rng=np.random.default_rng(0))
    caliper = _color_mask(out, CALIPER_YELLOW) | _color_mask(out, CALIPER_GREEN)
    assert caliper[y1, x1] and not np.any(caliper & ~_inside(fan.bbox, out.shape))


def test_no_margin_means_no_text(fan_factory) -> None:
    rgb = np.zeros((60, 80, 3), np.uint8)
    out = burn_in_annotations(rgb, layout="top_bar", text_lines=LINES, calipers=[],
                              caliper_label=None, depth_mm=50.0, fan_bbox=(0, 0, 79, 59),
                              rng=np.random.default_rng(0))
    assert not out.any()


def test_screen_text_lines_show_the_exam() -> None:
    profile = SCANNER_PROFILES["portable_ybr_cine"]
    lines = screen_text_lines(profile, institution="Clinic", patient_id="C3-0042",
                              study_date="20230412", study_time="101530")
    text = " ".join(lines)
    assert "C3-0042" in text and "2023/04/12 10:15" in text and "6.0MHz" in text
    assert profile.probe in text and f"D {profile.depth_mm / 10:.1f}cm" in text


def test_burn_in_takes_a_few_ms_per_frame(fan_factory) -> None:
    fan = fan_factory(480, 640, seed=4, top_margin=70, side_margin=40)
    rgb = apply_tint(fan.gray, "sepia")
    x0, y0, x1, y1 = fan.bbox
    calipers = [(((x0 + x1) / 2, y0 + 80.0), ((x0 + x1) / 2, y0 + 160.0))]
    rng = np.random.default_rng(0)
    burn_in_annotations(rgb, layout="top_left", text_lines=LINES, calipers=calipers,
                        caliper_label="D1 12.3 mm", depth_mm=80.0, fan_bbox=fan.bbox, rng=rng)
    start = time.perf_counter()
    for _ in range(20):
        burn_in_annotations(rgb, layout="top_left", text_lines=LINES, calipers=calipers,
                            caliper_label="D1 12.3 mm", depth_mm=80.0, fan_bbox=fan.bbox, rng=rng)
    assert (time.perf_counter() - start) / 20 < 0.02
