"""One evaluation module: screening metrics from raw scores, patient-level bootstrap intervals,
DeLong's test, calibration and the sensitivity-first operating point.

Conventions (every function): ``labels`` int {0, 1} [N]; ``scores`` float [N] = predicted
probability of myometrial invasion; ``patients`` [N] hashable ids (all images of a patient are
drawn together by the bootstrap); a case is called positive when ``score >= threshold``.
Undefined ratios (no positives, say) are NaN, never a misleading 0 or 1.

The federated path computes the same quantities from per-class score histograms
(:mod:`ecs_models.training.binned_metrics`); they agree with these within histogram resolution
(tests/ecs_models/test_evaluation.py). Plain numpy, no scikit-learn (1.5 s of import a
per-message ClientApp process would pay, and per-call overhead a 2,000-draw bootstrap would pay);
the AUCs are checked against scikit-learn in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "TARGET_SENSITIVITY",
    "OPERATING_POINT_RULE",
    "METRICS",
    "confusion",
    "ratios",
    "metrics_at",
    "choose_threshold",
    "operating_point_record",
    "operating_point",
    "patient_resamples",
    "bootstrap_intervals",
    "evaluate",
    "evaluate_groups",
    "midrank_auc",
    "roc_points",
    "delong_test",
    "reliability_curve",
    "expected_calibration_error",
]

TARGET_SENSITIVITY = 0.95  # sensitivity-first screening (paper: checkpoint rule)
OPERATING_POINT_RULE = "sensitivity-first"
# the metrics that get a bootstrap interval
METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc", "pr_auc")


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be the same 1-d shape")
    return labels, scores


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts ``{"tp", "fp", "tn", "fn"}`` at ``threshold`` (positive: ``score >= threshold``)."""
    labels, scores = _arrays(labels, scores)
    pred, pos = scores >= threshold, labels == 1
    return {"tp": int(np.sum(pred & pos)), "fp": int(np.sum(pred & ~pos)),
            "tn": int(np.sum(~pred & ~pos)), "fn": int(np.sum(~pred & pos))}


def ratios(c: Mapping[str, int]) -> dict[str, float]:
    """Sensitivity, specificity, PPV (= precision), NPV, F1 and accuracy of a confusion matrix."""
    tp, fp, tn, fn = (int(c[k]) for k in ("tp", "fp", "tn", "fn"))
    ppv = _ratio(tp, tp + fp)
    return {"accuracy": _ratio(tp + tn, tp + fp + tn + fn), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "ppv": ppv, "precision": ppv, "npv": _ratio(tn, tn + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return _placements(labels, scores)[0] if 0 < labels.sum() < len(labels) else float("nan")


def _pr_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision, sum over distinct thresholds (descending) of recall gained x precision
    (scikit-learn's ``average_precision_score``, without its per-call overhead); NaN without
    positives."""
    if not labels.sum():
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    ranked = scores[order]
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]  # last case of each distinct score
    tp = np.cumsum(labels[order])[last]
    precision, recall = tp / (last + 1), tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def metrics_at(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """One group's metrics: counts (``n``, ``positives``, ``tp``, ``fp``, ``tn``, ``fn``), the
    ratios of :func:`ratios` at ``threshold``, ROC-AUC (``auc``) and PR-AUC (``pr_auc``, average
    precision); both AUCs are threshold-free and NaN without both classes (PR-AUC: positives)."""
    labels, scores = _arrays(labels, scores)
    c = confusion(labels, scores, threshold)
    return {"n": int(len(labels)), "positives": int(labels.sum()), "threshold": float(threshold),
            **ratios(c), "auc": _auc(labels, scores), "pr_auc": _pr_auc(labels, scores), **c}


# ---------------------------------------------------------------- the operating point


def choose_threshold(labels: np.ndarray, scores: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> float:
    """Sensitivity-first operating point, chosen on validation data: the highest threshold whose
    sensitivity reaches ``target_sensitivity`` (so specificity is as high as that allows).
    Without positives, 0.5."""
    labels, scores = _arrays(labels, scores)
    positives = np.sort(scores[labels == 1])
    if len(positives) == 0:
        return 0.5
    # the k-th smallest positive score keeps (n - k) / n of positives at or above it
    allowed_misses = int(np.floor((1.0 - target_sensitivity) * len(positives) + 1e-9))
    return float(positives[allowed_misses])


def operating_point_record(threshold: float, target_sensitivity: float, val: Mapping[str, float]) -> dict:
    """What a run records of its operating point: the rule, its target, the threshold and the
    validation sensitivity / specificity *at that threshold* (``val``: metrics at ``threshold``)."""
    if val.get("threshold", threshold) != threshold:
        raise ValueError(f"validation metrics at threshold {val['threshold']}, not at the operating point {threshold}")
    return {"rule": OPERATING_POINT_RULE, "target_sensitivity": float(target_sensitivity), "threshold": float(threshold),
            "val_sensitivity": val.get("sensitivity"), "val_specificity": val.get("specificity")}


def operating_point(labels: np.ndarray, scores: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> dict:
    """:func:`choose_threshold` on validation scores, with the validation metrics at it:
    :func:`operating_point_record` plus ``"val"`` (:func:`metrics_at` the threshold)."""
    threshold = choose_threshold(labels, scores, target_sensitivity)
    val = metrics_at(labels, scores, threshold)
    return {**operating_point_record(threshold, target_sensitivity, val), "val": val}


# ---------------------------------------------------------------- patient-level bootstrap


def patient_resamples(patients: Sequence, resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``resamples`` bootstrap draws of item indices [M] (M varies): patients are drawn with
    replacement, as many as there are, and each drawn patient brings all its items. Seeded:
    the same ``patients``, ``resamples`` and ``seed`` give the same draws."""
    ids, inverse = np.unique(np.asarray(patients), return_inverse=True)
    items_of = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.concatenate([items_of[i] for i in rng.integers(0, len(ids), len(ids))])


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isnan(values)):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    return float(np.nanpercentile(values, tail)), float(np.nanpercentile(values, 100 - tail))


def bootstrap_intervals(labels: np.ndarray, scores: np.ndarray, patients: Sequence, threshold: float, *,
                        resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals ``{metric: (low, high)}`` for :data:`METRICS` at ``threshold`` over
    :func:`patient_resamples` (draws where a metric is undefined are left out of its interval)."""
    labels, scores = _arrays(labels, scores)
    if len(patients) != len(labels):
        raise ValueError(f"{len(patients)} patient ids for {len(labels)} scores")
    draws = [metrics_at(labels[i], scores[i], threshold) for i in patient_resamples(patients, resamples, seed)]
    return {k: _interval(np.array([d[k] for d in draws]), level) for k in METRICS}


def evaluate(labels: np.ndarray, scores: np.ndarray, patients: Sequence, threshold: float, *,
             resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """:func:`metrics_at` plus, for each of :data:`METRICS`, ``{"value", "ci_low", "ci_high"}``
    under ``"ci"``, ``n_patients`` and ``ece`` (:func:`expected_calibration_error`, 10 bins)."""
    m = metrics_at(labels, scores, threshold)
    ci = bootstrap_intervals(labels, scores, patients, threshold, resamples=resamples, seed=seed, level=level)
    return {**m, "n_patients": len(set(patients)), "ece": expected_calibration_error(labels, scores), "ci_level": level,
            "ci": {k: {"value": m[k], "ci_low": lo, "ci_high": hi} for k, (lo, hi) in ci.items()}}


def evaluate_groups(groups: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence]], threshold: float, *,
                    pooled: str | None = "pooled", **bootstrap) -> dict[str, dict]:
    """:func:`evaluate` per group (a center: ``(labels, scores, patients)``) and, under
    ``pooled``, over all groups together (patient ids prefixed by the group name, so equal ids of
    two centers stay two patients). ``bootstrap``: ``resamples``, ``seed``, ``level``."""
    out = {name: evaluate(*g, threshold, **bootstrap) for name, g in groups.items() if len(g[0])}
    if pooled and out:
        kept = [(name, g) for name, g in groups.items() if len(g[0])]
        labels = np.concatenate([np.asarray(g[0]) for _, g in kept])
        scores = np.concatenate([np.asarray(g[1]) for _, g in kept])
        patients = [f"{name}/{p}" for name, g in kept for p in g[2]]
        out[pooled] = evaluate(labels, scores, patients, threshold, **bootstrap)
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """The empirical ROC curve: one point per distinct score, from (0, 0) to (1, 1).

    Returns ``fpr`` and ``tpr`` float [K + 1] (non-decreasing) and ``threshold`` [K + 1] (the
    point at ``threshold[i]`` calls ``score >= threshold[i]`` positive; the first is +inf). The
    trapezoid area under it equals :func:`midrank_auc`. Needs both classes.
    """
    labels, scores = _arrays(labels, scores)
    m, n = int(labels.sum()), int(len(labels) - labels.sum())
    if not m or not n:
        raise ValueError(f"an ROC curve needs both classes, got {m} positive and {n} negative")
    order = np.argsort(-scores, kind="mergesort")
    ranked = scores[order]
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]
    tp = np.cumsum(labels[order])[last]
    fp = (last + 1) - tp
    return {"fpr": np.r_[0.0, fp / n], "tpr": np.r_[0.0, tp / m], "threshold": np.r_[np.inf, ranked[last]]}


# ---------------------------------------------------------------- DeLong's test


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` [n], ties sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]  # first item of each run of equal values
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)] - 1
    ranks = np.empty(len(x))
    ranks[order] = (0.5 * (starts + ends) + 1)[np.cumsum(first) - 1]
    return ranks


def _placements(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components: V10 [m] per positive (share of negatives it beats,
    ties 1/2) and V01 [n] per negative (share of positives that beat it), via midranks
    (Sun & Xu 2014, O(N log N))."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = len(pos), len(neg)
    all_ranks = _midranks(np.concatenate([pos, neg]))
    v10 = (all_ranks[:m] - _midranks(pos)) / n
    v01 = 1.0 - (all_ranks[m:] - _midranks(neg)) / m
    return float(v10.mean()), v10, v01


def midrank_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count 1/2); NaN without both classes."""
    labels, scores = _arrays(labels, scores)
    if not 0 < labels.sum() < len(labels):
        return float("nan")
    return _placements(labels, scores)[0]


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong, DeLong & Clarke-Pearson (1988): two models' ROC-AUCs on the same cases.

    Returns ``auc_a``, ``auc_b``, ``diff`` (B - A), ``se`` (of the difference), ``z`` and the
    two-sided ``p`` (normal approximation), plus ``var_a``, ``var_b``, ``cov``. Cases are
    treated as independent (one score per patient; average a patient's images first).
    """
    labels, scores_a = _arrays(labels, scores_a)
    _, scores_b = _arrays(labels, scores_b)
    m, n = int(labels.sum()), int(len(labels) - labels.sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least two cases of each class, got {m} positive and {n} negative")
    auc_a, v10_a, v01_a = _placements(labels, scores_a)
    auc_b, v10_b, v01_b = _placements(labels, scores_b)
    s10, s01 = np.cov(np.vstack([v10_a, v10_b])), np.cov(np.vstack([v01_a, v01_b]))
    s = s10 / m + s01 / n  # 2 x 2 covariance of (AUC_A, AUC_B)
    var = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    diff = auc_b - auc_a
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return {"auc_a": auc_a, "auc_b": auc_b, "diff": diff, "se": se, "z": z, "p": math.erfc(abs(z) / math.sqrt(2)),
            "var_a": float(s[0, 0]), "var_b": float(s[1, 1]), "cov": float(s[0, 1])}


# ---------------------------------------------------------------- calibration


def reliability_curve(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """Reliability diagram over ``bins`` equal-width score bins on [0, 1] (the last includes 1).

    Returns ``edges`` [bins + 1], ``count`` int [bins], ``mean_score`` [bins] (mean predicted
    probability) and ``observed`` [bins] (fraction positive); empty bins are NaN in both.
    """
    labels, scores = _arrays(labels, scores)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, np.clip(scores, 0, 1), side="right") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(index, weights=scores, minlength=bins) / count
        observed = np.bincount(index, weights=labels, minlength=bins) / count
    return {"edges": edges, "count": count, "mean_score": mean_score, "observed": observed}


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE = sum over bins of (bin count / N) * |fraction positive - mean score|, on the bins of
    :func:`reliability_curve`; in probability units [0, 1]. NaN for no cases."""
    curve = reliability_curve(labels, scores, bins)
    total = curve["count"].sum()
    if total == 0:
        return float("nan")
    used = curve["count"] > 0
    gaps = np.abs(curve["observed"][used] - curve["mean_score"][used])
    return float(np.sum(curve["count"][used] * gaps) / total)
