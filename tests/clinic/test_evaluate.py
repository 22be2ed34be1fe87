"""ecs-evaluate on the tiny cohort with a tiny bundle: the JSON document (metrics with patient
bootstrap intervals, counts), per-file scores equal to ecs-screen's, the label file's refusals."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from client.data.labels import read_label_file
from clinic.evaluate_cli import main as evaluate
from clinic.screen_cli import main as screen


def test_a_hospital_validates_a_bundle_on_its_labelled_folder(tiny_bundle, tiny_cohort, tmp_path, capsys) -> None:
    center = tiny_cohort / "university"
    rows = [r for r in read_label_file(center / "manifest.csv") if r.modality == "US"]
    scores = tmp_path / "scores.csv"
    argv = [str(tiny_bundle), str(center), "--json", "--resamples", "200", "--scores", str(scores), "--quiet"]
    assert evaluate(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_images"] == len(rows) and doc["n_patients"] == len({r.patient_id for r in rows})
    assert doc["n_positive"] == sum(r.label for r in rows) and doc["n_refused"] == 0
    for name in ("auc", "sensitivity", "specificity"):
        m = doc[name]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], (name, m)
    assert doc["threshold"] == 0.5 and doc["model"]["name"] == "tiny"
    with scores.open() as handle:
        table = list(csv.DictReader(handle))
    assert [t["file"] for t in table] == [r.file for r in rows]
    # the same file screened alone gets the same probability (one preprocessing, one model run)
    assert screen([str(tiny_bundle), str(center / rows[0].file), "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)[0]
    assert f"{alone['probability']:.6f}" == table[0]["probability"]
    # the same seed gives the same intervals
    assert evaluate(argv) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == doc["auc"]


def test_several_centers_are_reported_apart_and_pooled(tiny_bundle, tiny_cohort, tmp_path, capsys) -> None:
    argv = [str(tiny_bundle), str(tiny_cohort), "--json", "--resamples", "50", "--scores", str(tmp_path / "s.csv"), "--quiet"]
    assert evaluate(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["by_center"]) == {p.name for p in tiny_cohort.iterdir() if (p / "manifest.csv").is_file()}
    assert doc["n_images"] == sum(m["n"] for m in doc["by_center"].values())


@pytest.mark.parametrize(("manifest", "message"), [
    ("patient_id,file,modality\np1,a.dcm,US\n", "label"),  # a required column missing
    (None, "no label file"),
])
def test_label_problems_are_refused_with_the_reason(tiny_bundle, tmp_path, manifest, message) -> None:
    data = tmp_path / "site"
    data.mkdir()
    if manifest is not None:
        (data / "manifest.csv").write_text(manifest)
    done = subprocess.run([sys.executable, "-m", "clinic.evaluate_cli", str(tiny_bundle), str(data), "--quiet"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_checkpoint_is_pointed_to_its_exported_bundle(tmp_path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "clinic.evaluate_cli", str(tmp_path / "checkpoint.pt"), str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "model/" in done.stderr and "Traceback" not in done.stderr
