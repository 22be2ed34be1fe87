"""ecs-train end to end on the tiny cohort: run folder contents, held-out evaluation, export, seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from headless import render_page
from helpers import compose
from omegaconf import OmegaConf

from ecs_models.bundle_format import read_bundle
from ecs_models.preprocessing import PreprocessConfig
from simulations.centralized.paired import score_held_out, score_synthetic
from simulations.centralized.run import finished_run, run_training

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train_smoke")
    exe = Path(sys.executable).parent / "ecs-train"
    done = subprocess.run([exe, "experiment=train_smoke", f"paths.root={root}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list((root / "runs" / "train" / "train_smoke").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_run_folder_holds_config_metrics_checkpoint_and_model(smoke_run: Path) -> None:
    for name in (".hydra/config.yaml", "metrics.json", "checkpoint.pt", "model/lsnet.onnx", "model/operating_point.json"):
        assert (smoke_run / name).is_file(), name
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["train_centers"] == ["university", "regional", "clinic"]
    assert set(metrics["held_out"]) == {"community", "teaching", "pooled"}
    assert not set(metrics["held_out_centers"]) & set(metrics["train_centers"])
    assert metrics["held_out"]["pooled"]["n"] == sum(metrics["held_out"][c]["n"] for c in ("community", "teaching"))
    assert "teacher" in metrics and metrics["gan"]["synthetic_images"] > 0
    assert [h["stage"] for h in metrics["history"]] == ["A", "B"]


def test_the_run_report_renders_in_chromium_without_errors(smoke_run: Path, artifacts_dir: Path) -> None:
    """ecs-train wrote report.html at the end of the run (synthetic ultrasound, epoch history,
    the teacher's cost: the centralized sections); Chromium loads it with no console error, no
    request beyond the file, and every image decodes."""
    report = smoke_run / "report.html"
    result = render_page(report, artifacts_dir / "report_centralized_smoke.png")
    assert result["errors"] == [], result["errors"]
    assert result["requests"] == [report.as_uri()]
    images = {alt: (complete, width, height) for alt, complete, width, height in result["images"]}
    assert set(images) >= {"ROC curves", "saliency maps", "real images", "synthetic ultrasound"}, images
    assert all(complete and width > 0 and height > 0 for complete, width, height in images.values()), images
    text = report.read_text()
    assert "teacher" in text and "simulated sonographer" in text and "No privacy mechanism" in text


def test_exported_student_matches_the_operating_point_file(smoke_run: Path) -> None:
    op = json.loads((smoke_run / "model" / "operating_point.json").read_text())
    assert op["onnx_max_abs_diff"] <= 1e-4
    shape = op["input"]["shape"]
    session = ort.InferenceSession(str(smoke_run / "model" / "lsnet.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})[0]
    assert logits.shape == (1, 2) and np.isfinite(logits).all()
    assert 0.0 <= op["threshold"] <= 1.0
    # the operating point: rule, target, and the validation figures at *its* threshold
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert op["rule"] == metrics["operating_point"]["rule"] == "sensitivity-first"
    assert op["threshold"] == metrics["threshold"] == metrics["val"]["threshold"]
    assert (op["val_sensitivity"], op["val_specificity"]) == (metrics["val"]["sensitivity"], metrics["val"]["specificity"])
    # the complete input recipe: the run's preprocessing, its resize to the model side, the training intensities
    spec = read_bundle(smoke_run / "model")
    cfg = OmegaConf.load(smoke_run / "config.yaml")
    assert PreprocessConfig(**spec.preprocess) == PreprocessConfig(output_size=int(cfg.training.preprocess_size))
    assert spec.size == int(cfg.training.img_size) == shape[-1] and spec.document["run"]["kind"] == "centralized"
    assert spec.intensity["n_images"] > 0 and spec.intensity["mean"][0] <= spec.intensity["mean"][-1]


def test_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    overrides = ["experiment=train_smoke", f"paths.root={tmp_path}", "gan.steps=1", "training.stage_b.epochs=0",
                 "training.max_steps_per_epoch=1"]
    cfg = compose("train", overrides)
    a = run_training(cfg, tmp_path / "a", log=lambda _m: None)
    b = run_training(cfg, tmp_path / "b", log=lambda _m: None)
    assert a["threshold"] == b["threshold"]
    assert a["held_out"]["pooled"] == b["held_out"]["pooled"]
    assert a["history"] == b["history"]

    # An ablation rerun reuses a finished folder only for the very same configuration.
    assert finished_run(tmp_path / "a", cfg) == json.loads(json.dumps(a, default=float))
    assert finished_run(tmp_path / "a", compose("train", [*overrides, "seed=1"])) is None
    (tmp_path / "b" / "metrics.json").unlink()  # interrupted before it finished
    assert finished_run(tmp_path / "b", cfg) is None


def test_ablation_experiment_selects_its_cpu_recipe_and_the_command_line_wins() -> None:
    """experiment=ablation trains with the recipe its rows were measured with (teacher at its own
    rate); training=gpu on the command line still replaces it."""
    cfg = compose("train", ["experiment=ablation"])
    assert (cfg.training.batch_size, cfg.training.stage_a.lr, cfg.training.stage_a.teacher_lr) == (8, 1e-3, 2e-4)
    assert list(cfg.seeds) == [0, 1, 2] and "lsnet_full" in cfg.variants
    gpu = compose("train", ["experiment=ablation", "training=gpu"])
    assert (gpu.training.batch_size, gpu.training.stage_a.teacher_lr) == (32, None)


def test_a_finished_run_is_rescored_as_it_was_evaluated(smoke_run: Path) -> None:
    """The paired comparison re-scores the kept student: same held-out figures as metrics.json."""
    from ecs_models.training.metrics import screening_metrics

    metrics = json.loads((smoke_run / "metrics.json").read_text())
    run = score_held_out(smoke_run, log=lambda _m: None)
    pooled = metrics["held_out"]["pooled"]
    assert len(run["labels"]) == len(run["patients"]) == pooled["n"]
    again = screening_metrics(run["labels"], run["scores"], run["threshold"])
    for key in ("auc", "sensitivity", "specificity"):
        assert again[key] == pytest.approx(pooled[key], abs=1e-6, nan_ok=True)


def test_synthetic_images_are_kept_with_the_run_and_can_be_scored(smoke_run: Path) -> None:
    from simulations.centralized.run import load_synthetic

    metrics = json.loads((smoke_run / "metrics.json").read_text())
    synthetic = load_synthetic(smoke_run / "synthetic.npz")
    assert len(synthetic) == metrics["gan"]["synthetic_images"] > 0
    image, label = synthetic[0]
    assert image.shape[0] == 1 and float(image.min()) >= 0 and float(image.max()) <= 1 and label in (0, 1)
    m = score_synthetic(smoke_run, smoke_run / "synthetic.npz")
    assert m["n"] == len(synthetic) and 0 <= m["sensitivity"] <= 1


def test_the_runs_checkpoint_exports_to_the_model_the_run_exported(smoke_run: Path, tmp_path: Path) -> None:
    """What ecs-evaluate does with checkpoint.pt (ecs_models.run_checkpoint): the same model
    (logits on one input), operating point and preprocessing as the run's own model/."""
    from ecs_models.run_checkpoint import export_checkpoint

    ours = read_bundle(export_checkpoint(smoke_run / "checkpoint.pt", tmp_path / "model"))
    theirs = read_bundle(smoke_run / "model")
    assert (ours.threshold, ours.size, ours.preprocess) == (theirs.threshold, theirs.size, theirs.preprocess)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 1, ours.size, ours.size)).astype(np.float32)
    sessions = [ort.InferenceSession(str(s.onnx_path), providers=["CPUExecutionProvider"]) for s in (ours, theirs)]
    logits = [session.run(None, {session.get_inputs()[0].name: x})[0] for session in sessions]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)


def test_the_run_exports_lsnet_with_region_selection(smoke_run: Path) -> None:
    """Issue 17: what ecs-train exports is the region-selection LSNet (the default model config),
    the checkpoint's student rebuilt with ``selection_region=2`` gives the bundle's logits."""
    import torch

    from ecs_models import create_model

    assert OmegaConf.load(smoke_run / "config.yaml").model.selection_region == 2
    saved = torch.load(smoke_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    student = {k.removeprefix("student."): v for k, v in saved["model"].items() if k.startswith("student.")}
    bundle = read_bundle(smoke_run / "model")
    model = create_model("lsnet", img_size=bundle.size, selection_region=2).eval()
    model.load_state_dict(student)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 1, bundle.size, bundle.size)).astype(np.float32)
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], expected, atol=1e-4)
