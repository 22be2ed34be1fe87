"""ecs-evaluate on the tiny cohort with a tiny bundle: the JSON document (metrics with patient
bootstrap intervals, counts, per center and pooled), per-file scores equal to ecs-screen's,
seeded intervals, the label file's refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import TinyClassifier

from client.data.labels import read_label_file
from clinic.evaluate import ScoredFile, evaluate_site
from clinic.evaluate_cli import main as evaluate
from clinic.screen import ScreenResult
from clinic.screen_cli import main as screen
from ecs_models.training.distill import DistillationModel


@pytest.fixture(scope="module")
def evaluated(tiny_bundle: Path, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """``ecs-evaluate --json`` over the whole tiny cohort (its centers' manifests): (document, scores CSV)."""
    scores = tmp_path_factory.mktemp("evaluate") / "scores.csv"
    argv = [str(tiny_bundle), str(tiny_cohort), "--json", "--resamples", "200", "--scores", str(scores), "--quiet"]
    capture = pytest.MonkeyPatch()
    lines: list[str] = []
    capture.setattr("builtins.print", lambda *a, **_k: lines.append(" ".join(map(str, a))))
    try:
        assert evaluate(argv) == 0
    finally:
        capture.undo()
    return json.loads("\n".join(lines)), scores


def test_the_document_counts_images_and_patients_and_brackets_each_metric(evaluated, tiny_cohort) -> None:
    doc, _ = evaluated
    centers = {p.name: [r for r in read_label_file(p / "manifest.csv") if r.modality == "US"]
               for p in tiny_cohort.iterdir() if (p / "manifest.csv").is_file()}
    rows = [r for center_rows in centers.values() for r in center_rows]
    assert doc["n_images"] == len(rows) and doc["n_refused"] == 0
    assert doc["n_patients"] == len({(c, r.patient_id) for c, rs in centers.items() for r in rs})
    assert doc["n_positive"] == sum(r.label for r in rows)
    for name in ("auc", "sensitivity", "specificity"):
        assert doc[name]["ci_low"] <= doc[name]["value"] <= doc[name]["ci_high"], (name, doc[name])
    assert doc["threshold"] == 0.5 and doc["model"]["name"] == "tiny"
    assert set(doc["by_center"]) == set(centers)
    assert {c: m["n"] for c, m in doc["by_center"].items()} == {c: len(rs) for c, rs in centers.items()}


def test_per_file_scores_are_what_ecs_screen_gives(evaluated, tiny_bundle, tiny_cohort, capsys) -> None:
    _, scores = evaluated
    with scores.open() as handle:
        first = next(csv.DictReader(handle))
    path = tiny_cohort / first["file"]  # relative to the folder evaluated
    assert screen([str(tiny_bundle), str(path), "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)[0]
    assert f"{alone['probability']:.6f}" == first["probability"]


def test_the_same_seed_gives_the_same_intervals() -> None:
    scored = [ScoredFile("a", f"p{i // 2}", i % 3 == 0, ScreenResult(f"f{i}", (i * 37 % 100) / 100, None))
              for i in range(40)]
    first, again = (evaluate_site(scored, 0.5, resamples=300, seed=7) for _ in range(2))
    assert first == again and first["n_patients"] == 20
    assert evaluate_site(scored, 0.5, resamples=300, seed=8)["auc"] != first["auc"]


@pytest.mark.parametrize(("manifest", "message"), [
    ("patient_id,file,modality\np1,a.dcm,US\n", "label"),  # a required column missing
    (None, "no label file"),
])
def test_label_problems_are_refused_with_the_reason(tiny_bundle, tmp_path, manifest, message) -> None:
    data = tmp_path / "site"
    data.mkdir()
    if manifest is not None:
        (data / "manifest.csv").write_text(manifest)
    with pytest.raises(SystemExit) as exit_:
        evaluate([str(tiny_bundle), str(data), "--quiet", "--scores", str(tmp_path / "s.csv")])
    assert str(exit_.value.code).startswith("ecs-evaluate: ") and message in str(exit_.value.code)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A centralized run folder as ecs-train leaves it, without model/: config.yaml and
    checkpoint.pt of the tiny_bundle's model (same weights, 40 px resized to 32, threshold 0.5)."""
    run = tmp_path_factory.mktemp("run") / "tiny-run"
    run.mkdir()
    config = {"model": {"name": "tiny_classifier"}, "training": {"img_size": 32, "preprocess_size": 40},
              "mode": "pooled", "seed": 0, "experiment_name": "test"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"threshold": 0.5, "operating_point": {"target_sensitivity": 0.95}, "val": None, "train_centers": ["a"]}
    torch.save({"model": DistillationModel(TinyClassifier()).state_dict(), "metrics": metrics}, run / "checkpoint.pt")
    return run


def _file_scores(path: Path, center: str) -> dict[str, str]:
    """{file name: probability} of ``center``'s rows of a per-file scores CSV."""
    with path.open() as handle:
        return {Path(row["file"]).name: row["probability"] for row in csv.DictReader(handle) if row["center"] == center}


def test_a_checkpoint_gives_the_per_file_scores_of_its_exported_bundle(evaluated, tiny_run, tiny_cohort, tmp_path, capsys) -> None:
    """ecs-evaluate on the run's checkpoint.pt exports it (ecs_models.run_checkpoint, with the run's
    config) and scores as the bundle export_student made of the same weights (``evaluated``)."""
    scores = tmp_path / "scores.csv"
    assert evaluate([str(tiny_run / "checkpoint.pt"), str(tiny_cohort / "clinic"), "--json", "--resamples", "20", "--quiet",
                     "--scores", str(scores)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["threshold"] == 0.5 and doc["model"]["run"]["exported_from"] == "checkpoint.pt"
    assert doc["model"]["checkpoint"] == str(tiny_run / "checkpoint.pt")
    bundle_scores = _file_scores(evaluated[1], "clinic")  # one center: seconds
    assert len(bundle_scores) == doc["n_images"] > 0 and _file_scores(scores, "clinic") == bundle_scores


def test_without_torch_a_checkpoint_is_refused_with_the_install_command(tiny_run, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("clinic.checkpoint.find_spec", lambda name: None)  # the clinic install: no torch
    with pytest.raises(SystemExit) as exit_:
        evaluate([str(tiny_run), str(tmp_path)])
    message = str(exit_.value.code)
    assert 'pip install ".[train]"' in message and "\n" not in message
