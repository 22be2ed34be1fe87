"""Screening metrics, the validation operating point and the paper's checkpoint rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ecs_models.training.metrics import CheckpointSelector, choose_threshold, screening_metrics


def test_confusion_counts_and_ratios() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.2, 0.3, 0.05])
    m = screening_metrics(labels, scores, threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 1, 1, 4)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(4 / 5)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["precision"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)


def test_undefined_ratios_are_nan_not_zero() -> None:
    m = screening_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.8, 0.3]))
    assert math.isnan(m["sensitivity"]) and math.isnan(m["auc"]) and m["specificity"] == 0.75


def test_threshold_reaches_the_target_sensitivity_with_the_best_specificity() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(40, int), np.zeros(400, int)]
    scores = np.r_[rng.normal(1.5, 1, 40), rng.normal(0, 1, 400)]
    t = choose_threshold(labels, scores, 0.95)
    m = screening_metrics(labels, scores, t)
    assert m["sensitivity"] >= 0.95
    # any higher threshold loses sensitivity below the target
    higher = np.sort(scores[scores > t])[0]
    assert screening_metrics(labels, scores, higher)["sensitivity"] < 0.95


def test_checkpoint_rule_prefers_sensitivity_then_specificity() -> None:
    sel = CheckpointSelector(0.95)
    assert sel.update(0, 0.60, 0.99)
    assert not sel.update(1, 0.50, 1.00)  # lower sensitivity, below target: rejected
    assert sel.update(2, 0.80, 0.70)
    assert sel.update(3, 0.96, 0.40)  # reaches the target: beats everything below it
    assert not sel.update(4, 0.99, 0.30)  # above target but lower specificity
    assert sel.update(5, 0.95, 0.60)
    assert sel.best_step == 5
    clone = CheckpointSelector()
    clone.load_state_dict(sel.state_dict())
    assert clone.best == sel.best and clone.best_step == 5
