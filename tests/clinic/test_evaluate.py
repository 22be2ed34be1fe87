"""ecs-evaluate on the tiny cohort with a tiny bundle: the JSON document (metrics with patient
bootstrap intervals, counts, per center and pooled), per-file scores equal to ecs-screen's,
seeded intervals, the label file's refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from client.data.labels import read_label_file
from clinic.evaluate import ScoredFile, evaluate_site
from clinic.evaluate_cli import main as evaluate
from clinic.screen import ScreenResult
from clinic.screen_cli import main as screen


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


def test_a_checkpoint_is_pointed_to_its_exported_bundle(tmp_path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        evaluate([str(tmp_path / "checkpoint.pt"), str(tmp_path)])
    assert "model/" in str(exit_.value.code)
