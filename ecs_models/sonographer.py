"""A simulated sonographer: an expert TVUS reading of the same patients the model scores.

The paper compares the model with sonographers; the platform has no human reads, so a report
shows the model against a *simulated* reader whose calls have the sensitivity and specificity
that studies report for expert transvaginal ultrasound (``../shared/reference/realism.md``, 1.2):

* :data:`TVUS_DEEP_MI` (default): meta-analysis of 8 studies, TVUS for deep myometrial invasion,
  sensitivity 0.75, specificity 0.82 (Alcázar et al. 2017, J Gynecol Oncol 28:e86);
* :data:`TVUS_SUBJECTIVE`: subjective impression of one expert centre, 0.795 / 0.896 (Alcázar et
  al. 2015, 169 G1-G2 endometrioid cancers).

Those figures are for *deep* invasion (>= 50 % of the myometrium); the platform's label is any
invasion, so the reader is a benchmark of expert-level accuracy on this label, not a claim about
how sonographers read it. Every report says the reader is simulated.

A reader calls each *patient* once (all of a patient's images get the call): positive with
probability ``sensitivity`` when the patient is positive, negative with probability
``specificity`` when not. The draw depends only on ``(seed, reader, patient id)``, so a patient
gets the same call in every report and subset, and reader ``k`` of a panel is independent of the
others. Plain numpy (the clinic install imports this package's torch-free modules).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ReaderProfile", "TVUS_DEEP_MI", "TVUS_SUBJECTIVE", "READERS", "simulated_reading", "simulated_counts"]


@dataclass(frozen=True)
class ReaderProfile:
    """A reader's accuracy, as published."""

    name: str  # shown in reports
    sensitivity: float  # P(call positive | positive patient), 0-1
    specificity: float  # P(call negative | negative patient), 0-1
    source: str  # the study the figures come from

    def __post_init__(self) -> None:
        for key in ("sensitivity", "specificity"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{self.name}: {key} {getattr(self, key)} is not in [0, 1]")


TVUS_DEEP_MI = ReaderProfile(
    "expert TVUS (simulated), deep myometrial invasion", 0.75, 0.82,
    "Alcázar et al. 2017, J Gynecol Oncol 28:e86: meta-analysis of 8 studies, TVUS vs MRI for deep myometrial invasion")
TVUS_SUBJECTIVE = ReaderProfile(
    "expert TVUS subjective impression (simulated)", 0.795, 0.896,
    "Alcázar et al. 2015: subjective impression, 169 G1-G2 endometrioid cancers (PMC4510336)")
READERS = {"tvus_deep_mi": TVUS_DEEP_MI, "tvus_subjective": TVUS_SUBJECTIVE}


def _uniform(seed: int, reader: int, patient: object) -> float:
    """One U[0, 1) draw fixed by (seed, reader, patient id)."""
    digest = hashlib.sha256(f"{seed}\0{reader}\0{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def simulated_reading(labels: np.ndarray, patients: Sequence, profile: ReaderProfile = TVUS_DEEP_MI, *,
                      seed: int = 0, reader: int = 0) -> np.ndarray:
    """The reader's calls, int {0, 1} ``[N]``, one per image (a patient's images share its call).

    Args:
        labels: int {0, 1} ``[N]``, the truth of each image; equal within a patient.
        patients: ``[N]`` patient ids (hashable, turned into text for the draw).
        profile: the reader's sensitivity and specificity.
        seed, reader: which reading; reader ``k`` of a panel is independent of the others.

    Raises:
        ValueError: shapes differ, or a patient has images of both labels.
    """
    labels = np.asarray(labels).astype(int)
    if labels.ndim != 1 or len(patients) != len(labels):
        raise ValueError(f"{len(patients)} patient ids for labels of shape {labels.shape}")
    calls = np.empty(len(labels), dtype=int)
    truth: dict[object, int] = {}
    for i, (patient, label) in enumerate(zip(patients, labels, strict=True)):
        if truth.setdefault(patient, int(label)) != int(label):
            raise ValueError(f"patient {patient!r} has images labelled 0 and 1")
        u = _uniform(seed, reader, patient)
        calls[i] = int(u < profile.sensitivity) if label == 1 else int(u >= profile.specificity)
    return calls


def simulated_counts(positives: int, negatives: int, profile: ReaderProfile = TVUS_DEEP_MI, *,
                     seed: int = 0, reader: int = 0) -> dict[str, int]:
    """The reader's confusion counts ``{"tp", "fp", "tn", "fn"}`` on ``positives`` + ``negatives``
    cases known only by count (a federated run's score histograms: no patient ids leave a site);
    binomial draws, seeded by ``(seed, reader)``."""
    rng = np.random.default_rng([int(seed), int(reader), 0x50_4E_4F])
    tp = int(rng.binomial(int(positives), profile.sensitivity))
    tn = int(rng.binomial(int(negatives), profile.specificity))
    return {"tp": tp, "fn": int(positives) - tp, "tn": tn, "fp": int(negatives) - tn}
