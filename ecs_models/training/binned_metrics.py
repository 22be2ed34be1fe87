"""Screening metrics from per-class score histograms, for federated evaluation.

A site never sends per-patient scores: it sends the confusion matrix at the server's threshold
and two histograms of its scores (negatives, positives) over fixed bins. Summed over sites they
give pooled AUC, sensitivity and specificity at any bin edge, and the operating point.

Bins are uniform in **logit** space: ``edges = [0, sigmoid(linspace(-L, L, bins - 1)), 1]``
(``L = 12`` by default). A classifier's probabilities crowd near 0 and 1 once trained and near
0.5 early on; uniform-in-logit bins resolve both (width ~0.006 in probability near 0.5 and
~1e-6 near 0 or 1 for 1,000 bins), where uniform [0, 1] bins would lump all of them together.

Pairs of a positive and a negative in the same bin count 1/2 (ties), so the binned AUC differs
from the exact one by at most half the fraction of such pairs (tested within 0.002 of sklearn).
Plain numpy, no flwr: the client builds histograms, the server combines them.
"""

from __future__ import annotations

import numpy as np

from ecs_models.evaluation import TARGET_SENSITIVITY, operating_point_record, ratios

__all__ = [
    "DEFAULT_BINS",
    "bin_edges",
    "score_histograms",
    "confusion_at",
    "histogram_confusion",
    "binned_auc",
    "binned_metrics",
    "binned_threshold",
    "binned_operating_point",
]

DEFAULT_BINS = 1000
LOGIT_RANGE = 12.0


def bin_edges(bins: int = DEFAULT_BINS, logit_range: float = LOGIT_RANGE) -> np.ndarray:
    """``bins + 1`` increasing edges over [0, 1], uniform in logit between +-``logit_range``."""
    if bins < 3:
        raise ValueError("need at least 3 bins")
    inner = 1.0 / (1.0 + np.exp(-np.linspace(-logit_range, logit_range, bins - 1)))
    return np.concatenate([[0.0], inner, [1.0]])


def score_histograms(labels: np.ndarray, scores: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(negatives [bins], positives [bins])`` int64 counts of P(invasion) scores per bin.

    Bin ``i`` holds scores in ``[edges[i], edges[i + 1])`` (the last bin includes 1.0).
    """
    labels = np.asarray(labels).astype(int)
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    edges = bin_edges(bins)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    neg = np.bincount(index[labels == 0], minlength=bins).astype(np.int64)
    pos = np.bincount(index[labels == 1], minlength=bins).astype(np.int64)
    return neg, pos


def confusion_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """Exact confusion matrix, a case called positive when ``score >= threshold``."""
    labels = np.asarray(labels).astype(int)
    pred = np.asarray(scores, dtype=np.float64) >= threshold
    return {"tp": int(np.sum(pred & (labels == 1))), "fp": int(np.sum(pred & (labels == 0))),
            "tn": int(np.sum(~pred & (labels == 0))), "fn": int(np.sum(~pred & (labels == 1)))}


def histogram_confusion(neg: np.ndarray, pos: np.ndarray, threshold: float) -> dict[str, int]:
    """Confusion matrix from histograms: the bins at or above the bin edge that holds
    ``threshold`` are called positive (exact when ``threshold`` is a bin edge)."""
    neg, pos = np.asarray(neg, dtype=np.int64), np.asarray(pos, dtype=np.int64)
    start = int(np.clip(np.searchsorted(bin_edges(len(neg)), threshold, side="right") - 1, 0, len(neg) - 1))
    return {"tp": int(pos[start:].sum()), "fn": int(pos[:start].sum()),
            "fp": int(neg[start:].sum()), "tn": int(neg[:start].sum())}


def binned_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """ROC-AUC = P(score+ > score-) + P(tie) / 2 from histograms; NaN without both classes."""
    neg, pos = np.asarray(neg, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (n_neg * n_pos))


def binned_metrics(neg: np.ndarray, pos: np.ndarray, threshold: float | None = None,
                   confusion: dict[str, int] | None = None) -> dict[str, float]:
    """Pooled metrics: AUC from the histograms; the ratios of :func:`ecs_models.evaluation.ratios`
    (sensitivity, specificity, PPV, NPV, F1, accuracy) at ``threshold`` from
    the exact ``confusion`` when given, else from the histograms (bins at or above the bin edge
    that holds ``threshold``); plus counts. ``threshold=None`` uses 0.5.
    """
    neg, pos = np.asarray(neg, dtype=np.int64), np.asarray(pos, dtype=np.int64)
    threshold = 0.5 if threshold is None else float(threshold)
    if confusion is None:
        confusion = histogram_confusion(neg, pos, threshold)
    counts = {k: int(confusion[k]) for k in ("tp", "fp", "tn", "fn")}
    return {"n": int(neg.sum() + pos.sum()), "positives": int(pos.sum()), "threshold": threshold,
            "auc": binned_auc(neg, pos), **ratios(counts), **counts}


def binned_threshold(neg: np.ndarray, pos: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> float:
    """Operating point from validation histograms: the highest bin edge whose sensitivity
    reaches ``target_sensitivity`` (as :func:`ecs_models.training.metrics.choose_threshold`,
    to bin resolution). Without positives, 0.5.
    """
    pos = np.asarray(pos, dtype=np.float64)
    if pos.sum() == 0:
        return 0.5
    edges = bin_edges(len(pos))
    at_or_above = np.cumsum(pos[::-1])[::-1]  # positives in bins >= i
    ok = np.nonzero(at_or_above / pos.sum() >= target_sensitivity - 1e-12)[0]
    return float(edges[ok[-1]])


def binned_operating_point(neg: np.ndarray, pos: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> dict:
    """The federated operating point from pooled validation histograms: :func:`binned_threshold`
    and the validation metrics *at that threshold* (:func:`binned_metrics`; exact, the threshold
    being a bin edge), as :func:`ecs_models.evaluation.operating_point` gives from raw scores:
    ``{"rule", "target_sensitivity", "threshold", "val_sensitivity", "val_specificity", "val"}``."""
    threshold = binned_threshold(neg, pos, target_sensitivity)
    val = binned_metrics(neg, pos, threshold)
    return {**operating_point_record(threshold, target_sensitivity, val), "val": val}
