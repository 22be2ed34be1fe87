"""Paired comparison of runs: patient-level bootstrap of B - A (synthetic scores, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.centralized.paired import main, paired_bootstrap


def _run(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    patients = [f"p{i // 2}" for i in range(len(labels))]  # two images per patient
    return {"labels": labels, "scores": scores, "patients": patients, "threshold": threshold}


@pytest.fixture()
def labels() -> np.ndarray:
    return np.tile([0, 0, 1, 1], 30)  # 120 images, 60 patients, both images of a patient share a label


def test_identical_runs_differ_by_nothing(labels: np.ndarray) -> None:
    scores = np.random.default_rng(0).random(len(labels))
    result = paired_bootstrap([_run(scores, labels)], [_run(scores, labels)], resamples=50)
    for r in result.values():
        assert r["diff"] == 0 and r["low"] == 0 and r["high"] == 0 and r["p_not_better"] == 1.0


def test_a_better_model_is_found_better_with_an_interval_above_zero(labels: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    noise = rng.random((2, len(labels)))
    weak = [_run(0.2 * labels + n, labels, 0.6) for n in noise]
    strong = [_run(0.8 * labels + 0.5 * n, labels, 0.6) for n in noise]
    result = paired_bootstrap(weak, strong, resamples=200, seed=3)
    assert result["auc"]["b"] > result["auc"]["a"]
    assert result["auc"]["low"] > 0 and result["auc"]["p_not_better"] < 0.05
    assert result["auc"]["low"] <= result["auc"]["diff"] <= result["auc"]["high"]
    # and the other way round it is worse, by the same amount
    reverse = paired_bootstrap(strong, weak, resamples=200, seed=3)
    assert reverse["auc"]["diff"] == pytest.approx(-result["auc"]["diff"])
    assert reverse["auc"]["high"] < 0


def test_runs_on_different_images_are_refused(labels: np.ndarray) -> None:
    scores = np.linspace(0, 1, len(labels))
    other = _run(scores, labels)
    other["patients"] = ["x" + p for p in other["patients"]]
    with pytest.raises(ValueError, match="same held-out images"):
        paired_bootstrap([_run(scores, labels)], [other])
    with pytest.raises(ValueError, match="same number of runs"):
        paired_bootstrap([_run(scores, labels)], [])


def test_cli_names_a_folder_that_is_not_a_run(tmp_path) -> None:
    with pytest.raises(SystemExit, match="no metrics.json"):
        main(["--a", str(tmp_path), "--b", str(tmp_path)])
