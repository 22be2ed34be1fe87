"""Transvaginal B-mode rendering of a participant, numpy/scipy only.

The pipeline follows ``shared/reference/realism.md`` §2.4, in the polar (depth, beam angle)
domain of a micro-convex endocavitary probe:

1. tissue classes at every polar sample, from :func:`anatomy.tissue_map`;
2. complex reflectivity: a circular Gaussian field scaled by the tissue's mean backscatter
   (dB), a smooth heterogeneity field fixed in the body, and a Gamma (K-distribution) texture
   per tissue; fully developed regions give a Rayleigh envelope (mean/std 1.91);
3. a separable Gaussian PSF: axial width from the bandwidth, lateral width growing away from
   the focus (three depth bands, as in convolution-along-lines simulators);
4. round-trip attenuation integrated along each ray (fluid enhances, fibroids and gas shadow);
5. complex electronic noise, then an imperfect, center-specific TGC and gain;
6. envelope, log compression to the dynamic range, gray map, optional speckle reduction;
7. scan conversion onto the Cartesian pixel grid, zero outside the fan.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from simulations.cohort.anatomy import Participant, Tissue, texture_field, tissue_map
from simulations.cohort.scanners import ScannerProfile

__all__ = ["FanPose", "FanGeometry", "UltrasoundRender", "sample_fan_pose", "fan_geometry",
           "pixel_body_coords", "body_to_pixel", "render_ultrasound"]

SPEED_OF_SOUND_MM_PER_US = 1.54

# Mean backscatter relative to outer myometrium (dB), heterogeneity amplitude (dB, std of a
# smooth field), K-distribution shape (large = fully developed speckle) and one-way attenuation
# (dB/cm/MHz; uterus 4.2 dB/cm at 5 MHz, fibroid 5.1, cervix 6.3 per realism.md §2.1).
_ACOUSTICS: dict[Tissue, tuple[float, float, float, float]] = {
    Tissue.PELVIC_FAT: (-4.0, 3.5, 3.0, 0.6),
    Tissue.FLUID: (-42.0, 0.0, 100.0, 0.01),
    Tissue.MYOMETRIUM: (0.0, 1.0, 30.0, 0.84),
    Tissue.JUNCTIONAL_ZONE: (-8.0, 1.0, 30.0, 0.84),
    Tissue.ENDOMETRIUM: (6.0, 1.5, 12.0, 0.8),
    Tissue.TUMOUR: (0.0, 3.0, 1.5, 0.95),  # level set per participant
    Tissue.CERVIX: (1.0, 1.0, 15.0, 1.26),
    Tissue.FIBROID: (-5.0, 2.5, 4.0, 1.6),
    Tissue.POLYP: (8.0, 1.0, 20.0, 0.8),
    Tissue.SEROSA: (9.0, 1.0, 20.0, 0.9),
    Tissue.BOWEL_WALL: (4.0, 2.0, 5.0, 1.0),
    Tissue.BOWEL_GAS: (16.0, 3.0, 1.5, 12.0),
    Tissue.MUSCLE: (-6.0, 1.5, 20.0, 1.0),
    Tissue.BONE: (15.0, 2.0, 5.0, 12.0),
    Tissue.AIR: (-60.0, 0.0, 100.0, 20.0),
}
_N = len(Tissue)
ECHO_DB = np.array([_ACOUSTICS[Tissue(i)][0] for i in range(_N)], dtype=np.float32)
HETEROGENEITY_DB = np.array([_ACOUSTICS[Tissue(i)][1] for i in range(_N)], dtype=np.float32)
K_SHAPE = np.array([_ACOUSTICS[Tissue(i)][2] for i in range(_N)], dtype=np.float32)
ATTENUATION_DB_CM_MHZ = np.array([_ACOUSTICS[Tissue(i)][3] for i in range(_N)], dtype=np.float32)
NOMINAL_ATTENUATION = 0.8  # dB/cm/MHz a TGC preset assumes
STRONGEST_ECHO_DB = 25.0  # specular echoes vs soft-tissue backscatter: the noise floor's reference
DISPLAY_TISSUE_LEVEL = 0.42  # where outer myometrium (0 dB) sits in the display range at 0 dB gain


@dataclass(frozen=True)
class FanPose:
    """Where the probe is: virtual apex (body mm), direction of the central ray, display mirror."""

    apex_x: float
    apex_y: float
    axis_angle: float  # rad, direction of the central ray in the body frame (0 = superior)
    mirror: bool = False

    def jittered(self, rng: np.random.Generator, shift_mm: float, angle_deg: float) -> FanPose:
        """A slightly moved probe (cine frames, operator hand motion)."""
        return FanPose(
            self.apex_x + float(rng.normal(0, shift_mm)), self.apex_y + float(rng.normal(0, shift_mm)),
            self.axis_angle + float(np.deg2rad(rng.normal(0, angle_deg))), self.mirror,
        )


@dataclass(frozen=True)
class FanGeometry:
    """Pixel layout of the scan-converted fan inside the stored image matrix."""

    rows: int
    cols: int
    pixel_mm: float  # isotropic pixel size
    apex_row: float  # pixel coordinates of the virtual apex (may lie above row 0)
    apex_col: float
    apex_radius_mm: float
    depth_mm: float
    half_angle: float  # rad
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive: the 2D tissue region


def sample_fan_pose(p: Participant, rng: np.random.Generator, *, mirror: bool) -> FanPose:
    """Probe in the anterior vaginal fornix against the cervix, aimed at the uterine body (+-12 deg)."""
    ut = p.uterus
    ang = ut.axis_angle
    du = np.array([np.sin(-ang), -np.cos(ang)])
    anterior = np.array([-np.cos(ang), np.sin(ang)])
    os_u = ut.cavity_low - ut.cervix_length_mm
    apex = (os_u + rng.uniform(2.0, 10.0)) * du + anterior * (ut.cervix_half_width_mm + rng.uniform(2.0, 6.0))
    apex = apex + rng.normal(0, 2.0, 2)
    aim = -apex / (np.linalg.norm(apex) + 1e-6)
    axis = float(np.arctan2(-aim[0], -aim[1])) + float(np.deg2rad(rng.uniform(-12, 12)))
    return FanPose(float(apex[0]), float(apex[1]), axis, mirror)


def fan_geometry(profile: ScannerProfile) -> FanGeometry:
    """Fit the profile's fan into its image matrix, leaving margins for burned-in text."""
    half = np.deg2rad(profile.sector_angle_deg) / 2
    r_max = profile.apex_radius_mm + profile.depth_mm
    width_mm = 2 * r_max * np.sin(min(half, np.pi / 2))
    top_mm = profile.apex_radius_mm * np.cos(half)
    height_mm = r_max - top_mm
    left = 0.2 if profile.annotation_layout == "side" else 0.04
    top = 0.05 if profile.annotation_layout == "side" else 0.1
    usable_w, usable_h = profile.cols * (1 - left - 0.04), profile.rows * (1 - top - 0.04)
    pixel = max(profile.pixel_size_mm, width_mm / usable_w, height_mm / usable_h)
    centre_col = profile.cols * left + usable_w / 2
    apex_row = profile.rows * top - top_mm / pixel
    x0 = int(np.floor(centre_col - width_mm / 2 / pixel))
    x1 = int(np.ceil(centre_col + width_mm / 2 / pixel))
    y0 = int(np.floor(profile.rows * top))
    y1 = int(np.ceil(apex_row + r_max / pixel))
    return FanGeometry(
        rows=profile.rows, cols=profile.cols, pixel_mm=float(pixel), apex_row=float(apex_row),
        apex_col=float(centre_col), apex_radius_mm=profile.apex_radius_mm, depth_mm=profile.depth_mm,
        half_angle=float(half),
        bbox=(max(x0, 0), max(y0, 0), min(x1, profile.cols - 1), min(y1, profile.rows - 1)),
    )


def _fan_to_body(pose: FanPose, lateral: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-frame offsets from the apex (mm; depth along the central ray) -> body frame (mm)."""
    a = np.array([np.sin(-pose.axis_angle), -np.cos(pose.axis_angle)], dtype=np.float32)
    b = np.array([-a[1], a[0]], dtype=np.float32) * (-1.0 if pose.mirror else 1.0)
    return pose.apex_x + depth * a[0] + lateral * b[0], pose.apex_y + depth * a[1] + lateral * b[1]


def pixel_body_coords(geom: FanGeometry, pose: FanPose) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame coordinates (mm) of every pixel centre of the image matrix, [rows, cols] each."""
    rows, cols = np.mgrid[0 : geom.rows, 0 : geom.cols].astype(np.float32)
    lateral = (cols - geom.apex_col) * geom.pixel_mm
    depth = (rows - geom.apex_row) * geom.pixel_mm
    return _fan_to_body(pose, lateral, depth)


def body_to_pixel(geom: FanGeometry, pose: FanPose, x: float, y: float) -> tuple[float, float]:
    """Body-frame point (mm) -> pixel (col, row) of the image matrix."""
    a = np.array([np.sin(-pose.axis_angle), -np.cos(pose.axis_angle)])
    b = np.array([-a[1], a[0]]) * (-1.0 if pose.mirror else 1.0)
    d = np.array([x - pose.apex_x, y - pose.apex_y])
    return float(geom.apex_col + d @ b / geom.pixel_mm), float(geom.apex_row + d @ a / geom.pixel_mm)


def fan_mask(geom: FanGeometry) -> np.ndarray:
    """Boolean [rows, cols]: pixels inside the acquired sector."""
    rows, cols = np.mgrid[0 : geom.rows, 0 : geom.cols].astype(np.float32)
    dx = (cols - geom.apex_col) * geom.pixel_mm
    dy = (rows - geom.apex_row) * geom.pixel_mm
    r = np.hypot(dx, dy)
    theta = np.arctan2(dx, dy)
    return (r >= geom.apex_radius_mm) & (r <= geom.apex_radius_mm + geom.depth_mm) & (np.abs(theta) <= geom.half_angle)


@dataclass(frozen=True)
class UltrasoundRender:
    """One rendered exam: display frames and the geometry needed to store and annotate them."""

    frames: np.ndarray  # uint8 [F, rows, cols], 0 outside the fan
    geometry: FanGeometry
    pose: FanPose  # pose of the first frame
    fan: np.ndarray  # bool [rows, cols]
    envelope: np.ndarray | None = None  # float32 [n_r, n_theta] linear envelope of frame 0 (debug)
    tissue_polar: np.ndarray | None = None  # uint8 [n_r, n_theta] (debug)


def _polar_grid(profile: ScannerProfile, geom: FanGeometry) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Depth samples r (mm from the apex) and beam angles theta (rad), with their spacings."""
    wavelength = SPEED_OF_SOUND_MM_PER_US / profile.center_frequency_mhz
    axial_fwhm = SPEED_OF_SOUND_MM_PER_US / (2 * profile.center_frequency_mhz * profile.fractional_bandwidth)
    lateral_fwhm_focus = 3.0 * wavelength
    dr = max(0.5 * axial_fwhm, 0.6 * geom.pixel_mm)
    r_mid = geom.apex_radius_mm + geom.depth_mm / 2
    dtheta = max(0.5 * lateral_fwhm_focus, 0.7 * geom.pixel_mm) / r_mid
    n_r = int(np.ceil(geom.depth_mm / dr)) + 1
    n_t = int(np.ceil(2 * geom.half_angle / dtheta)) + 1
    r = geom.apex_radius_mm + np.arange(n_r, dtype=np.float32) * dr
    theta = np.linspace(-geom.half_angle, geom.half_angle, n_t, dtype=np.float32)
    return r, theta, dr, float(theta[1] - theta[0])


def _unit_energy_blur(field: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur along ``axis`` rescaled to unit energy, so speckle level is grid-independent."""
    if sigma < 0.3:
        return field
    radius = int(4 * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    return ndimage.convolve1d(field, kernel, axis=axis, mode="nearest")


def _psf(z: np.ndarray, profile: ScannerProfile, r: np.ndarray, dr: float, dtheta: float) -> np.ndarray:
    """Apply the axial and depth-dependent lateral PSF to a complex field stored as [2, n_r, n_t]."""
    axial_fwhm = SPEED_OF_SOUND_MM_PER_US / (2 * profile.center_frequency_mhz * profile.fractional_bandwidth)
    z = _unit_energy_blur(z, axial_fwhm / 2.355 / dr, axis=1)
    wavelength = SPEED_OF_SOUND_MM_PER_US / profile.center_frequency_mhz
    focus = r[0] + 0.45 * (r[-1] - r[0])
    bands = np.array([r[0] + 0.15 * (r[-1] - r[0]), focus, r[-1]])
    out = np.zeros_like(z)
    weights_sum = np.zeros(len(r), dtype=np.float32)
    for centre in bands:
        fwhm = 3.0 * wavelength * np.sqrt(1 + ((centre - focus) / 12.0) ** 2)
        blurred = _unit_energy_blur(z, fwhm / 2.355 / (centre * dtheta), axis=2)
        w = np.clip(1 - np.abs(r - centre) / (bands[1] - bands[0] + 1e-6), 0, 1).astype(np.float32)
        out += blurred * w[None, :, None]
        weights_sum += w
    return out / np.maximum(weights_sum, 1e-6)[None, :, None]


def _echo_levels(p: Participant, tissue: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """Mean backscatter amplitude (linear, myometrium = 1) at every sample."""
    echo = ECHO_DB + np.asarray(p.echo_jitter_db, dtype=np.float32)
    echo[Tissue.TUMOUR] = p.tumour_echo_db
    hetero = texture_field(p.texture_seed, bx, by, scale_mm=5.0)
    level_db = echo[tissue] + HETEROGENEITY_DB[tissue] * hetero
    return np.power(10.0, level_db / 20.0, dtype=np.float32)


def _texture(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    """Gamma(alpha)/alpha intensity modulation (K-distributed amplitude) in 2x2-sample clusters.

    Clusters at the PSF scale keep the non-Rayleigh texture after the PSF averages neighbouring
    scatterers (realism.md §2.4 step 2).
    """
    coarse = tissue[::2, ::2]
    alpha = K_SHAPE[coarse]
    gain = np.ones(coarse.shape, dtype=np.float32)
    rough = alpha < 50
    gain[rough] = rng.standard_gamma(alpha[rough]).astype(np.float32) / alpha[rough]
    gain = np.repeat(np.repeat(gain, 2, axis=0), 2, axis=1)
    return gain[: tissue.shape[0], : tissue.shape[1]]


def _tgc_db(profile: ScannerProfile, r_mm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Receive gain along depth: imperfect compensation of the nominal attenuation + operator knobs."""
    nominal = 2 * NOMINAL_ATTENUATION * profile.center_frequency_mhz * (r_mm - r_mm[0]) / 10.0
    nodes = np.linspace(r_mm[0], r_mm[-1], 5)
    knob = np.interp(r_mm, nodes, rng.normal(0.0, 1.5, 5))
    return profile.tgc_compensation * nominal + knob


def render_ultrasound(
    p: Participant,
    profile: ScannerProfile,
    rng: np.random.Generator,
    *,
    pose: FanPose | None = None,
    n_frames: int | None = None,
    keep_debug: bool = False,
) -> UltrasoundRender:
    """Render one exam (``profile.cine_frames`` frames unless ``n_frames`` is given).

    Returns display frames uint8 [F, rows, cols] in the profile's matrix; pixel size, fan
    position and region bounds are in :attr:`UltrasoundRender.geometry` (mm and pixels).
    """
    geom = fan_geometry(profile)
    if pose is None:
        pose = sample_fan_pose(p, rng, mirror=bool(rng.random() < 0.5))
    n_frames = profile.cine_frames if n_frames is None else n_frames
    r, theta, dr, dtheta = _polar_grid(profile, geom)
    rr, tt = np.meshgrid(r, theta, indexing="ij")
    lateral, depth = rr * np.sin(tt), rr * np.cos(tt)
    exam_gain_db = profile.gain_db + float(rng.normal(0.0, 2.0))
    tgc = _tgc_db(profile, r, rng)

    fan, r_idx, t_idx = _scan_conversion(geom, float(r[0]), dr, float(theta[0]), dtheta)

    frames = np.zeros((n_frames, geom.rows, geom.cols), dtype=np.uint8)
    noise_amp = np.float32(10 ** ((profile.noise_floor_db - STRONGEST_ECHO_DB) / 20))
    speckle = None
    envelope = tissue = None
    frame_pose = pose
    for k in range(n_frames):
        if k:
            frame_pose = pose.jittered(rng, shift_mm=0.3, angle_deg=0.4)
        bx, by = _fan_to_body(frame_pose, lateral, depth)
        tissue = tissue_map(p, bx, by)
        fresh = rng.standard_normal((2,) + tissue.shape, dtype=np.float32) * np.float32(np.sqrt(0.5))
        speckle = fresh if speckle is None else np.float32(0.6) * speckle + np.float32(0.8) * fresh
        amplitude = _echo_levels(p, tissue, bx, by) * np.sqrt(_texture(rng, tissue))
        z = _psf(speckle * amplitude[None], profile, r, dr, dtheta)
        atten_db = 2 * np.cumsum(ATTENUATION_DB_CM_MHZ[tissue] * profile.center_frequency_mhz * dr / 10.0, axis=0)
        z *= np.power(10.0, -atten_db / 20.0, dtype=np.float32)[None]
        z += rng.standard_normal(z.shape, dtype=np.float32) * (noise_amp * np.float32(np.sqrt(0.5)))
        env = np.hypot(z[0], z[1]) * np.power(10.0, tgc / 20.0, dtype=np.float32)[:, None]
        if k == 0:
            envelope = env
        display = DISPLAY_TISSUE_LEVEL + (20 * np.log10(env + 1e-6) + exam_gain_db) / profile.dynamic_range_db
        display = np.clip(display, 0.0, 1.0) ** profile.gamma
        display = _speckle_reduction(display, profile)
        values = ndimage.map_coordinates(display, [r_idx, t_idx], order=1, mode="nearest")
        frame = np.zeros((geom.rows, geom.cols), dtype=np.float32)
        frame[fan] = values
        frames[k] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return UltrasoundRender(
        frames=frames, geometry=geom, pose=pose, fan=fan,
        envelope=envelope if keep_debug else None, tissue_polar=tissue if keep_debug else None,
    )


@lru_cache(maxsize=16)
def _scan_conversion(
    geom: FanGeometry, r0: float, dr: float, theta0: float, dtheta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fan mask [rows, cols] and the fractional polar indices (r, theta) of its pixels (cached)."""
    rows, cols = np.mgrid[0 : geom.rows, 0 : geom.cols].astype(np.float32)
    dx = (cols - geom.apex_col) * geom.pixel_mm
    dy = (rows - geom.apex_row) * geom.pixel_mm
    fan = fan_mask(geom)
    r_idx = (np.hypot(dx, dy)[fan] - r0) / dr
    t_idx = (np.arctan2(dx, dy)[fan] - theta0) / dtheta
    for array in (fan, r_idx, t_idx):
        array.setflags(write=False)
    return fan, r_idx, t_idx


def _speckle_reduction(display: np.ndarray, profile: ScannerProfile) -> np.ndarray:
    """Vendor post-processing: blend with a median or Gaussian filtered copy."""
    s = profile.speckle_reduction_strength
    if profile.speckle_reduction == "none" or s <= 0:
        return display
    if profile.speckle_reduction == "median":
        smooth = _median3x3(display)
    elif profile.speckle_reduction == "gaussian":
        smooth = ndimage.gaussian_filter(display, sigma=1.0)
    else:
        raise ValueError(f"unknown speckle_reduction {profile.speckle_reduction!r}")
    return (1 - s) * display + s * smooth


def _median3x3(image: np.ndarray) -> np.ndarray:
    """3x3 median with edge padding (same result as ``ndimage.median_filter(size=3)``, 2x faster)."""
    padded = np.pad(image, 1, mode="edge")
    h, w = image.shape
    stack = np.stack([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)])
    return np.partition(stack, 4, axis=0)[4]
