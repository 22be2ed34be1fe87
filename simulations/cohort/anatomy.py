"""Parametric pelvic anatomy of one participant: a uterus with its zonal layers, lesions and
surroundings, evaluated analytically at any points of a sagittal plane.

Coordinates are the participant's *body frame*, a midsagittal plane in millimetres:
``x`` runs anterior (negative) to posterior (positive), ``y`` superior (negative) to inferior
(positive); the uterine body's centre is the origin. Every renderer (ultrasound fan, MRI field of
view, the paired renders) asks :func:`tissue_map` for the tissue at its own sample positions, so
one anatomy gives pixel-consistent masks in any geometry.

The uterus is built around its cavity: a centre line (curved by flexion) with a leaf-shaped
half-thickness profile. For a point, ``d_cav`` is its distance from the cavity surface
(negative inside). Endometrium is ``d_cav < 0``, the junctional zone / subendometrial halo
``0 <= d_cav < jz``, the outer myometrium up to the wall thickness, then a thin serosa. A tumour
widens the cavity and, for invasive cases, replaces the wall on one side up to
``depth_ratio * (jz + myometrium)`` with an irregular front, so the ground-truth depth ratio is
exactly what the picture shows. Numbers and their sources: ``shared/reference/realism.md`` §1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np
from scipy import ndimage

from client.data.labels import DEEP_INVASION_RATIO

__all__ = [
    "Tissue",
    "Ellipse",
    "Uterus",
    "Tumour",
    "Participant",
    "sample_participant",
    "tissue_map",
    "texture_field",
    "to_uterus_frame",
    "caliper_points_mm",
]


class Tissue(IntEnum):
    """Tissue classes of the label maps (uint8)."""

    PELVIC_FAT = 0
    FLUID = 1  # bladder urine, free fluid, fluid in the cavity
    MYOMETRIUM = 2
    JUNCTIONAL_ZONE = 3  # inner myometrium; the subendometrial halo on ultrasound
    ENDOMETRIUM = 4
    TUMOUR = 5
    CERVIX = 6
    FIBROID = 7
    POLYP = 8
    SEROSA = 9
    BOWEL_WALL = 10
    BOWEL_GAS = 11
    MUSCLE = 12
    BONE = 13
    AIR = 14  # outside the body (MRI only; the ultrasound fan is always inside)


UTERINE_TISSUES = (
    Tissue.MYOMETRIUM, Tissue.JUNCTIONAL_ZONE, Tissue.ENDOMETRIUM, Tissue.TUMOUR, Tissue.CERVIX,
    Tissue.FIBROID, Tissue.POLYP, Tissue.SEROSA,
)
SEROSA_MM = 0.8  # thickness of the bright serosal line


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in the body frame: centre (mm), semi-axes (mm), rotation (rad)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float = 0.0

    def contains(
        self, x: np.ndarray, y: np.ndarray, grow_mm: float = 0.0, *, bounds: tuple[float, float, float, float] | None = None
    ) -> np.ndarray:
        """Boolean mask of points inside the ellipse enlarged by ``grow_mm`` on both axes.

        ``bounds`` = (xmin, xmax, ymin, ymax) of the points, when known, skips far ellipses.
        """
        if bounds is not None:
            reach = max(self.a, self.b) + grow_mm
            xmin, xmax, ymin, ymax = bounds
            if self.cx + reach < xmin or self.cx - reach > xmax or self.cy + reach < ymin or self.cy - reach > ymax:
                return np.zeros(np.shape(x), dtype=bool)
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        u = (dx * c + dy * s) / (self.a + grow_mm)
        v = (-dx * s + dy * c) / (self.b + grow_mm)
        return u * u + v * v < 1.0


@dataclass(frozen=True)
class Uterus:
    """Geometry of the uterus in its own frame (u along the cavity towards the fundus, v anterior)."""

    axis_angle: float  # direction of the fundus in the body frame, rad (0 = superior)
    flexion: float  # centre-line curvature: v' = v - flexion * u^2, 1/mm
    cavity_low: float  # u of the internal os, mm (< 0)
    cavity_high: float  # u of the fundal end of the cavity, mm (> 0)
    endometrium_mm: float  # double-layer endometrial thickness of the lining, mm
    junctional_zone_mm: float  # halo / junctional-zone thickness, mm
    wall_anterior_mm: float  # outer myometrium thickness of the anterior wall, mm
    wall_posterior_mm: float
    wall_fundus_mm: float
    cervix_length_mm: float
    cervix_half_width_mm: float
    cavity_fluid_mm: float = 0.0  # half-thickness of fluid distending the cavity, mm


@dataclass(frozen=True)
class Tumour:
    """An endometrial carcinoma: cavity widening plus an invasion front into one or both walls."""

    centre_u: float  # mm along the cavity
    half_length_mm: float
    extra_half_thickness_mm: float  # how much the tumour widens the cavity, each side
    depth_ratio: float  # invasion depth / (junctional zone + myometrium); 0 = none
    invasion_side: int  # +1 anterior wall, -1 posterior wall, 0 both
    invasion_half_length_mm: float
    front_phases: tuple[float, float]  # phases of the irregular front
    front_wavelengths_mm: tuple[float, float]


@dataclass(frozen=True)
class Participant:
    """Ground truth and geometry of one participant (everything a renderer needs)."""

    participant_id: str
    label: int  # 1 = any myometrial invasion
    invasion: str  # normal | superficial | deep
    depth_ratio: float
    endometrial_thickness_mm: float  # measured double-layer thickness, mm
    hard_negative: str  # polyp | fluid | fibroid | atrophic | ""
    uterus: Uterus
    tumour: Tumour | None
    polyp: Ellipse | None  # in the uterus frame (cx = u, cy = v')
    fibroid: Ellipse | None  # in the uterus frame
    bladder: Ellipse
    rectum: Ellipse
    bowel: tuple[Ellipse, ...]
    bowel_gas: tuple[bool, ...]
    free_fluid: Ellipse | None
    texture_seed: int
    body_fat_mm: float = 20.0  # subcutaneous fat in front of the abdominal muscles, mm
    tumour_echo_db: float = 0.0  # tumour backscatter relative to myometrium, dB
    echo_jitter_db: tuple[float, ...] = field(default_factory=tuple)  # per Tissue value, dB
    t2_scale: tuple[float, ...] = field(default_factory=tuple)  # per Tissue value, multiplicative


def _bump(u: np.ndarray, centre: float, half_length: float) -> np.ndarray:
    """Smooth window in [0, 1]: 1 at ``centre``, 0 beyond ``half_length`` (raised cosine)."""
    t = np.clip(np.abs(u - centre) / max(half_length, 1e-6), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def to_uterus_frame(p: Participant, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame points (mm) -> uterus frame ``(u, v')`` (mm), flexion removed from ``v'``."""
    ang = p.uterus.axis_angle
    du = (np.sin(-ang), -np.cos(ang))  # fundus direction in (x, y); angle 0 = straight up
    dv = (-du[1], du[0])  # anterior side of the axis (x negative when axis_angle = 0)
    dv = (-dv[0], -dv[1])
    u = x * du[0] + y * du[1]
    v = x * dv[0] + y * dv[1]
    return u, v - p.uterus.flexion * u * u


def _cavity_half_thickness(p: Participant, u: np.ndarray) -> np.ndarray:
    """Half-thickness of the cavity contents (lining + fluid + tumour/polyp widening), mm."""
    ut = p.uterus
    span = ut.cavity_high - ut.cavity_low
    t = np.clip((u - ut.cavity_low) / span, 0.0, 1.0)
    leaf = np.sin(np.pi * t) ** 0.6
    half = (0.5 * ut.endometrium_mm + ut.cavity_fluid_mm) * leaf
    if p.tumour is not None:
        half = half + p.tumour.extra_half_thickness_mm * _bump(u, p.tumour.centre_u, p.tumour.half_length_mm) * leaf
    if p.polyp is not None:
        half = half + p.polyp.b * _bump(u, p.polyp.cx, p.polyp.a) * leaf
    return half


def _invasion_depth(p: Participant, u: np.ndarray, wall_mm: np.ndarray) -> np.ndarray:
    """Depth (mm from the cavity surface) reached by the tumour at each u; 0 where none.

    The irregular front is normalised so that its deepest point is exactly
    ``depth_ratio * (junctional zone + wall)``: the label is what the picture shows.
    """
    tm = p.tumour
    if tm is None or tm.depth_ratio <= 0:
        return np.zeros_like(u)

    def front(at: np.ndarray) -> np.ndarray:
        (l1, l2), (f1, f2) = tm.front_wavelengths_mm, tm.front_phases
        irregular = 0.6 * np.sin(2 * np.pi * at / l1 + f1) + 0.4 * np.sin(2 * np.pi * at / l2 + f2)
        return _bump(at, tm.centre_u, tm.invasion_half_length_mm) ** 0.5 * (0.85 + 0.15 * irregular)

    ut = p.uterus
    dense = np.linspace(
        max(tm.centre_u - tm.invasion_half_length_mm, ut.cavity_low),
        min(tm.centre_u + tm.invasion_half_length_mm, ut.cavity_high), 512,
    )
    peak = float(front(dense).max())
    full = tm.depth_ratio * (ut.junctional_zone_mm + wall_mm)
    return full * np.clip(front(u) / max(peak, 1e-6), 0.0, 1.0)


def tissue_map(p: Participant, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tissue class (:class:`Tissue`, uint8) at body-frame points ``x, y`` (mm, any equal shape)."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    out = np.full(x.shape, Tissue.PELVIC_FAT, dtype=np.uint8)
    b = (float(x.min()), float(x.max()), float(y.min()), float(y.max())) if x.size else None
    _draw_body_wall(out, p, x, y)
    out[p.bladder.contains(x, y, 3.0, bounds=b)] = Tissue.MUSCLE  # detrusor wall
    out[p.bladder.contains(x, y, bounds=b)] = Tissue.FLUID
    out[p.rectum.contains(x, y, 3.0, bounds=b)] = Tissue.BOWEL_WALL
    out[p.rectum.contains(x, y, bounds=b)] = Tissue.BOWEL_GAS
    for loop, gas in zip(p.bowel, p.bowel_gas, strict=True):
        out[loop.contains(x, y, 2.0, bounds=b)] = Tissue.BOWEL_WALL
        out[loop.contains(x, y, bounds=b)] = Tissue.BOWEL_GAS if gas else Tissue.FLUID
    if p.free_fluid is not None:
        out[p.free_fluid.contains(x, y, bounds=b)] = Tissue.FLUID
    _draw_uterus(out, p, x, y)
    return out


def _draw_body_wall(out: np.ndarray, p: Participant, x: np.ndarray, y: np.ndarray) -> None:
    """Abdominal wall, sacrum, pubic bone, pelvic floor, gluteal muscles and air (body frame).

    The body outline is an ellipse whose anterior skin lies ``body_fat_mm`` of subcutaneous fat
    in front of the rectus muscles; the sacrum is a curved band behind the rectum.
    """
    fat = p.body_fat_mm
    skin = Ellipse(12.0, -10.0, 58.0 + 8.0 + fat + 22.0, 230.0)  # anterior skin at x ~ -(66 + fat)
    out[~skin.contains(x, y)] = Tissue.AIR
    rectus = skin.contains(x, y, -fat) & ~skin.contains(x, y, -fat - 8.0) & (x < 0)
    out[rectus] = Tissue.MUSCLE
    r = np.hypot(x - 5.0, y + 5.0)
    sacrum = (r > 64.0) & (r < 74.0) & (x > 30.0) & (y < 62.0)
    out[sacrum] = Tissue.BONE
    out[(r >= 74.0) & (x > 30.0) & skin.contains(x, y)] = Tissue.MUSCLE  # gluteal muscles
    out[Ellipse(-52.0, 58.0, 9.0, 17.0, 0.35).contains(x, y)] = Tissue.BONE  # pubic symphysis
    floor = Ellipse(0.0, 20.0, 62.0, 62.0)
    out[~floor.contains(x, y) & floor.contains(x, y, 9.0) & (y > 50.0)] = Tissue.MUSCLE  # levator ani


def _draw_uterus(out: np.ndarray, p: Participant, x: np.ndarray, y: np.ndarray) -> None:
    ut = p.uterus
    u, v = to_uterus_frame(p, x, y)
    uc = np.clip(u, ut.cavity_low, ut.cavity_high)
    d_centre = np.sqrt((u - uc) ** 2 + v * v)
    half = _cavity_half_thickness(p, uc)
    d_cav = d_centre - half
    anterior = v > 0
    wall = np.where(anterior, ut.wall_anterior_mm, ut.wall_posterior_mm)
    fundal = np.clip((u - ut.cavity_high + 6.0) / 8.0, 0.0, 1.0)
    wall = wall + (ut.wall_fundus_mm - wall) * fundal
    jz = ut.junctional_zone_mm
    outer = jz + wall

    # Cervix: a round-ended tube below the internal os, with a bright endocervical canal.
    w = ut.cervix_half_width_mm
    ucx = np.clip(u, ut.cavity_low - ut.cervix_length_mm + w, ut.cavity_low)
    cervix = (np.hypot(u - ucx, v) < w) & (u < ut.cavity_low + 2.0)
    out[cervix] = Tissue.CERVIX
    out[cervix & (np.abs(v) < 0.8) & (u > ut.cavity_low - ut.cervix_length_mm + 2.0)] = Tissue.ENDOMETRIUM

    body = (d_cav < outer) & (u >= ut.cavity_low - 4.0)
    out[body] = Tissue.SEROSA
    out[body & (d_cav < outer - SEROSA_MM)] = Tissue.MYOMETRIUM
    out[body & (d_cav < jz)] = Tissue.JUNCTIONAL_ZONE
    lining = body & (d_cav < 0)
    out[lining] = Tissue.ENDOMETRIUM
    if ut.cavity_fluid_mm > 0:
        t = np.clip((uc - ut.cavity_low) / (ut.cavity_high - ut.cavity_low), 0.0, 1.0)
        fluid_half = ut.cavity_fluid_mm * np.sin(np.pi * t) ** 0.6
        out[lining & (np.abs(v) < fluid_half) & (u > ut.cavity_low)] = Tissue.FLUID

    if p.fibroid is not None:
        out[p.fibroid.contains(u, v)] = Tissue.FIBROID
    if p.polyp is not None:
        out[lining & p.polyp.contains(u, v)] = Tissue.POLYP
    if p.tumour is not None:
        tm = p.tumour
        in_cavity = lining & (_bump(uc, tm.centre_u, tm.half_length_mm) > 0.15)
        out[in_cavity] = Tissue.TUMOUR
        depth = _invasion_depth(p, uc, wall)
        side_ok = np.ones_like(anterior) if tm.invasion_side == 0 else (anterior == (tm.invasion_side > 0))
        invaded = body & (d_cav >= 0) & (d_cav < depth) & side_ok
        out[invaded] = Tissue.TUMOUR


def texture_field(seed: int, x: np.ndarray, y: np.ndarray, scale_mm: float = 6.0) -> np.ndarray:
    """Smooth zero-mean, unit-std random field fixed in the body frame, sampled at ``x, y`` (mm).

    Used for tissue heterogeneity; the same seed gives the same field in every geometry.
    """
    rng = np.random.default_rng(seed)
    extent, step = 256.0, scale_mm / 2.0  # covers +-128 mm around the uterus
    n = int(extent / step) + 1
    grid = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), 1.0, mode="wrap")
    grid /= grid.std() + 1e-6
    rows = (np.asarray(y, dtype=np.float32) + extent / 2) / step
    cols = (np.asarray(x, dtype=np.float32) + extent / 2) / step
    return ndimage.map_coordinates(grid, [rows.ravel(), cols.ravel()], order=1, mode="nearest").reshape(np.shape(x))


def caliper_points_mm(p: Participant) -> tuple[tuple[float, float], tuple[float, float]]:
    """Body-frame end points (mm) of the endometrial-thickness measurement a sonographer takes."""
    ut = p.uterus
    us = np.linspace(ut.cavity_low, ut.cavity_high, 64)
    half = _cavity_half_thickness(p, us)
    u0 = float(us[int(np.argmax(half))])
    h = float(half.max())
    ang = ut.axis_angle
    du = np.array([np.sin(-ang), -np.cos(ang)])
    dv = np.array([du[1], -du[0]])
    base = u0 * du + ut.flexion * u0 * u0 * dv
    a, b = base + h * dv, base - h * dv
    return (float(a[0]), float(a[1])), (float(b[0]), float(b[1]))


def measured_thickness_mm(p: Participant) -> float:
    """Double-layer endometrial thickness (mm) at the thickest point, as the calipers measure it."""
    ut = p.uterus
    us = np.linspace(ut.cavity_low, ut.cavity_high, 128)
    return float(2.0 * _cavity_half_thickness(p, us).max())


def _lognormal(rng: np.random.Generator, low: float, high: float) -> float:
    """A log-uniform-ish draw between ``low`` and ``high`` (mm)."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def sample_participant(
    rng: np.random.Generator,
    participant_id: str,
    *,
    label: int,
    deep_fraction: float = 0.3,
    hard_negative_rate: float = 0.4,
    confounder_rate: float = 0.12,
) -> Participant:
    """Draw one participant with the given screening label.

    Args:
        rng: the participant's own generator (one per participant, so order never matters).
        label: 1 = myometrial invasion (superficial or deep), 0 = none.
        deep_fraction: P(deep invasion | invasion); FIGO deep = depth ratio >= 0.5.
        hard_negative_rate: share of negatives drawn as a known pitfall (polyp, fluid, fibroid,
            thin atrophic myometrium), so that "something abnormal" does not mean cancer.
        confounder_rate: the same pitfalls appear in positives at this rate each (unlabelled),
            so that none of them is a negative-only cue.
    """
    # Uterus: postmenopausal sizes (length 35-75 mm, AP 10-23 mm + lesions).
    cavity_len = rng.uniform(22.0, 42.0)
    cavity_low = -cavity_len * rng.uniform(0.45, 0.55)
    atrophic_wall = rng.random() < (0.25 if label == 0 else confounder_rate)
    wall_range = (3.0, 6.0) if atrophic_wall else (6.0, 13.0)
    hard_negative = ""
    invasion, depth_ratio, tumour, polyp, fibroid, fluid = "normal", 0.0, None, None, None, 0.0

    if label == 0:
        draw = rng.random()
        if draw < 0.2:
            lining = rng.uniform(5.0, 14.0)  # benign thickening / hyperplasia
        else:
            lining = _lognormal(rng, 1.5, 5.0)
        if rng.random() < hard_negative_rate:
            hard_negative = str(rng.choice(["polyp", "fluid", "fibroid"]))
        elif atrophic_wall:
            hard_negative = "atrophic"
    else:
        deep = rng.random() < deep_fraction
        invasion = "deep" if deep else "superficial"
        depth_ratio = rng.uniform(DEEP_INVASION_RATIO, 0.95) if deep else rng.uniform(0.05, 0.45)
        lining = rng.uniform(2.0, 6.0)
        tumour_t = rng.uniform(6.0, 16.0) if deep else rng.uniform(3.0, 9.0)
        half_len = cavity_len * rng.uniform(0.2, 0.45)
        centre = rng.uniform(cavity_low + half_len * 0.6, cavity_low + cavity_len - half_len * 0.6)
        side = int(rng.choice([1, -1, 0], p=[0.45, 0.45, 0.1]))
        tumour = Tumour(
            centre_u=float(centre), half_length_mm=float(half_len),
            extra_half_thickness_mm=float(tumour_t / 2), depth_ratio=float(depth_ratio),
            invasion_side=side, invasion_half_length_mm=float(half_len * rng.uniform(0.5, 1.0)),
            front_phases=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
            front_wavelengths_mm=(float(rng.uniform(5, 12)), float(rng.uniform(2, 5))),
        )

    with_fibroid = hard_negative == "fibroid" or (label == 1 and rng.random() < confounder_rate)
    with_polyp = hard_negative == "polyp" or (label == 1 and rng.random() < confounder_rate / 2)
    with_fluid = hard_negative == "fluid" or (label == 1 and rng.random() < confounder_rate)
    if with_fluid:
        fluid = rng.uniform(1.0, 5.0)
    wall_ant, wall_post = rng.uniform(*wall_range), rng.uniform(*wall_range)
    if with_polyp:
        pu = rng.uniform(cavity_low * 0.6, (cavity_low + cavity_len) * 0.6)
        polyp = Ellipse(float(pu), 0.0, rng.uniform(4.0, 10.0), rng.uniform(2.5, 6.0))
    if with_fibroid:
        side = rng.choice([1, -1])
        r = rng.uniform(5.0, 14.0)
        # submucosal (touching the lining, a pitfall) to subserosal
        depth = rng.uniform(0.3, 1.1) * (wall_ant if side > 0 else wall_post) + 2.0
        fu = rng.uniform(cavity_low * 0.7, (cavity_low + cavity_len) * 0.7)
        fibroid = Ellipse(float(fu), float(side * (lining / 2 + depth + r * 0.6)), r, r * rng.uniform(0.8, 1.0))

    uterus = Uterus(
        # anteverted (fundus anterior, 85 %) or retroverted
        axis_angle=float(np.deg2rad(rng.uniform(15.0, 75.0) if rng.random() < 0.85 else rng.uniform(-50.0, -15.0))),
        flexion=float(rng.uniform(-0.006, 0.006)),
        cavity_low=float(cavity_low),
        cavity_high=float(cavity_low + cavity_len),
        endometrium_mm=float(lining),
        junctional_zone_mm=float(rng.uniform(0.8, 1.5) if atrophic_wall else rng.uniform(1.5, 4.0)),
        wall_anterior_mm=float(wall_ant),
        wall_posterior_mm=float(wall_post),
        wall_fundus_mm=float(rng.uniform(0.8, 1.2) * (wall_ant + wall_post) / 2),
        cervix_length_mm=float(rng.uniform(20.0, 32.0)),
        cervix_half_width_mm=float(rng.uniform(8.0, 13.0)),
        cavity_fluid_mm=float(fluid),
    )
    surroundings = _sample_surroundings(rng, uterus)
    n_tissues = len(Tissue)
    p = Participant(
        participant_id=participant_id, label=int(label), invasion=invasion,
        depth_ratio=float(depth_ratio), endometrial_thickness_mm=0.0, hard_negative=hard_negative,
        uterus=uterus, tumour=tumour, polyp=polyp, fibroid=fibroid, **surroundings,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
        body_fat_mm=float(rng.uniform(8.0, 40.0)),
        tumour_echo_db=float(rng.uniform(-4.0, 7.0)),
        echo_jitter_db=tuple(float(v) for v in rng.normal(0.0, 1.5, n_tissues)),
        t2_scale=tuple(float(v) for v in rng.normal(1.0, 0.05, n_tissues)),
    )
    return replace(p, endometrial_thickness_mm=measured_thickness_mm(p))


def _cervix_end(uterus: Uterus) -> np.ndarray:
    """Body-frame position (mm) of the external os (the end of the cervix)."""
    ang = uterus.axis_angle
    du = np.array([np.sin(-ang), -np.cos(ang)])
    return (uterus.cavity_low - uterus.cervix_length_mm) * du


def _sample_surroundings(rng: np.random.Generator, uterus: Uterus) -> dict:
    """Bladder, rectum, bowel loops and free fluid around a uterus (body frame, mm).

    The bladder lies anterior to the cervix and lower uterine segment, the rectum posterior to
    the cervix, bowel loops above the fundus, free fluid in the pouch of Douglas.
    """
    os_x, os_y = _cervix_end(uterus)
    bladder = Ellipse(
        float(os_x - rng.uniform(22, 34)), float(os_y - rng.uniform(8, 18)),
        float(rng.uniform(10, 32)), float(rng.uniform(8, 20)), float(rng.uniform(-0.4, 0.4)),
    )
    rectum = Ellipse(
        float(os_x + rng.uniform(20, 28)), float(os_y + rng.uniform(-4, 8)),
        float(rng.uniform(8, 12)), float(rng.uniform(14, 20)), float(rng.uniform(-0.3, 0.3)),
    )
    n_loops = int(rng.integers(2, 6))
    loops = []
    for _ in range(n_loops):
        ang = rng.uniform(-np.pi * 0.9, -np.pi * 0.1)  # above the uterus
        dist = rng.uniform(42, 62)
        loops.append(Ellipse(
            float(dist * np.cos(ang)), float(dist * np.sin(ang)),
            float(rng.uniform(6, 14)), float(rng.uniform(5, 10)), float(rng.uniform(0, np.pi)),
        ))
    gas = tuple(bool(g) for g in rng.random(n_loops) < 0.6)
    free_fluid = None
    if rng.random() < 0.15:
        free_fluid = Ellipse(
            float(os_x * 0.5 + rng.uniform(10, 16)), float(os_y * 0.5 - rng.uniform(0, 8)),
            float(rng.uniform(3, 7)), float(rng.uniform(8, 14)), float(rng.uniform(-0.5, 0.5)),
        )
    return {"bladder": bladder, "rectum": rectum, "bowel": tuple(loops), "bowel_gas": gas, "free_fluid": free_fluid}
