"""Shared fixtures: a small synthetic B-mode fan, like the cohort renderer draws one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class SyntheticFan:
    """A speckle fan: gray uint8 [H, W], its mask, inclusive bbox (x0, y0, x1, y1) and apex."""

    gray: np.ndarray
    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    apex_xy: tuple[float, float]


def make_fan(rows: int, cols: int, seed: int, *, top_margin: int = 24, side_margin: int = 30) -> SyntheticFan:
    """Sector of half-angle 60 deg below an apex near the top, filled with smoothed speckle."""
    half_angle = np.radians(60.0)
    radius = min(rows - top_margin - 6, (cols / 2 - side_margin) / np.sin(half_angle))
    inner = 0.12 * radius
    apex = (cols / 2.0, top_margin - inner * np.cos(half_angle))
    yy, xx = np.mgrid[0:rows, 0:cols]
    r = np.hypot(xx - apex[0], yy - apex[1])
    theta = np.arctan2(xx - apex[0], yy - apex[1])
    mask = (r >= inner) & (r <= radius) & (np.abs(theta) <= half_angle)
    rng = np.random.default_rng(seed)
    speckle = np.hypot(*(gaussian_filter(rng.standard_normal((rows, cols)), 1.2) for _ in range(2)))
    gray = np.clip(speckle / speckle.mean() * 70.0, 0, 255) * mask
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return SyntheticFan(gray.astype(np.uint8), mask, bbox, apex)


@pytest.fixture
def fan_factory() -> Callable[..., SyntheticFan]:
    return make_fan
