"""The shortcut audit end to end on the tiny cohort (``--preset smoke``): twin cohorts, both
trainings, the report's structure, reuse of the finished runs, and a folder of another data
pipeline version refused."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from simulations.centralized.cli import variant_config
from simulations.centralized.run import finished_run
from simulations.centralized.shortcut_audit import CROSS_CHECK, TWINS, audit_config, main, run_audit

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def smoke_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, list[str]]:
    root = tmp_path_factory.mktemp("shortcut_audit")
    overrides = [f"paths.root={root}", "cohort_workers=1"]
    out = root / "audit"
    report = main(["--preset", "smoke", "--resamples", "20", "--out", str(out), *overrides])
    return report, out, overrides


def _manifest(cohort_dir: str) -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted(Path(cohort_dir).glob("*/manifest.csv")):
        with path.open() as handle:
            rows += [(path.parent.name, r["patient_id"], r["file"]) for r in csv.DictReader(handle)]
    return rows


def test_report_holds_both_twins_per_center_the_cross_check_and_a_verdict(smoke_audit) -> None:
    report, out, _ = smoke_audit
    assert json.loads((out / "audit.json").read_text())["verdict"] == report["verdict"]
    markdown = (out / "audit.md").read_text()
    assert "| all held-out images |" in markdown and report["verdict"] in markdown
    centers = ["community", "teaching"]  # the tiny cohort's held-out centers
    for table, keys in (("held_out_auc", TWINS), ("cross_check_auc", CROSS_CHECK)):
        assert list(report[table]) == ["all", *centers]
        for row in report[table].values():
            assert set(keys) | {"difference", "low", "high", "images", "positives"} <= set(row)
            if not math.isnan(row["difference"]):
                assert row["difference"] == pytest.approx(row[keys[0]] - row[keys[1]])
        assert report[table]["all"]["images"] == sum(report[table][c]["images"] for c in centers)
    assert report["agree"] == (abs(report["held_out_auc"]["all"]["difference"]) <= report["tolerance"])
    assert report["verdict"].startswith("VERDICT: ")
    # the calipers-trained model on its own images is the calipers twin's held-out figure
    assert report["cross_check_auc"]["all"]["on_calipers_images"] == report["held_out_auc"]["all"]["calipers"]
    (seed_row,) = report["per_seed"]
    assert seed_row["calipers"]["auc"]["pooled"] == pytest.approx(report["held_out_auc"]["all"]["calipers"])
    assert seed_row["no_calipers"]["seconds"] > 0


def test_twins_hold_the_same_participants_and_files(smoke_audit) -> None:
    report, _, _ = smoke_audit
    calipers, none = (_manifest(report["cohorts"][t]) for t in TWINS)
    assert calipers == none and calipers
    summaries = [json.loads((Path(report["cohorts"][t]) / "cohort.json").read_text()) for t in TWINS]
    assert summaries[0]["fingerprint"] != summaries[1]["fingerprint"]


def test_finished_runs_are_reused_and_another_pipeline_version_is_refused(smoke_audit, tmp_path: Path) -> None:
    report, out, overrides = smoke_audit
    cfg = audit_config("smoke", None, overrides)
    for twin in TWINS:
        vcfg = variant_config(cfg, OmegaConf.to_container(cfg.variants[twin]), 0)
        assert finished_run(out / twin / "seed0", vcfg) is not None, twin
    (tmp_path / "pipeline.json").write_text(json.dumps({"pipeline_version": -1}))
    with pytest.raises(ValueError, match="pipeline version -1"):
        run_audit(cfg, tmp_path)


def test_parallel_runs_equal_sequential_runs_at_equal_threads(smoke_audit, tmp_path: Path, monkeypatch) -> None:
    """``--jobs``: runs trained side by side in spawned processes (one torch thread each on two
    cores) give the numbers of the same runs trained one after the other with one thread."""
    import os

    import torch

    from simulations.centralized.cli import train_variants

    _, _, overrides = smoke_audit
    cfg = audit_config("smoke", [1], overrides)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    parallel, _ = train_variants(cfg, tmp_path / "parallel", jobs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential, _ = train_variants(cfg, tmp_path / "sequential")
    finally:
        torch.set_num_threads(threads)
    for twin in TWINS:
        assert (tmp_path / "parallel" / twin / "seed1" / "metrics.json").is_file()
        same = [json.dumps(runs[twin][0]["held_out"], sort_keys=True) for runs in (parallel, sequential)]  # NaN == NaN
        assert same[0] == same[1], twin
