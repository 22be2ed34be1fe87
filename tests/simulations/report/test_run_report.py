"""``ecs-report`` without a training run: what it refuses and how (no traceback), that a failing
report never fails the run that asked for it, that the ROC points are the evaluation module's
AUC, and that the Chromium check used on real reports catches what it must catch.

The report of a real run is rendered in tests/simulations/test_federated_simulation.py, on the
smoke run that module trains anyway.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from headless import chromium_path, render_page

from ecs_models.evaluation import midrank_auc, roc_points
from simulations.report.build import report_after_run
from simulations.report.cli import main
from simulations.report.html import markdown


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "no such directory"),
    (lambda d: d, "is not a run directory"),
    (lambda d: (d / "config.yaml").write_text("seed: 0\n") and d, "did not finish"),
])
def test_bad_run_dirs_are_named_without_traceback(tmp_path: Path, make, message: str) -> None:  # noqa: ANN001
    target = make(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([str(target)])
    assert isinstance(stop.value.code, str) and stop.value.code.startswith("ecs-report: ") and message in stop.value.code


def test_unreadable_metrics_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(SystemExit, match=r"metrics.json: cannot be read as JSON"):
        main([str(tmp_path)])


def test_a_failing_report_keeps_the_run(tmp_path: Path) -> None:
    logged: list[str] = []
    assert report_after_run(tmp_path, logged.append) is None
    assert "the run itself is complete" in logged[-1]
    assert "not a run directory" in (tmp_path / "report_error.txt").read_text()


def test_roc_points_area_is_the_auc() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.4 * labels, 1)  # many ties
    p = roc_points(labels, scores)
    assert np.all(np.diff(p["fpr"]) >= 0) and np.all(np.diff(p["tpr"]) >= 0)
    assert (p["fpr"][[0, -1]] == [0, 1]).all() and (p["tpr"][[0, -1]] == [0, 1]).all()
    assert np.trapezoid(p["tpr"], p["fpr"]) == pytest.approx(midrank_auc(labels, scores), abs=1e-12)


def test_markdown_tables_and_escaping() -> None:
    out = markdown("## Title\n\n| a | b |\n|---|---|\n| **1** | <x> |\n\n- item `code`")
    assert "<h4>Title</h4>" in out and "<b>1</b>" in out and "&lt;x&gt;" in out and "<code>code</code>" in out


def test_the_chromium_check_catches_errors_and_broken_images(tmp_path: Path, artifacts_dir: Path) -> None:
    assert chromium_path(), "chromium is missing: scripts/install-chromium.sh (run by scripts/test.sh) installs Debian's chromium"
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>')
    result = render_page(page, tmp_path / "bad.png")
    assert any("boom" in e for e in result["errors"]), result
    assert result["images"] == [["broken", True, 0, 0]]
    assert (tmp_path / "bad.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_comparison_folder_reports_its_table_runs_and_each_arms_privacy(tmp_path: Path) -> None:
    """A comparison's own files (no cohort, no model): table, every arm x seed, privacy per arm."""
    import json

    arm = tmp_path / "fedavg" / "seed0"
    arm.mkdir(parents=True)
    (arm / "privacy.json").write_text(json.dumps({"unit": "patient", "delta": None, "sites": {}, "central": None}))
    (tmp_path / "compare.json").write_text(json.dumps({"experiment": "smoke", "seeds": [0], "arms": [{"name": "fedavg"}],
                                                       "cohort_dir": str(tmp_path / "gone")}))
    (tmp_path / "results.json").write_text(json.dumps([{"arm": "fedavg", "kind": "federated", "seed": 0, "status": "ok",
                                                        "held_out_auc": 0.61, "run_dir": str(arm)}]))
    (tmp_path / "table.md").write_text("| arm | held-out AUC |\n|---|---|\n| fedavg | 0.610 |\n")
    main([str(tmp_path), "--out", str(tmp_path / "r.html")])
    html = (tmp_path / "r.html").read_text()
    assert "Comparison (FLamby protocol)" in html and "<td>0.610</td>" in html
    assert "<td>fedavg seed 0</td><td>no privacy mechanism</td>" in html
    assert "cohort folder is not reachable" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_the_privacy_ledger_is_shown_with_its_epsilon_recomputed(tmp_path: Path) -> None:
    from server.privacy_ledger import epsilon_from_events
    from simulations.report.run_files import RunFiles
    from simulations.report.sections import privacy

    events = [{"kind": "gaussian", "noise_multiplier": 1.0, "count": 4}]
    entry = {"accountant": "rdp", "mechanism": "central Gaussian", "clipping_norm": 0.1, "events": events,
             "epsilon": epsilon_from_events(events, 1e-3, "rdp"), "delta": 1e-3}
    run = RunFiles(dir=tmp_path, kind="federated", privacy={"unit": "patient", "delta": 1e-3, "sites": {}, "central": entry})
    _, _, body = privacy(run)
    assert body.count(f"{entry['epsilon']:.4f}") == 2  # reported and recomputed agree
    assert "4 x gaussian (z = 1.000)" in body
    _, _, none = privacy(RunFiles(dir=tmp_path, kind="federated"))
    assert "no privacy mechanism" in none.lower()


def test_a_run_file_with_unexpected_content_is_named_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"held_out": 3}')
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(SystemExit, match=r"a run file does not hold what ecs-train / ecs-simulate write"):
        main([str(tmp_path)])
