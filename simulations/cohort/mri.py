"""T2-weighted sagittal MRI of a participant: spin-echo contrast from tissue relaxation times,
partial-volume blur, a smooth bias field and Rician magnitude noise (no speckle).

Relaxation times follow ``shared/reference/realism.md`` §1.5 and §3: at 1.5 T endometrium
111 ms, outer myometrium 79 ms, junctional zone 50 ms, fat 135 ms; the tumour is intermediate
(lower than endometrium, higher than myometrium), so invasion shows as a break in the dark
junctional zone, as it does on real staging MRI.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from simulations.cohort.anatomy import Participant, Tissue, texture_field, tissue_map

__all__ = ["MriProfile", "MRI_PROFILES", "get_mri_profile", "mri_grid", "render_mri"]

# T2 at 1.5 T (ms), T1 at 1.5 T (ms), proton density (relative), heterogeneity (fraction).
_RELAXATION: dict[Tissue, tuple[float, float, float, float]] = {
    Tissue.PELVIC_FAT: (135.0, 260.0, 0.95, 0.05),
    Tissue.FLUID: (1500.0, 3000.0, 1.0, 0.01),
    Tissue.MYOMETRIUM: (79.0, 1300.0, 0.85, 0.04),
    Tissue.JUNCTIONAL_ZONE: (50.0, 1100.0, 0.8, 0.04),
    Tissue.ENDOMETRIUM: (111.0, 1300.0, 0.9, 0.04),
    Tissue.TUMOUR: (95.0, 1250.0, 0.9, 0.10),  # scaled per participant
    Tissue.CERVIX: (45.0, 1000.0, 0.75, 0.04),
    Tissue.FIBROID: (40.0, 1000.0, 0.75, 0.08),
    Tissue.POLYP: (100.0, 1200.0, 0.85, 0.05),
    Tissue.SEROSA: (60.0, 1000.0, 0.8, 0.03),
    Tissue.BOWEL_WALL: (60.0, 1000.0, 0.8, 0.06),
    Tissue.BOWEL_GAS: (30.0, 1000.0, 0.03, 0.0),
    Tissue.MUSCLE: (45.0, 900.0, 0.8, 0.04),
    Tissue.BONE: (50.0, 500.0, 0.35, 0.08),
    Tissue.AIR: (1.0, 1000.0, 0.0, 0.0),
}
_N = len(Tissue)
T2_MS = np.array([_RELAXATION[Tissue(i)][0] for i in range(_N)], dtype=np.float32)
T1_MS = np.array([_RELAXATION[Tissue(i)][1] for i in range(_N)], dtype=np.float32)
PROTON_DENSITY = np.array([_RELAXATION[Tissue(i)][2] for i in range(_N)], dtype=np.float32)
HETEROGENEITY = np.array([_RELAXATION[Tissue(i)][3] for i in range(_N)], dtype=np.float32)


@dataclass(frozen=True)
class MriProfile:
    """One center's MR scanner and pelvic T2 FSE sagittal protocol."""

    manufacturer: str
    model: str
    field_strength_t: float = 1.5  # T; at 3 T fat and endometrium T2 are shorter
    repetition_time_ms: float = 4000.0
    echo_time_ms: float = 100.0
    matrix: int = 256  # square acquisition/display matrix
    fov_mm: float = 200.0  # square field of view
    slice_thickness_mm: float = 4.0
    noise_fraction: float = 0.03  # Rician sigma relative to the outer-myometrium signal
    bias_strength: float = 0.3  # std of the log bias field
    bits_stored: int = 12


MRI_PROFILES: dict[str, MriProfile] = {
    "siemens_15t": MriProfile("SIEMENS", "Avanto", 1.5, 4000.0, 100.0, 256, 180.0, 4.0, 0.03, 0.3),
    "philips_3t": MriProfile("Philips", "Ingenia", 3.0, 3500.0, 90.0, 320, 160.0, 3.0, 0.02, 0.45),
    "ge_15t": MriProfile("GE MEDICAL SYSTEMS", "SIGNA Explorer", 1.5, 5000.0, 110.0, 256, 200.0, 4.0, 0.04, 0.25),
}


def get_mri_profile(name: str, **overrides: object) -> MriProfile:
    """Return the named MR profile with ``overrides`` (``None`` values ignored) applied."""
    if name not in MRI_PROFILES:
        raise KeyError(f"unknown MRI profile {name!r}; known: {sorted(MRI_PROFILES)}")
    return replace(MRI_PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


def mri_grid(profile: MriProfile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Body-frame coordinates (mm) of a sagittal slice's pixels, [matrix, matrix] each.

    Anterior is on the left and superior at the top, as on a sagittal PACS display; the field
    of view is centred near the uterus with a few millimetres and degrees of jitter.
    Returns ``(x, y, pixel_mm)``.
    """
    pixel = profile.fov_mm / profile.matrix
    centre = rng.normal(0.0, 8.0, 2) + np.array([5.0, 10.0])
    angle = np.deg2rad(rng.normal(0.0, 5.0))
    idx = (np.arange(profile.matrix, dtype=np.float32) - (profile.matrix - 1) / 2) * pixel
    rows, cols = np.meshgrid(idx, idx, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    return centre[0] + cols * c - rows * s, centre[1] + cols * s + rows * c, float(pixel)


def _t2_at_field(field_t: float) -> np.ndarray:
    """T2 per tissue at the field strength (fat and endometrium shorten at 3 T, §1.5)."""
    t2 = T2_MS.copy()
    if field_t >= 2.5:
        t2[Tissue.PELVIC_FAT] = 102.0
        t2[Tissue.ENDOMETRIUM] = 97.0
        t2[Tissue.MYOMETRIUM] = 76.0
    return t2


def render_mri(
    p: Participant, x: np.ndarray, y: np.ndarray, profile: MriProfile, rng: np.random.Generator,
    *, pixel_mm: float,
) -> np.ndarray:
    """Magnitude T2-weighted image (float32, arbitrary units >= 0) at body points ``x, y`` (mm).

    ``pixel_mm`` sets the partial-volume blur. The outer myometrium's noiseless signal is about 1.
    """
    tissue = tissue_map(p, x, y)
    t2 = _t2_at_field(profile.field_strength_t) * np.asarray(p.t2_scale, dtype=np.float32)
    t2[Tissue.TUMOUR] *= float(rng.uniform(0.9, 1.08))
    signal_per_tissue = (
        PROTON_DENSITY * (1 - np.exp(-profile.repetition_time_ms / T1_MS)) * np.exp(-profile.echo_time_ms / t2)
    )
    reference = signal_per_tissue[Tissue.MYOMETRIUM]
    signal = signal_per_tissue[tissue] / reference
    signal *= 1.0 + HETEROGENEITY[tissue] * texture_field(p.texture_seed + 1, x, y, scale_mm=4.0)
    blur_px = max(0.5, 0.6 / pixel_mm)  # in-plane partial volume / slice profile
    signal = ndimage.gaussian_filter(signal.astype(np.float32), blur_px)
    signal *= _bias_field(signal.shape, profile.bias_strength, rng)
    sigma = profile.noise_fraction
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    return np.hypot(real, imag).astype(np.float32)


def _bias_field(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative receive-coil inhomogeneity: exp of a random quadratic polynomial."""
    rows, cols = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = np.stack([rows, cols, rows * cols, rows**2 - 1 / 3, cols**2 - 1 / 3])
    coeffs = rng.normal(0.0, strength / 2, len(terms))
    return np.exp(np.tensordot(coeffs, terms, axes=1)).astype(np.float32)
