"""Typed description of a synthetic cohort, built from the Hydra ``cohort`` config group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from simulations.cohort.dicom_writer import check_encodable
from simulations.cohort.mri import MRI_PROFILES, MriProfile, get_mri_profile
from simulations.cohort.scanners import SCANNER_PROFILES, ScannerProfile, get_scanner_profile

__all__ = ["CenterSpec", "CohortSpec", "cohort_spec_from_config"]


@dataclass(frozen=True)
class CenterSpec:
    """One hospital of the cohort."""

    name: str
    scanner: str  # key of SCANNER_PROFILES
    n_us: int  # ultrasound participants
    prevalence: float  # share of ultrasound participants with myometrial invasion
    mri: str | None = None  # key of MRI_PROFILES; None = this center has no MRI
    n_mri: int = 0  # MRI participants (different people from the ultrasound ones)
    mri_prevalence: float = 0.4  # MRI is mostly done to stage known cancers
    n_paired: int = 0  # held-back participants rendered in both modalities (evaluation only)
    deep_fraction: float = 0.3  # P(deep | invasion)
    held_out: bool = False  # evaluation-only center: every patient in the test split
    scanner_overrides: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scanner not in SCANNER_PROFILES:
            raise ValueError(f"center {self.name!r}: unknown scanner {self.scanner!r}; known: {sorted(SCANNER_PROFILES)}")
        if self.mri is not None and self.mri not in MRI_PROFILES:
            raise ValueError(f"center {self.name!r}: unknown mri {self.mri!r}; known: {sorted(MRI_PROFILES)}")
        if (self.n_mri or self.n_paired) and self.mri is None:
            raise ValueError(f"center {self.name!r}: n_mri/n_paired > 0 needs an mri profile")
        for name in ("prevalence", "mri_prevalence", "deep_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"center {self.name!r}: {name} must be in [0, 1]")
        if min(self.n_us, self.n_mri, self.n_paired) < 0:
            raise ValueError(f"center {self.name!r}: counts must be >= 0")


@dataclass(frozen=True)
class CohortSpec:
    """A whole multicenter cohort."""

    name: str
    centers: tuple[CenterSpec, ...]
    split_train: float = 0.7
    split_val: float = 0.15
    split_test: float = 0.15
    extra_image_rate: float = 0.3  # chance of a second still per ultrasound exam
    hard_negative_rate: float = 0.4
    max_cine_frames: int | None = None  # cap cine length (tiny presets)
    scanner_overrides: Mapping[str, object] = field(default_factory=dict)  # applied to every center
    mri_overrides: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = self.split_train + self.split_val + self.split_test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total}")
        names = [c.name for c in self.centers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate center names in {names}")
        if not self.centers:
            raise ValueError("a cohort needs at least one center")
        for center in self.centers:
            check_encodable(self.scanner_profile(center))  # fail at load time, not mid-cohort

    def scanner_profile(self, center: CenterSpec) -> ScannerProfile:
        """The center's ultrasound profile with cohort- and center-level overrides applied."""
        overrides = {**self.scanner_overrides, **center.scanner_overrides}
        profile = get_scanner_profile(center.scanner, **overrides)
        if self.max_cine_frames is not None and profile.cine_frames > self.max_cine_frames:
            profile = get_scanner_profile(center.scanner, **{**overrides, "cine_frames": self.max_cine_frames})
        return profile

    def mri_profile(self, center: CenterSpec) -> MriProfile | None:
        """The center's MR profile with cohort overrides, or None when it has no MRI."""
        return None if center.mri is None else get_mri_profile(center.mri, **self.mri_overrides)


def cohort_spec_from_config(cfg: Mapping, *, scale: float = 1.0) -> CohortSpec:
    """Build a :class:`CohortSpec` from the ``cohort`` config node (a mapping).

    ``scale`` multiplies every center's participant counts (at least 1 ultrasound participant
    per center is kept). Unknown keys fail loudly so a misspelled override is never ignored.
    """
    cfg = dict(cfg)
    centers_cfg = cfg.pop("centers", None)
    if not centers_cfg:
        raise ValueError("cohort config has no centers")
    scale = float(cfg.pop("scale", 1.0)) * scale
    known_center = {f.name for f in fields(CenterSpec)} - {"name"}
    centers = []
    for name, raw in dict(centers_cfg).items():
        raw = dict(raw)
        unknown = set(raw) - known_center
        if unknown:
            raise ValueError(f"center {name!r}: unknown keys {sorted(unknown)}; allowed: {sorted(known_center)}")
        for key in ("n_us", "n_mri", "n_paired"):
            if key in raw:
                raw[key] = max(int(round(raw[key] * scale)), 1 if key == "n_us" else 0)
        raw["scanner_overrides"] = dict(raw.get("scanner_overrides") or {})
        centers.append(CenterSpec(name=str(name), **raw))
    known = {f.name for f in fields(CohortSpec)} - {"centers"}
    split = dict(cfg.pop("split", {}) or {})
    for key in list(split):
        if key not in ("train", "val", "test"):
            raise ValueError(f"unknown split key {key!r}")
        cfg[f"split_{key}"] = float(split[key])
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown cohort keys {sorted(unknown)}; allowed: {sorted(known | {'centers', 'split', 'scale'})}")
    for key in ("scanner_overrides", "mri_overrides"):
        cfg[key] = dict(cfg.get(key) or {})
    return CohortSpec(centers=tuple(centers), **cfg)
