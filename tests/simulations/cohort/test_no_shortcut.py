"""No shortcuts: the label lives in the anatomy, not in global image statistics.

On a larger sibling of the tiny preset (same centers and scanners, 8x the participants,
prevalence 0.5 at every center so that center style cannot stand in for the label), a
logistic regression on simple global statistics of the fan (mean, std, 16-bin histogram)
must not predict the label (cross-validated AUC < 0.6), while the anatomy does: the
endometrial thickness alone reaches AUC > 0.7.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_spec
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from client.data.decode import decode_dicom
from client.data.labels import read_label_file
from simulations.cohort.generate import generate_cohort

CENTERS = ("university", "regional", "clinic", "community", "teaching")


def _global_stats(path: Path) -> np.ndarray:
    decoded = decode_dicom(path)
    x0, y0, x1, y1 = decoded.region
    fan = decoded.frames[0, y0 : y1 + 1, x0 : x1 + 1]
    values = fan[fan > 0.02]  # inside the fan (outside is black)
    hist, _ = np.histogram(values, bins=16, range=(0.0, 1.0))
    return np.concatenate([[values.mean(), values.std()], hist / hist.sum()])


def _cv_auc(features: np.ndarray, labels: np.ndarray, groups_seed: int = 0) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=groups_seed)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


@pytest.fixture(scope="module")
def balanced_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    overrides = ["+cohort.scale=8", "cohort.max_cine_frames=1", "cohort.extra_image_rate=0"]
    overrides += [f"cohort.centers.{c}.prevalence=0.5" for c in CENTERS]
    overrides += [f"cohort.centers.{c}.n_mri=0" for c in ("university", "regional", "teaching")]
    overrides += ["cohort.centers.university.n_paired=0"]
    out = tmp_path_factory.mktemp("balanced")
    generate_cohort(tiny_spec(*overrides), out, seed=11, workers=2, log=lambda _m: None)
    return out


def test_global_image_statistics_do_not_predict_the_label(balanced_cohort: Path) -> None:
    features, labels, thickness = [], [], []
    for center in CENTERS:
        for row in read_label_file(balanced_cohort / center / "manifest.csv"):
            features.append(_global_stats(balanced_cohort / center / row.file))
            labels.append(row.label)
            thickness.append(row.endometrial_thickness_mm)
    features, labels = np.array(features), np.array(labels)
    assert len(labels) >= 300 and 0.4 < labels.mean() < 0.6
    shortcut_auc = _cv_auc(features, labels)
    anatomy_auc = _cv_auc(np.array(thickness)[:, None], labels)
    print(f"global-statistics AUC {shortcut_auc:.3f}, endometrial-thickness AUC {anatomy_auc:.3f}")
    assert shortcut_auc < 0.6
    assert anatomy_auc > 0.7  # the same pipeline finds signal where the anatomy has it
