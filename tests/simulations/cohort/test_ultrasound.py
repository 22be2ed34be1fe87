"""B-mode rendering: speckle statistics, geometry, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from simulations.cohort.anatomy import Tissue, sample_participant
from simulations.cohort.scanners import SCANNER_PROFILES, get_scanner_profile
from simulations.cohort.ultrasound import fan_geometry, fan_mask, render_ultrasound

RAYLEIGH_SNR = np.sqrt(np.pi / (4 - np.pi))  # 1.913: mean/std of a Rayleigh envelope


def _envelope_snr(envelope: np.ndarray, tissue: np.ndarray, kind: Tissue) -> float:
    """Local mean/std of the envelope inside one tissue.

    The envelope is divided by its local mean (normalised Gaussian average over ~16 samples,
    inside the tissue only), which removes TGC, attenuation and slow heterogeneity but keeps the
    speckle; samples within 3 samples of another tissue are left out so the PSF does not mix them.
    """
    region = (tissue == kind).astype(np.float32)
    inside = ndimage.binary_erosion(region > 0, iterations=3)
    assert inside.sum() >= 500, f"too little {kind.name} in the image"
    local_mean = ndimage.gaussian_filter(envelope * region, 8.0) / np.maximum(ndimage.gaussian_filter(region, 8.0), 1e-6)
    e = envelope[inside] / local_mean[inside]
    return float(e.mean() / e.std())


@pytest.mark.parametrize("scanner", ["premium_mono", "legacy_palette"])
def test_fully_developed_speckle_has_rayleigh_statistics(scanner: str) -> None:
    profile = get_scanner_profile(scanner, rows=300, cols=400, noise_floor_db=-90.0)
    snrs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        p = sample_participant(rng, "p", label=0, hard_negative_rate=0.0)
        render = render_ultrasound(p, profile, rng, n_frames=1, keep_debug=True)
        snrs.append(_envelope_snr(render.envelope, render.tissue_polar, Tissue.MYOMETRIUM))
    assert np.mean(snrs) == pytest.approx(RAYLEIGH_SNR, abs=0.12)


def test_heterogeneous_tumour_texture_is_not_rayleigh() -> None:
    """Tumour uses a low K-distribution shape: a spikier envelope than fully developed speckle."""
    profile = get_scanner_profile("premium_mono", rows=300, cols=400, noise_floor_db=-90.0)
    rng = np.random.default_rng(7)
    p = sample_participant(rng, "p", label=1, deep_fraction=1.0)
    render = render_ultrasound(p, profile, rng, n_frames=1, keep_debug=True)
    assert _envelope_snr(render.envelope, render.tissue_polar, Tissue.TUMOUR) < 1.7


def test_fluid_is_anechoic() -> None:
    profile = get_scanner_profile("midrange_rgb", rows=300, cols=400)
    rng = np.random.default_rng(11)
    p = sample_participant(rng, "p", label=0, hard_negative_rate=0.0)
    render = render_ultrasound(p, profile, rng, n_frames=1, keep_debug=True)
    env, tissue = render.envelope, render.tissue_polar
    fluid = np.median(env[ndimage.binary_erosion(tissue == Tissue.FLUID, iterations=3)])
    fat = np.median(env[ndimage.binary_erosion(tissue == Tissue.PELVIC_FAT, iterations=3)])
    assert fluid < fat / 4  # over 12 dB darker: black on a 40-80 dB display, only noise left


@pytest.mark.parametrize("name", sorted(SCANNER_PROFILES))
def test_fan_fits_the_matrix_and_region(name: str) -> None:
    profile = SCANNER_PROFILES[name]
    geom = fan_geometry(profile)
    mask = fan_mask(geom)
    x0, y0, x1, y1 = geom.bbox
    assert 0 <= x0 < x1 < profile.cols and 0 <= y0 < y1 < profile.rows
    rows, cols = np.nonzero(mask)
    assert cols.min() >= x0 - 1 and cols.max() <= x1 + 1 and rows.min() >= y0 - 1 and rows.max() <= y1 + 1
    assert mask.mean() > 0.15  # the fan uses most of the screen, text sits in the margins
    assert geom.pixel_mm >= profile.pixel_size_mm


def test_same_generator_state_gives_the_same_frames_and_cine_frames_differ() -> None:
    profile = get_scanner_profile("portable_ybr_cine", rows=120, cols=160)
    p = sample_participant(np.random.default_rng(1), "p", label=1)
    a = render_ultrasound(p, profile, np.random.default_rng(5))
    b = render_ultrasound(p, profile, np.random.default_rng(5))
    assert a.frames.shape == (profile.cine_frames, 120, 160)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames[0], a.frames[1])  # probe motion and speckle decorrelation
    assert (a.frames[:, ~a.fan] == 0).all()


def test_fast_median_equals_scipy() -> None:
    from simulations.cohort.ultrasound import _median3x3

    image = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    np.testing.assert_array_equal(_median3x3(image), ndimage.median_filter(image, size=3, mode="nearest"))
