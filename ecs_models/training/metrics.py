"""Screening metrics, the operating point and the paper's checkpoint rule.

All functions take plain arrays: ``labels`` int {0, 1} [N], ``scores`` float [N] = predicted
probability of myometrial invasion. scikit-learn is imported where it is used (1.5 s of import
that a per-message ClientApp process would otherwise pay for every message).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TARGET_SENSITIVITY", "screening_metrics", "choose_threshold", "CheckpointSelector"]

TARGET_SENSITIVITY = 0.95  # sensitivity-first screening (paper: checkpoint rule)


def _safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def screening_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1, ROC-AUC, PR-AUC and the confusion matrix.

    A case is called positive when ``score >= threshold``. Undefined ratios (no positives, say)
    are NaN rather than a misleading 0 or 1.
    """
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = scores >= threshold
    tp = int(np.sum(pred & (labels == 1)))
    fn = int(np.sum(~pred & (labels == 1)))
    tn = int(np.sum(~pred & (labels == 0)))
    fp = int(np.sum(pred & (labels == 0)))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sens, prec = ratio(tp, tp + fn), ratio(tp, tp + fp)
    return {
        "n": int(len(labels)),
        "positives": int(labels.sum()),
        "threshold": float(threshold),
        "accuracy": ratio(tp + tn, len(labels)),
        "sensitivity": sens,
        "specificity": ratio(tn, tn + fp),
        "precision": prec,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "auc": _safe_auc(labels, scores),
        "pr_auc": float(average_precision_score(labels, scores)) if labels.sum() else float("nan"),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def choose_threshold(labels: np.ndarray, scores: np.ndarray, target_sensitivity: float = TARGET_SENSITIVITY) -> float:
    """Operating point chosen on validation data: the highest threshold whose sensitivity reaches
    ``target_sensitivity`` (so specificity is as high as that allows). Without positives, 0.5.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.sort(scores[labels == 1])
    if len(positives) == 0:
        return 0.5
    # the k-th smallest positive score keeps (n - k) / n of positives at or above it
    allowed_misses = int(np.floor((1.0 - target_sensitivity) * len(positives) + 1e-9))
    return float(positives[allowed_misses])


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
