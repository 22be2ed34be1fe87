"""The label lives in the anatomy: what a participant's truth says is what its tissue map shows."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.cohort.anatomy import (
    Tissue,
    _cavity_half_thickness,
    sample_participant,
    tissue_map,
    to_uterus_frame,
)


def _grid(step: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[-60:60:step, -60:60:step]
    return xx.astype(np.float32), yy.astype(np.float32)


def _measured_depth_ratio(p) -> float:
    """Deepest tumour penetration beyond the cavity surface, over the local wall thickness."""
    x, y = _grid()
    tissue = tissue_map(p, x, y)
    u, v = to_uterus_frame(p, x, y)
    ut = p.uterus
    uc = np.clip(u, ut.cavity_low, ut.cavity_high)
    d_cav = np.sqrt((u - uc) ** 2 + v * v) - _cavity_half_thickness(p, uc)
    wall = np.where(v > 0, ut.wall_anterior_mm, ut.wall_posterior_mm)
    fundal = np.clip((u - ut.cavity_high + 6.0) / 8.0, 0.0, 1.0)
    wall = wall + (ut.wall_fundus_mm - wall) * fundal
    invaded = (tissue == Tissue.TUMOUR) & (d_cav >= 0)
    if not invaded.any():
        return 0.0
    return float((d_cav[invaded] / (ut.junctional_zone_mm + wall[invaded])).max())


@pytest.mark.parametrize("seed", range(12))
def test_invasion_depth_in_the_picture_matches_the_label(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = sample_participant(rng, "p", label=1, deep_fraction=0.5)
    assert p.invasion in ("superficial", "deep")
    assert (p.invasion == "deep") == (p.depth_ratio >= 0.5)
    measured = _measured_depth_ratio(p)
    # the grid resolves 0.15 mm of a 5-17 mm wall: a few percent of the ratio
    assert measured == pytest.approx(p.depth_ratio, abs=0.06)


@pytest.mark.parametrize("seed", range(12))
def test_negatives_have_no_tumour_and_show_their_pitfall(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    p = sample_participant(rng, "p", label=0, hard_negative_rate=1.0)
    x, y = _grid(0.25)
    tissue = tissue_map(p, x, y)
    assert p.label == 0 and p.invasion == "normal" and p.depth_ratio == 0.0
    assert not (tissue == Tissue.TUMOUR).any()
    expected = {"polyp": Tissue.POLYP, "fibroid": Tissue.FIBROID, "fluid": Tissue.FLUID}
    assert p.hard_negative in expected
    assert (tissue == expected[p.hard_negative]).sum() > 20


def test_positive_endometrium_is_thicker_on_average_but_overlaps() -> None:
    """Realism prior: EC thickens the endometrium, benign thickening and polyps overlap it."""
    pos = [sample_participant(np.random.default_rng(s), "p", label=1).endometrial_thickness_mm for s in range(150)]
    neg = [sample_participant(np.random.default_rng(500 + s), "p", label=0).endometrial_thickness_mm for s in range(150)]
    assert np.median(pos) > np.median(neg)
    assert max(neg) > np.percentile(pos, 25)  # overlapping distributions, not a threshold cue


def test_uterine_layers_are_ordered_from_the_cavity_outwards() -> None:
    p = sample_participant(np.random.default_rng(3), "p", label=0, hard_negative_rate=0.0)
    ut = p.uterus
    # walk from the cavity centre along the anterior normal at mid-cavity
    u0 = (ut.cavity_low + ut.cavity_high) / 2
    ang = ut.axis_angle
    du = np.array([np.sin(-ang), -np.cos(ang)])
    dv = np.array([-np.cos(ang), np.sin(ang)])
    steps = np.arange(0.0, 40.0, 0.1)
    pts = (u0 * du)[None] + (ut.flexion * u0 * u0 + steps)[:, None] * dv[None]
    seq = tissue_map(p, pts[:, 0].astype(np.float32), pts[:, 1].astype(np.float32))
    order = [t for i, t in enumerate(seq) if i == 0 or t != seq[i - 1]]
    wanted = [Tissue.ENDOMETRIUM, Tissue.JUNCTIONAL_ZONE, Tissue.MYOMETRIUM, Tissue.SEROSA]
    assert [Tissue(t) for t in order[:4]] == wanted
