"""Federated evaluation from histograms: AUC, sensitivity/specificity and the operating point."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecs_models.training.binned_metrics import (
    binned_auc,
    binned_metrics,
    binned_threshold,
    confusion_at,
    score_histograms,
)
from ecs_models.training.metrics import choose_threshold, screening_metrics


@pytest.mark.parametrize("case", ["separable", "overlapping", "crowded_at_half", "saturated"])
def test_binned_auc_matches_sklearn(case: str) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.1).astype(int)
    if case == "separable":
        scores = np.where(labels == 1, rng.beta(5, 2, len(labels)), rng.beta(2, 5, len(labels)))
    elif case == "overlapping":
        scores = rng.random(len(labels)) * 0.6 + 0.3 * labels
    elif case == "crowded_at_half":  # an untrained model: every score within 0.49-0.51
        scores = 0.5 + 0.01 * np.tanh(rng.normal(0.3 * labels, 1.0))
    else:  # a confident model: scores at 1e-5 .. 1 - 1e-5
        scores = 1 / (1 + np.exp(-rng.normal(6 * labels - 3, 3.0)))
    neg, pos = score_histograms(labels, scores)
    assert neg.sum() + pos.sum() == len(labels)
    assert abs(binned_auc(neg, pos) - roc_auc_score(labels, scores)) < 0.002


def test_histograms_add_up_across_sites_and_match_exact_metrics() -> None:
    rng = np.random.default_rng(1)
    sites = [((rng.random(n) < 0.2).astype(int), rng.random(n)) for n in (50, 120, 7)]
    neg = sum(score_histograms(lab, sc)[0] for lab, sc in sites)
    pos = sum(score_histograms(lab, sc)[1] for lab, sc in sites)
    confusion = {k: sum(confusion_at(lab, sc, 0.4)[k] for lab, sc in sites) for k in ("tp", "fp", "tn", "fn")}
    labels = np.concatenate([lab for lab, _ in sites])
    scores = np.concatenate([sc for _, sc in sites])
    pooled = binned_metrics(neg, pos, 0.4, confusion)
    exact = screening_metrics(labels, scores, 0.4)
    for key in ("tp", "fp", "tn", "fn", "n", "positives"):
        assert pooled[key] == exact[key]
    assert pooled["sensitivity"] == pytest.approx(exact["sensitivity"])
    assert abs(pooled["auc"] - exact["auc"]) < 0.002


def test_binned_threshold_reaches_target_sensitivity() -> None:
    rng = np.random.default_rng(2)
    labels = (rng.random(2000) < 0.15).astype(int)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
    neg, pos = score_histograms(labels, scores)
    threshold = binned_threshold(neg, pos, 0.95)
    assert screening_metrics(labels, scores, threshold)["sensitivity"] >= 0.95
    assert abs(threshold - choose_threshold(labels, scores, 0.95)) < 0.01
    assert binned_threshold(neg, np.zeros_like(pos)) == 0.5
