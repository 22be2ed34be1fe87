"""The exported bundle: the operating point (the rule, its target, the threshold and the validation
figures at that threshold; figures of another threshold are refused) and the complete input
recipe, read back without torch into exactly the inputs training evaluated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file
from tiny_models import TinyClassifier

from client.data.dataset import SiteImageDataset
from client.data.labels import LabelRow
from clinic.model import ScreeningModel
from ecs_models.bundle import export_student
from ecs_models.bundle_format import BundleError, read_bundle
from ecs_models.evaluation import metrics_at, operating_point
from ecs_models.preprocessing import PIPELINE_VERSION, PreprocessConfig
from ecs_models.training.data import TransformedImages

LABELS = np.array([0, 0, 0, 1, 1, 1, 0, 1])
SCORES = np.array([0.1, 0.3, 0.45, 0.2, 0.6, 0.9, 0.7, 0.8])
RUN = {"kind": "test", "dir": "nowhere"}


def _export(tmp_path, size=16, threshold=0.6, val=None, preprocess=None):
    return export_student(TinyClassifier(), tmp_path, name="tiny", size=size, threshold=threshold, target_sensitivity=0.75,
                          val=val, chosen_on="a test", preprocess=preprocess or PreprocessConfig(), run=RUN)


def test_the_operating_point_file_records_the_rule_and_the_figures_at_its_threshold(tmp_path) -> None:
    op = operating_point(LABELS, SCORES, 0.75)
    _export(tmp_path, threshold=op["threshold"], val=op["val"])
    written = json.loads((tmp_path / "operating_point.json").read_text())
    assert written["rule"] == "sensitivity-first" and written["target_sensitivity"] == 0.75
    assert written["threshold"] == op["threshold"] == pytest.approx(0.6)
    assert (written["val_sensitivity"], written["val_specificity"]) == (0.75, 0.75)


def test_the_bundle_records_the_models_measured_latency_and_older_bundles_still_load(tmp_path) -> None:
    _export(tmp_path)
    latency = read_bundle(tmp_path).latency
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] and latency["runs"] >= 20
    assert (latency["threads"], latency["batch"]) == (1, 1) and latency["cpu"]
    assert "exporting machine" in latency["measured_on"]
    path = tmp_path / "operating_point.json"
    document = json.loads(path.read_text())
    del document["latency"]  # a bundle exported before latency was recorded
    path.write_text(json.dumps(document))
    assert read_bundle(tmp_path).latency is None


def test_validation_figures_of_another_threshold_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="not at the operating point"):
        _export(tmp_path, threshold=0.055, val=metrics_at(LABELS, SCORES, 0.5))
    assert not (tmp_path / "operating_point.json").exists()


def test_the_bundle_states_every_preprocessing_field_the_resize_and_the_run(tmp_path) -> None:
    cfg = PreprocessConfig(output_size=160, frame_policy="stride", frame_stride=3, target_spacing_mm=0.3)
    _export(tmp_path, size=128, preprocess=cfg)
    spec = read_bundle(tmp_path)
    assert PreprocessConfig(**spec.preprocess) == cfg and spec.pipeline_version == PIPELINE_VERSION
    recipe = spec.document["input"]
    assert recipe["resize"]["from"] == 160 and recipe["resize"]["to"] == spec.size == 128
    assert recipe["range"] == [-1.0, 1.0] and spec.document["run"] == RUN
    assert spec.document["model"]["name"] == "tiny" and len(spec.document["model"]["onnx_sha256"]) == 64


def test_a_160_px_preprocess_resized_to_128_reaches_the_model_as_training_fed_it(tmp_path) -> None:
    """The loader rebuilds the recipe from the bundle alone; its inputs equal, bit for bit, what
    training's evaluation path (SiteImageDataset + TransformedImages) gives for the same file."""
    path = get_testdata_file("examples_ybr_color.dcm")  # ultrasound with a tissue region and spacing
    cfg = PreprocessConfig(output_size=160)
    _export(tmp_path / "model", size=128, preprocess=cfg)
    row = LabelRow(patient_id="p1", file="examples_ybr_color.dcm", modality="US", label=1)
    training = TransformedImages(SiteImageDataset(path.rsplit("/", 1)[0], [row], cfg, None), 128, train=False)
    trained_on = training[0][0].numpy()  # [1, 128, 128]
    model = ScreeningModel(tmp_path / "model")
    prepared = model.prepare(path)
    assert prepared.inputs.shape == (1, 128, 128)
    np.testing.assert_array_equal(prepared.inputs, trained_on)
    with torch.no_grad():
        expected = torch.softmax(TinyClassifier()(training[0][0][None]), dim=-1)[0, 1].item()
    assert model.probabilities(prepared.inputs)[0] == pytest.approx(expected, abs=1e-5)


def test_an_older_bundle_that_does_not_state_its_preprocessing_is_refused(tmp_path) -> None:
    _export(tmp_path)
    document = json.loads((tmp_path / "operating_point.json").read_text())
    del document["format"]
    (tmp_path / "operating_point.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match="re-export"):
        read_bundle(tmp_path / "tiny.onnx")


def test_an_onnx_file_other_than_the_recorded_one_is_refused(tmp_path) -> None:
    _export(tmp_path)
    (tmp_path / "tiny.onnx").write_bytes((tmp_path / "tiny.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError, match="sha256 differs"):
        read_bundle(tmp_path)
