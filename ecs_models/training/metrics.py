"""Screening metrics, the operating point and the paper's checkpoint rule.

The metrics and the operating-point rule live in :mod:`ecs_models.evaluation` (one
implementation); this module keeps the names training code has always used. All functions take
plain arrays: ``labels`` int {0, 1} [N], ``scores`` float [N] = predicted
probability of myometrial invasion. scikit-learn is imported where it is used (1.5 s of import
that a per-message ClientApp process would otherwise pay for every message).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecs_models.evaluation import TARGET_SENSITIVITY, choose_threshold, metrics_at

__all__ = ["TARGET_SENSITIVITY", "screening_metrics", "choose_threshold", "CheckpointSelector"]


def screening_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision (= PPV), NPV, F1, ROC-AUC, PR-AUC and the
    confusion matrix at ``threshold``: :func:`ecs_models.evaluation.metrics_at`.

    A case is called positive when ``score >= threshold``. Undefined ratios (no positives, say)
    are NaN rather than a misleading 0 or 1.
    """
    return metrics_at(labels, scores, threshold)


def _nan_low(value: float) -> float:
    """NaN ranks below every real value."""
    return -1.0 if np.isnan(value) else value


@dataclass
class CheckpointSelector:
    """The paper's rule: keep the best validation sensitivity until it reaches the target, then
    the best specificity among checkpoints whose sensitivity is at least the target.
    Ties go to the higher AUC.

    Our runs offer each checkpoint's metrics at *its own* validation operating point
    (:func:`choose_threshold`), not at 0.5: on 5-15 % prevalence an unweighted stage-A model
    scores every case below 0.5, so at 0.5 every later epoch has sensitivity 0 and the rule
    would keep an early, untrained one. At the operating point the rule becomes "best
    specificity at >= 95 % sensitivity", the quantity the screening threshold is later set by.
    """

    target_sensitivity: float = TARGET_SENSITIVITY
    best: tuple[float, float, float] | None = None  # (sensitivity, specificity, auc)
    best_step: int = -1

    def _key(self, sens: float, spec: float, auc: float) -> tuple:
        if sens >= self.target_sensitivity:
            return (1, _nan_low(spec), _nan_low(auc))
        return (0, _nan_low(sens), _nan_low(auc))

    def update(self, step: int, sensitivity: float, specificity: float, auc: float = float("nan")) -> bool:
        """Offer a checkpoint; True when it becomes the selected one."""
        if self.best is None or self._key(sensitivity, specificity, auc) > self._key(*self.best):
            self.best, self.best_step = (sensitivity, specificity, auc), step
            return True
        return False

    def state_dict(self) -> dict:
        return {"target_sensitivity": self.target_sensitivity, "best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.target_sensitivity = state["target_sensitivity"]
        self.best = None if state["best"] is None else tuple(state["best"])
        self.best_step = state["best_step"]
