"""A tiny exported model bundle for the clinic tools (a 3x3 convolution: seconds to export)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import TinyClassifier

from ecs_models.bundle import export_student
from ecs_models.preprocessing import PreprocessConfig

# training-frame statistics the domain check compares with (ecs_models.inputs.intensity_summary)
INTENSITY = {"n_images": 100, "quantiles": [0.005, 0.5, 0.995], "mean": [0.05, 0.3, 0.6], "std": [0.02, 0.15, 0.35]}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/model``: tiny.onnx + operating_point.json (40 px preprocess resized to 32, threshold 0.5)."""
    folder = tmp_path_factory.mktemp("bundle") / "model"
    export_student(TinyClassifier(), folder, name="tiny", size=32, threshold=0.5, target_sensitivity=0.95, val=None,
                   chosen_on="a test", preprocess=PreprocessConfig(output_size=40), run={"kind": "test"},
                   intensity=INTENSITY)
    return folder
