"""``ecs-simulate`` end to end on Flower's Simulation Runtime (subprocesses, tiny cohort).

One shared home (cohort, cache) for three runs: the smoke experiment (the reference), the same
experiment stopped by the server after round 3, and its resumption. In all three the clinic
drops every training round (a simulated transient failure with p = 1): k = 2 of 3 still holds.
Across all of them no held-out center is ever sent a train message (``train_centers``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from headless import render_page

from simulations.federated.runtime import process_alive

pytestmark = pytest.mark.slow(longest=True)  # among the longest runs: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
ECS_SIMULATE = Path(sys.executable).parent / "ecs-simulate"
FAULT = "federation.faults={clinic:{drop_p:1.0}}"
HELD_OUT = {"community", "teaching"}


def _simulate(home: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECS_HOME": str(home), "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    return subprocess.run([str(ECS_SIMULATE), "experiment=smoke", f"run_dir={run_dir}", FAULT, *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=540)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ecs_home")


@pytest.fixture(scope="module")
def smoke_run(home: Path) -> Path:
    run_dir = home / "runs" / "smoke"
    result = _simulate(home, run_dir)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "[ecs] final evaluation" in result.stdout
    (run_dir / "ecs-simulate.stdout").write_text(result.stdout)  # for the report test
    return run_dir


@pytest.fixture(scope="module")
def resumed_run(home: Path, smoke_run: Path) -> Path:
    """The smoke experiment stopped by the server after round 3, then resumed (after ``smoke_run``)."""
    run_dir = home / "runs" / "resumed"
    stopped = _simulate(home, run_dir, "debug.stop_after_round=3")
    assert stopped.returncode != 0
    assert not (run_dir / "metrics.json").exists()
    assert [r["global_round"] for r in _jsonl(run_dir / "rounds.jsonl")] == [1, 2, 3]
    resumed = _simulate(home, run_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "resuming" in resumed.stdout
    return run_dir


def test_smoke_experiment_trains_on_training_centers_and_evaluates_held_out_ones(smoke_run: Path) -> None:
    rounds = _jsonl(smoke_run / "rounds.jsonl")
    assert [r["global_round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    assert [r["phase"] for r in rounds] == ["gan"] * 2 + ["stage_a"] * 2 + ["stage_b"] * 2
    for r in rounds:
        touched = set(r["sampled"]) | set(r["answered"]) | set(r["train"]) | set(r["val"]) | set(r["failed"])
        assert not touched & HELD_OUT, r
        assert r["aggregated"]
    stage_rounds = [r for r in rounds if r["phase"] != "gan"]
    assert all("simulated" in r["failed"]["clinic"] and r["answered"] == ["regional", "university"] for r in stage_rounds)
    assert all("clinic" not in r["sampled"] for r in rounds if r["phase"] == "gan")  # no MRI: no GAN
    final = {line["center"]: line for line in _jsonl(smoke_run / "final_evaluation.jsonl")}
    assert {c for c, line in final.items() if line["role"] == "held_out"} == HELD_OUT
    assert all(final[c]["n"] > 0 and final[c]["split"] == "all" for c in HELD_OUT)
    assert {c for c, line in final.items() if line["role"] == "train"} == {"clinic", "regional", "university"}
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["held_out"]["n"] == sum(final[c]["n"] for c in HELD_OUT)
    assert (smoke_run / "model" / "lsnet.onnx").stat().st_size > 0
    op = json.loads((smoke_run / "model" / "operating_point.json").read_text())
    assert 0 < op["threshold"] < 1 and op["rule"] == "sensitivity-first"
    assert op["threshold"] == metrics["threshold"] == metrics["val"]["threshold"]  # figures at the operating point
    assert (op["val_sensitivity"], op["val_specificity"]) == (metrics["val"]["sensitivity"], metrics["val"]["specificity"])
    assert op["run"]["kind"] == "federated" and op["input"]["intensity"] is None  # the server never sees images
    assert op["input"]["preprocess"]["output_size"] == op["input"]["resize"]["from"] and op["format"] == 2
    assert (smoke_run / "config.yaml").is_file() and "flwr" in json.loads((smoke_run / "versions.json").read_text())


def test_the_run_report_renders_in_chromium_without_errors(smoke_run: Path, artifacts_dir: Path) -> None:
    """ecs-simulate wrote report.html and printed its path; headless Chromium loads it with no
    console error and no request beyond the file itself, and every image decodes."""
    report = smoke_run / "report.html"
    assert f"[ecs-report] report: {report.resolve()}" in (smoke_run / "ecs-simulate.stdout").read_text()
    result = render_page(report, artifacts_dir / "report_federated_smoke.png")
    assert result["errors"] == [], result["errors"]
    assert result["requests"] == [report.as_uri()]  # self-contained: nothing fetched
    images = {alt: (complete, width, height) for alt, complete, width, height in result["images"]}
    assert set(images) >= {"per-round validation curves", "ROC curves from histograms", "ROC curves", "saliency maps",
                           "real images"}, images
    assert all(complete and width > 0 and height > 0 for complete, width, height in images.values()), images
    text = report.read_text()
    for expected in ("simulated sonographer", "SIMULATED, not a person", "No privacy mechanism", "community", "teaching"):
        assert expected in text, expected


def test_every_process_started_is_stopped(smoke_run: Path) -> None:
    record = json.loads((smoke_run / "processes.json").read_text())
    commands = " ".join(p["cmd"] for p in record["processes"])
    assert "flower-superlink" in commands and "flwr-simulation" in commands and "ray" in commands
    assert record["left_running"] == []
    assert not [p["pid"] for p in record["processes"] if process_alive(p["pid"], p["start"])]


def test_server_stopped_after_round_3_resumes_to_the_uninterrupted_result(smoke_run: Path, resumed_run: Path) -> None:
    run_dir = resumed_run
    assert [r["global_round"] for r in _jsonl(run_dir / "rounds.jsonl")] == [1, 2, 3, 4, 5, 6]
    with np.load(smoke_run / "final_arrays.npz") as ref, np.load(run_dir / "final_arrays.npz") as got:
        assert sorted(ref.files) == sorted(got.files)
        for key in ref.files:
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-6, err_msg=key)
    for name in ("processes.json",):
        assert json.loads((run_dir / name).read_text())["left_running"] == []


def test_held_out_centers_never_receive_a_train_message_through_faults_and_resume(smoke_run: Path, resumed_run: Path) -> None:
    for run_dir in (smoke_run, resumed_run):  # the resumed run's file holds rounds of both of its processes
        rounds = _jsonl(run_dir / "rounds.jsonl")
        assert [r["global_round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
        for r in rounds:
            assert r["train_centers"] and not set(r["train_centers"]) & HELD_OUT, r
            assert r["train_centers"] == r["sampled"]
        stage_rounds = [r for r in rounds if r["phase"] != "gan"]
        assert all(r["train_centers"] == ["clinic", "regional", "university"] for r in stage_rounds)  # clinic's drops included
