"""No shortcuts: the label lives in the anatomy, not in global image statistics or on the screen.

On a larger sibling of the tiny preset (same centers and scanners, 8x the participants,
prevalence 0.5 at every center so that center style cannot stand in for the label), written as
twins with endometrial-thickness calipers on every frame and on none:

* a logistic regression on simple global statistics of the fan (mean, std, 16-bin histogram)
  must not predict the label (cross-validated AUC < 0.6), while the anatomy does: the
  endometrial thickness alone reaches AUC > 0.7;
* a small model on the calipers' areas (the box around the drawn calipers and their label,
  resampled to a fixed size) learns the label better where the calipers are left in place than
  on the calipers-free twin (the thickness is written there), but on the training
  preprocessing's in-painted frames no better than on the twin: what the areas still tell is
  the anatomy under them, which the twin shows too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_spec
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from client.data.decode import decode_dicom
from client.data.labels import read_label_file
from client.data.preprocess import PreprocessConfig, preprocess
from simulations.cohort.generate import generate_cohort

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)

CENTERS = ("university", "regional", "clinic", "community", "teaching")


def _global_stats(path: Path) -> np.ndarray:
    decoded = decode_dicom(path)
    x0, y0, x1, y1 = decoded.region
    fan = decoded.frames[0, y0 : y1 + 1, x0 : x1 + 1]
    values = fan[fan > 0.02]  # inside the fan (outside is black)
    hist, _ = np.histogram(values, bins=16, range=(0.0, 1.0))
    return np.concatenate([[values.mean(), values.std()], hist / hist.sum()])


def _cv_auc(features: np.ndarray, labels: np.ndarray, groups_seed: int = 0, c: float = 1.0) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=groups_seed)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def _balanced_cohort(out: Path, caliper_probability: float) -> Path:
    overrides = ["+cohort.scale=8", "cohort.max_cine_frames=1", "cohort.extra_image_rate=0",
                 f"+cohort.scanner_overrides.caliper_probability={caliper_probability}"]
    overrides += [f"cohort.centers.{c}.prevalence=0.5" for c in CENTERS]
    overrides += [f"cohort.centers.{c}.n_mri=0" for c in ("university", "regional", "teaching")]
    overrides += ["cohort.centers.university.n_paired=0"]
    generate_cohort(tiny_spec(*overrides), out, seed=11, workers=2, log=lambda _m: None)
    return out


@pytest.fixture(scope="module")
def balanced_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Calipers on every frame."""
    return _balanced_cohort(tmp_path_factory.mktemp("balanced"), 1.0)


@pytest.fixture(scope="module")
def balanced_twin_without_calipers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same participants, frames and files, without calipers."""
    return _balanced_cohort(tmp_path_factory.mktemp("balanced_twin"), 0.0)


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


AREA_SHAPE = (24, 48)  # the calipers' box, resampled: rows x columns


def _area(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box (y0, y1, x0, x1) of ``frame`` resampled to AREA_SHAPE, flattened."""
    y0, y1, x0, x1 = box
    crop = frame[y0:y1, x0:x1]
    zoomed = ndimage.zoom(crop, (AREA_SHAPE[0] / crop.shape[0], AREA_SHAPE[1] / crop.shape[1]), order=1)
    return zoomed[: AREA_SHAPE[0], : AREA_SHAPE[1]].ravel()


def test_caliper_areas_tell_nothing_after_inpainting(balanced_cohort: Path, balanced_twin_without_calipers: Path) -> None:
    removed = PreprocessConfig(output_size=None)  # the training pipeline at the scanner's own pixel size
    kept = replace(removed, remove_annotations=False)
    areas: dict[str, list[np.ndarray]] = {"calipers kept": [], "in-painted": [], "twin without calipers": []}
    labels = []
    for center in CENTERS:
        for row in read_label_file(balanced_cohort / center / "manifest.csv"):
            with_calipers = decode_dicom(balanced_cohort / center / row.file)
            without = preprocess(decode_dicom(balanced_twin_without_calipers / center / row.file), kept)[0]
            left_in_place = preprocess(with_calipers, kept)[0]
            drawn = np.abs(left_in_place - without) > 1.0 / 255.0
            if not drawn.any():  # a caliper outside the fan's crop
                continue
            rows, cols = np.nonzero(drawn)
            box = (max(rows.min() - 2, 0), rows.max() + 3, max(cols.min() - 2, 0), cols.max() + 3)
            areas["calipers kept"].append(_area(left_in_place, box))
            areas["in-painted"].append(_area(preprocess(with_calipers, removed)[0], box))
            areas["twin without calipers"].append(_area(without, box))
            labels.append(row.label)
    labels = np.array(labels)
    assert len(labels) >= 300 and 0.4 < labels.mean() < 0.6
    # three shuffles of the folds, averaged: a difference of 0.03 is then not fold noise
    auc = {name: float(np.mean([_cv_auc(np.array(x), labels, seed, c=0.1) for seed in range(3)]))
           for name, x in areas.items()}
    print("caliper-area AUC: " + ", ".join(f"{name} {value:.3f}" for name, value in auc.items()))
    assert auc["calipers kept"] > auc["twin without calipers"] + 0.05  # the areas can carry the label
    assert auc["in-painted"] < auc["twin without calipers"] + 0.03  # after removal they carry only anatomy
