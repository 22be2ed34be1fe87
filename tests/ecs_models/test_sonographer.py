"""The simulated sonographer: its observed sensitivity and specificity on many simulated patients
are those of the published reader, and a reading is fixed by (seed, reader, patient)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from ecs_models.evaluation import metrics_at
from ecs_models.sonographer import READERS, TVUS_DEEP_MI, simulated_counts, simulated_reading

N_PATIENTS = 6000  # half positive


def _cohort(images_per_patient: int = 2) -> tuple[np.ndarray, list[str]]:
    labels = np.repeat(np.arange(N_PATIENTS) % 2, images_per_patient)
    patients = [f"P{i:05d}" for i in np.repeat(np.arange(N_PATIENTS), images_per_patient)]
    return labels, patients


@pytest.mark.parametrize("key", sorted(READERS))
def test_observed_accuracy_within_binomial_interval(key: str) -> None:
    profile = READERS[key]
    labels, patients = _cohort()
    calls = simulated_reading(labels, patients, profile, seed=3)
    per_patient = calls[::2], labels[::2]  # one call per patient
    c = metrics_at(per_patient[1], per_patient[0].astype(float), 0.5)
    for hits, n, p in ((c["tp"], c["tp"] + c["fn"], profile.sensitivity), (c["tn"], c["tn"] + c["fp"], profile.specificity)):
        low, high = binomtest(hits, n, p).proportion_ci(0.999)
        assert low <= p <= high, f"{key}: {hits}/{n} observed, {p} published"


def test_patient_call_shared_and_reproducible() -> None:
    labels, patients = _cohort()
    a = simulated_reading(labels, patients, seed=1)
    assert np.array_equal(a[::2], a[1::2])  # both images of a patient get its call
    assert np.array_equal(a, simulated_reading(labels, patients, seed=1))
    # the same patient gets the same call in a subset, another reader reads independently
    assert np.array_equal(simulated_reading(labels[:100], patients[:100], seed=1), a[:100])
    other = simulated_reading(labels, patients, seed=1, reader=1)
    agreement = np.mean(other[::2] == a[::2])
    assert 0.6 < agreement < 0.9  # two independent readers of 0.75 / 0.82 agree on ~0.67


def test_counts_and_refusals() -> None:
    c = simulated_counts(4000, 4000, TVUS_DEEP_MI, seed=0)
    assert c["tp"] + c["fn"] == 4000 and c["tn"] + c["fp"] == 4000
    assert binomtest(c["tp"], 4000).proportion_ci(0.999).low <= 0.75 <= binomtest(c["tp"], 4000).proportion_ci(0.999).high
    assert c == simulated_counts(4000, 4000, TVUS_DEEP_MI, seed=0)
    with pytest.raises(ValueError, match="labelled 0 and 1"):
        simulated_reading(np.array([0, 1]), ["a", "a"])
    with pytest.raises(ValueError, match="patient ids"):
        simulated_reading(np.array([0, 1]), ["a"])
