"""The exported bundle's operating point: the rule, its target, the threshold and the validation
figures at that threshold; figures of another threshold are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecs_models.bundle import export_student
from ecs_models.evaluation import metrics_at, operating_point


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


LABELS = np.array([0, 0, 0, 1, 1, 1, 0, 1])
SCORES = np.array([0.1, 0.3, 0.45, 0.2, 0.6, 0.9, 0.7, 0.8])


def test_the_operating_point_file_records_the_rule_and_the_figures_at_its_threshold(tmp_path) -> None:
    op = operating_point(LABELS, SCORES, 0.75)
    export_student(_Tiny(), tmp_path, name="tiny", size=16, threshold=op["threshold"], target_sensitivity=0.75,
                   val=op["val"], chosen_on="a test")
    written = json.loads((tmp_path / "operating_point.json").read_text())
    assert written["rule"] == "sensitivity-first" and written["target_sensitivity"] == 0.75
    assert written["threshold"] == op["threshold"] == pytest.approx(0.6)
    assert (written["val_sensitivity"], written["val_specificity"]) == (0.75, 0.75)


def test_validation_figures_of_another_threshold_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="not at the operating point"):
        export_student(_Tiny(), tmp_path, name="tiny", size=16, threshold=0.055, target_sensitivity=0.95,
                       val=metrics_at(LABELS, SCORES, 0.5), chosen_on="a test")
    assert not (tmp_path / "operating_point.json").exists()
