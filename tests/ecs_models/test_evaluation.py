"""The evaluation module: metrics, patient-level bootstrap, DeLong, calibration, the operating
point, and agreement of raw-score metrics with the histograms federated sites send."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ecs_models.evaluation import (
    METRICS,
    bootstrap_intervals,
    choose_threshold,
    delong_test,
    evaluate,
    evaluate_groups,
    expected_calibration_error,
    metrics_at,
    midrank_auc,
    operating_point,
    operating_point_record,
    patient_resamples,
    reliability_curve,
)
from ecs_models.training.binned_metrics import (
    bin_edges,
    binned_metrics,
    binned_operating_point,
    score_histograms,
)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


# ---------------------------------------------------------------- metrics


def test_metrics_of_a_small_group_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.2, 0.3, 0.05])
    m = metrics_at(labels, scores, 0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 4)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(4 / 5)
    assert m["ppv"] == m["precision"] == pytest.approx(2 / 3) and m["npv"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores)) == pytest.approx(midrank_auc(labels, scores))
    assert m["pr_auc"] == pytest.approx(average_precision_score(labels, scores))


def test_undefined_metrics_are_nan() -> None:
    m = metrics_at(np.zeros(4, int), np.array([0.1, 0.2, 0.8, 0.3]))
    assert all(math.isnan(m[k]) for k in ("sensitivity", "auc", "pr_auc")) and m["specificity"] == 0.75
    assert m["ppv"] == 0 and m["npv"] == 1  # one false positive, three true negatives
    assert math.isnan(midrank_auc(np.zeros(3, int), np.ones(3)))


@pytest.mark.parametrize("seed", range(4))
def test_both_aucs_equal_scikit_learns_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(300) < 0.2).astype(int)
    for scores in (rng.random(300), rng.integers(0, 5, 300) / 4.0):  # the second: five values, many ties
        m = metrics_at(labels, scores)
        assert m["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert m["pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


# ---------------------------------------------------------------- the operating point


def test_operating_point_rule_on_a_constructed_case() -> None:
    """20 positives at 0.05, 0.10, ..., 1.00 and 20 negatives at 0.025, 0.075, ..., 0.975:
    95 % sensitivity allows one miss, so the threshold is the second-lowest positive (0.10)."""
    pos, neg = np.arange(1, 21) / 20, np.arange(20) / 20 + 0.025
    labels, scores = np.r_[np.ones(20, int), np.zeros(20, int)], np.r_[pos, neg]
    op = operating_point(labels, scores, 0.95)
    assert op["rule"] == "sensitivity-first" and op["target_sensitivity"] == 0.95
    assert op["threshold"] == pytest.approx(0.10)
    assert op["val_sensitivity"] == pytest.approx(19 / 20)
    assert op["val_specificity"] == pytest.approx(2 / 20)  # negatives 0.025 and 0.075 fall below 0.10
    assert op["val"]["threshold"] == op["threshold"]
    # the target is configurable: 80 % allows four misses
    op80 = operating_point(labels, scores, 0.80)
    assert op80["threshold"] == pytest.approx(0.25) and op80["val_sensitivity"] == pytest.approx(16 / 20)
    assert choose_threshold(labels, scores, 0.80) == op80["threshold"]
    assert operating_point(np.zeros(3, int), np.ones(3))["threshold"] == 0.5


def test_an_operating_point_record_refuses_figures_of_another_threshold() -> None:
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    with pytest.raises(ValueError, match="not at the operating point"):
        operating_point_record(0.35, 0.95, metrics_at(labels, scores, 0.5))


# ---------------------------------------------------------------- patient-level bootstrap


def test_resamples_draw_whole_patients_and_are_reproducible() -> None:
    patients = ["a", "a", "b", "c", "c", "c"]
    draws = list(patient_resamples(patients, 20, seed=4))
    assert all(np.array_equal(x, y) for x, y in zip(draws, patient_resamples(patients, 20, seed=4), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(draws, patient_resamples(patients, 20, seed=5), strict=True))
    groups = [{0, 1}, {2}, {3, 4, 5}]
    for index in draws:
        for g in groups:  # a patient comes with all its images or not at all, as many times as drawn
            counts = [int(np.sum(index == i)) for i in g]
            assert len(set(counts)) == 1


def _two_images_per_patient(rng: np.random.Generator, n_patients: int, d: float) -> tuple:
    """Per patient a latent score N(d * label, 1); two images = latent + N(0, 0.5^2).
    Image-level AUC (pairs always across patients) = Phi(d / sqrt(2 (1 + 0.25)))."""
    y = (rng.random(n_patients) < 0.3).astype(int)
    latent = rng.normal(d * y, 1.0)
    scores = np.repeat(latent, 2) + rng.normal(0, 0.5, 2 * n_patients)
    return np.repeat(y, 2), 1 / (1 + np.exp(-scores)), np.repeat(np.arange(n_patients), 2)


def test_bootstrap_intervals_are_reproducible_and_hold_the_estimate() -> None:
    labels, scores, patients = _two_images_per_patient(np.random.default_rng(0), 60, 1.5)
    a = bootstrap_intervals(labels, scores, patients, 0.5, resamples=60, seed=1)
    assert a == bootstrap_intervals(labels, scores, patients, 0.5, resamples=60, seed=1)
    assert a != bootstrap_intervals(labels, scores, patients, 0.5, resamples=60, seed=2)
    result = evaluate(labels, scores, patients, 0.5, resamples=60, seed=1)
    assert result["n_patients"] == 60 and set(result["ci"]) == set(METRICS)
    for k in METRICS:
        ci = result["ci"][k]
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"], k


def test_patient_bootstrap_covers_a_known_auc() -> None:
    """95 % percentile intervals of the image-level AUC cover the true AUC in about 95 % of 60
    simulated cohorts of 200 patients with two correlated images each (57 of 60 with these
    seeds; resampling images instead of patients covers it in only 50 of 60: too narrow).
    Binomial sd of the coverage over 60 cohorts ~0.028; accepted: 52 of 60 or more."""
    d = 1.2
    true_auc = _phi(d / math.sqrt(2 * 1.25))
    rng = np.random.default_rng(7)
    covered = 0
    for sim in range(60):
        labels, scores, patients = _two_images_per_patient(rng, 200, d)
        draws = [midrank_auc(labels[i], scores[i]) for i in patient_resamples(patients, 200, seed=sim)]
        low, high = np.nanpercentile(draws, [2.5, 97.5])
        covered += low <= true_auc <= high
    assert covered >= 52


def test_groups_and_their_pool_keep_patients_of_two_centers_apart() -> None:
    rng = np.random.default_rng(3)
    a = _two_images_per_patient(rng, 20, 1.0)
    b = _two_images_per_patient(rng, 30, 1.0)  # patient ids 0..29 overlap those of a
    out = evaluate_groups({"a": a, "b": b, "empty": (np.array([], int), np.array([]), [])}, 0.5, resamples=20)
    assert set(out) == {"a", "b", "pooled"}
    assert out["pooled"]["n_patients"] == 50 and out["pooled"]["n"] == 100
    assert out["pooled"]["auc"] == pytest.approx(roc_auc_score(np.r_[a[0], b[0]], np.r_[a[1], b[1]]))


# ---------------------------------------------------------------- DeLong


def _delong_reference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[float, float]:
    """An independent O(m n) DeLong (1988): the kernel psi over every (positive, negative) pair,
    structural components as row/column means, their sample covariances; returns (z, p)."""
    def components(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, neg = s[labels == 1], s[labels == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (x_a, y_a), (x_b, y_b) = components(scores_a), components(scores_b)
    m, n = len(x_a), len(y_a)

    def cov(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1))

    var = (cov(x_a, x_a) + cov(x_b, x_b) - 2 * cov(x_a, x_b)) / m + (cov(y_a, y_a) + cov(y_b, y_b) - 2 * cov(y_a, y_b)) / n
    z = (x_b.mean() - x_a.mean()) / math.sqrt(var)
    return z, 2 * (1 - _phi(abs(z)))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_a_reference_computation(ties: bool) -> None:
    rng = np.random.default_rng(11)
    labels = (rng.random(150) < 0.35).astype(int)
    a = rng.normal(0.8 * labels, 1.0)
    b = 0.6 * a + rng.normal(0.9 * labels, 0.8)  # correlated with a, a little better
    if ties:
        a, b = np.round(a * 2) / 2, np.round(b * 2) / 2
    z_ref, p_ref = _delong_reference(labels, a, b)
    result = delong_test(labels, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(labels, a)) and result["auc_b"] == pytest.approx(roc_auc_score(labels, b))
    assert result["z"] == pytest.approx(z_ref, rel=1e-9) and result["p"] == pytest.approx(p_ref, rel=1e-6)
    swapped = delong_test(labels, b, a)
    assert swapped["z"] == pytest.approx(-result["z"]) and swapped["p"] == pytest.approx(result["p"])


def test_delong_of_a_model_with_itself_and_of_too_few_cases() -> None:
    labels, scores = np.array([0, 1, 0, 1, 1, 0]), np.array([0.1, 0.8, 0.3, 0.6, 0.2, 0.5])
    same = delong_test(labels, scores, scores)
    assert same["diff"] == 0 and same["z"] == 0 and same["p"] == 1.0
    with pytest.raises(ValueError, match="two cases of each class"):
        delong_test(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.2, 0.1]))


# ---------------------------------------------------------------- calibration


def test_calibration_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(20000)
    labels = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(labels, p) < 0.02  # sampling noise only
    # every score 0.8, half of the cases positive: one used bin, gap 0.3
    flat = np.full(10, 0.8)
    half = np.array([0, 1] * 5)
    assert expected_calibration_error(half, flat) == pytest.approx(0.3)
    curve = reliability_curve(half, flat, bins=5)
    assert curve["edges"].shape == (6,) and curve["count"].tolist() == [0, 0, 0, 0, 10]
    assert curve["observed"][-1] == 0.5 and curve["mean_score"][-1] == pytest.approx(0.8)
    assert np.isnan(curve["observed"][0]) and np.isnan(curve["mean_score"][0])
    ones = reliability_curve(np.array([1]), np.array([1.0]), bins=4)  # 1.0 is in the last bin
    assert ones["count"].tolist() == [0, 0, 0, 1]


# ---------------------------------------------------------------- raw scores vs histograms


@pytest.mark.parametrize("case", ["overlapping", "confident", "crowded_at_half"])
def test_raw_and_histogram_metrics_agree_within_histogram_resolution(case: str) -> None:
    """The federated path (histograms of 1,000 logit-uniform bins) against the raw scores.

    AUC: the binned AUC counts a (positive, negative) pair in the same bin as 1/2, the exact one
    as 0, 1/2 or 1; every other pair counts the same. So |difference| <= 1/2 x the share of pairs
    that share a bin, computable from the histograms alone: that is the tolerance (and it is
    small, < 0.003 here). Sensitivity, specificity, PPV, NPV, F1 and the counts at a bin edge:
    exactly equal (every bin lies wholly above or below an edge)."""
    rng = np.random.default_rng(9)
    labels = (rng.random(4000) < 0.12).astype(int)
    if case == "overlapping":
        scores = np.clip(rng.normal(0.35 + 0.25 * labels, 0.15), 0, 1)
    elif case == "confident":
        scores = 1 / (1 + np.exp(-rng.normal(6 * labels - 3, 3.0)))
    else:
        scores = 0.5 + 0.01 * np.tanh(rng.normal(0.3 * labels, 1.0))
    neg, pos = score_histograms(labels, scores)
    shared = float(np.sum(neg.astype(float) * pos) / (neg.sum() * pos.sum()))
    raw = metrics_at(labels, scores, 0.5)
    assert abs(binned_metrics(neg, pos)["auc"] - raw["auc"]) <= shared / 2 + 1e-12
    # small unless the scores crowd into a few bins (0.49-0.51: ~4 bins, bound 0.125, actual 0.009)
    assert shared / 2 < (0.13 if case == "crowded_at_half" else 0.003)
    edges = bin_edges(len(neg))
    for edge in edges[rng.choice(np.arange(1, len(edges) - 1), 25, replace=False)].tolist() + [0.5]:
        exact, binned = metrics_at(labels, scores, edge), binned_metrics(neg, pos, edge)
        for key in ("tp", "fp", "tn", "fn", "sensitivity", "specificity", "ppv", "npv", "f1"):
            assert binned[key] == exact[key] or (math.isnan(binned[key]) and math.isnan(exact[key])), (edge, key)


def test_the_federated_operating_point_reports_figures_at_its_threshold() -> None:
    """From histograms, the threshold is a bin edge at most one bin below the raw-score one, and
    the validation sensitivity/specificity recorded are exactly those of the raw scores there."""
    rng = np.random.default_rng(2)
    labels = (rng.random(2000) < 0.15).astype(int)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
    neg, pos = score_histograms(labels, scores)
    binned, raw = binned_operating_point(neg, pos, 0.95), operating_point(labels, scores, 0.95)
    edges = bin_edges(len(neg))
    raw_bin = np.searchsorted(edges, raw["threshold"], side="right") - 1
    assert binned["threshold"] == edges[raw_bin]  # the edge of the bin holding the raw threshold
    exact = metrics_at(labels, scores, binned["threshold"])
    assert (binned["val_sensitivity"], binned["val_specificity"]) == (exact["sensitivity"], exact["specificity"])
    assert binned["val_sensitivity"] >= 0.95 and binned["rule"] == raw["rule"]
