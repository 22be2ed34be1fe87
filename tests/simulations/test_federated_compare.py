"""``ecs-simulate experiment=compare``: centralized and federated arms, one table, one plot, resume.

End to end on the smoke experiment (tiny cohort and models), one seed, three arms (pooled, one
center alone, FedAvg): the first invocation stops the federated run's server after round 5
(``debug.stop_after_round``), so FedAvg is an error row while the centralized arms finish; the
second invocation reuses the finished arms and resumes FedAvg from its checkpoint. Then the
table holds every arm with finite numbers and the plot exists. The table code is also checked
on fabricated rows (three seeds, a failed run).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.federated.compare import (
    Arm,
    arm_config,
    centralized_config,
    compose_experiment,
    expand_arms,
    shared_overrides,
)
from simulations.federated.compare_report import write_report
from simulations.federated.runtime import process_alive

pytestmark = pytest.mark.slow(longest=True)  # among the longest runs: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
ECS_SIMULATE = Path(sys.executable).parent / "ecs-simulate"
ARMS = ["pooled", "local_university", "fedavg"]


def _compare(home: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    # one torch thread per process: on 2 shared cores, 2 intra-op threads spin against other jobs
    env = {**os.environ, "ECS_HOME": str(home), "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    # no GAN: the comparison's machinery does not depend on it (the smoke simulation tests train it)
    command = [str(ECS_SIMULATE), "experiment=compare", "compare.experiment=smoke", "seeds=[0]", "synthesis=false",
               f"compare.arms=[{','.join(ARMS)}]", f"run_dir={run_dir}", "report=false", *overrides]  # report: tests/simulations/report
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)


def _table(path: Path) -> dict[str, dict]:
    with path.open() as handle:
        return {row["arm"]: row for row in csv.DictReader(handle)}


def test_compare_runs_every_arm_records_failures_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "compare"
    first = _compare(tmp_path, run_dir, "debug.stop_after_round=3")
    log = first.stdout + first.stderr
    assert first.returncode == 1, log[-4000:]
    assert "[ecs-compare] (3/3) fedavg seed 0: ERROR" in first.stdout, log[-4000:]
    table = _table(run_dir / "table.csv")
    assert list(table) == ARMS
    assert table["fedavg"]["runs_failed"] == "1" and "did not complete" in table["fedavg"]["error"]
    assert table["pooled"]["runs_ok"] == "1" and math.isfinite(float(table["pooled"]["held_out_auc_mean"]))
    assert "| fedavg | federated | 0/1 | error:" in (run_dir / "table.md").read_text()

    second = _compare(tmp_path, run_dir)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "pooled seed 0: reusing the finished run" in second.stdout
    assert "local_university seed 0: reusing the finished run" in second.stdout
    assert "resuming the interrupted run" in second.stdout and "[ecs] resuming" in second.stdout
    table = _table(run_dir / "table.csv")
    assert list(table) == ARMS
    for arm, row in table.items():
        assert row["runs_ok"] == "1" and row["runs_failed"] == "0", row
        for key in ("held_out_auc_mean", "held_out_center_auc_mean", "held_out_sensitivity_mean", "held_out_specificity_mean",
                    "internal_test_auc_mean"):
            assert math.isfinite(float(row[key])), (arm, key, row)
    markdown = (run_dir / "table.md").read_text()
    assert all(f"| {arm} |" in markdown for arm in ARMS) and "error" not in markdown
    assert (run_dir / "compare.png").stat().st_size > 10_000
    fed = run_dir / "fedavg" / "seed0"
    rounds = [json.loads(line) for line in (fed / "rounds.jsonl").read_text().splitlines()]
    assert [r["global_round"] for r in rounds] == [1, 2, 3, 4]  # stages A and B, 2 rounds each
    assert all(r["train_seconds"] > 0 and r["sent_bytes"] > 0 for r in rounds)
    assert json.loads((fed / "metrics.json").read_text())["held_out_centers"] == ["community", "teaching"]
    record = json.loads((fed / "processes.json").read_text())
    assert record["left_running"] == [] and not [p for p in record["processes"] if process_alive(p["pid"], p["start"])]
    local = json.loads((run_dir / "local_university" / "seed0" / "internal_test_all_centers.json").read_text())
    assert local["centers"] == ["university", "regional", "clinic"] and local["n"] > 0


def test_arms_overrides_and_the_centralized_budget() -> None:
    arms = expand_arms(["pooled", "local", "fedbn"], ["university", "clinic"])
    assert [a.name for a in arms] == ["pooled", "local_university", "local_clinic", "fedbn"]
    assert arms[1] == Arm("local_university", "centralized", mode="local", center="university")
    with pytest.raises(ValueError, match="unknown arm"):
        expand_arms(["fedsomething"], [])
    assert shared_overrides(["compare.arms=[pooled]", "seeds=[0]", "strategy.proximal_mu=0.1", "rounds.gan=1"]) == ["rounds.gan=1"]
    fed = compose_experiment("quick", ["seed=2"])
    central = centralized_config(fed, arms[0])
    assert central.training.stage_a.epochs == fed.rounds.stage_a * fed.local.epochs
    assert central.training.stage_b.epochs == fed.rounds.stage_b * fed.local.epochs
    assert central.gan.steps == fed.rounds.gan * fed.local.gan_steps
    assert (central.mode, central.seed, central.model.name) == ("pooled", 2, fed.model.name)


def test_privacy_sweep_arms_are_fedavg_variants_that_privacy_accepts(tmp_path: Path) -> None:
    """experiment=privacy_sweep: every arm composes to a run the server would start (its privacy
    checks pass), on the same GroupNorm models without synthesis, differing in privacy only."""
    from omegaconf import OmegaConf

    from server.local_dp import check_local_dp, local_dp
    from server.privacy import RunPrivacy
    from strategies.factory import StrategySpec

    sweep = compose_experiment("privacy_sweep", [])
    arms = expand_arms(OmegaConf.to_container(sweep.compare.arms), ["university", "clinic"])
    assert [a.name for a in arms] == ["no_dp", "patient_dp_eps8", "patient_dp_eps3", "patient_dp_eps1", "hospital_dp_z2", "hospital_dp_z8"]
    budgets = {}
    for arm in arms:
        assert (arm.kind, arm.strategy) == ("federated", "fedavg") and arm.overrides[0] in arm.describe()
        cfg, _ = arm_config(str(sweep.compare.experiment), [], arm, 0, tmp_path / arm.name)
        assert (cfg.model.norm, cfg.teacher.norm, cfg.synthesis, cfg.strategy.name) == ("group", "group", False, "fedavg")
        RunPrivacy(OmegaConf.to_container(cfg.privacy, resolve=True), StrategySpec.from_config(
            OmegaConf.to_container(cfg.strategy, resolve=True)))  # raises on what central DP cannot protect
        check_local_dp(cfg)
        setting = local_dp(cfg)
        budgets[arm.name] = (str(cfg.privacy.mode), setting.target_epsilon if setting else None,
                             float(cfg.privacy.central.noise_multiplier) if cfg.privacy.mode == "central" else None)
    assert budgets == {"no_dp": ("none", None, None), "patient_dp_eps8": ("local", 8.0, None), "patient_dp_eps3": ("local", 3.0, None),
                       "patient_dp_eps1": ("local", 1.0, None), "hospital_dp_z2": ("central", None, 2.0),
                       "hospital_dp_z8": ("central", None, 8.0)}
    with pytest.raises(ValueError, match="must build on one arm"):
        expand_arms([{"name": "x", "arm": "local"}], ["university", "clinic"])
    with pytest.raises(ValueError, match="needs name and arm"):
        expand_arms([{"name": "x", "strategy": "fedavg"}], [])


def test_table_means_stds_error_rows_and_plot_from_rows(tmp_path: Path) -> None:
    def row(arm: str, kind: str, seed: int, auc: float) -> dict:
        return {"arm": arm, "kind": kind, "seed": seed, "status": "ok", "reused": False, "held_out_auc": auc,
                "held_out_center_auc": auc - (0.05 if kind == "federated" else 0.0), "held_out_sensitivity": 0.9, "held_out_specificity": 0.5, "internal_test_auc": auc + 0.05,
                "threshold": 0.5, "wall_seconds": 10.0, "run_dir": "x"}

    results = [row("pooled", "centralized", s, 0.80 + 0.01 * s) for s in range(3)]
    results += [row("local_a", "centralized", s, 0.70) for s in range(3)]
    results += [row("fedavg", "federated", s, 0.79 + 0.01 * s) for s in range(2)]
    results.append({"arm": "fedavg", "kind": "federated", "seed": 2, "status": "error", "error": "RuntimeError: boom"})
    meta = {"experiment": "quick", "seeds": [0, 1, 2], "held_out_centers": ["teaching", "rural"]}
    markdown = write_report(results, ["pooled", "local_a", "fedavg"], tmp_path, meta)
    table = _table(tmp_path / "table.csv")
    assert float(table["pooled"]["held_out_auc_mean"]) == pytest.approx(0.81)
    assert float(table["pooled"]["held_out_auc_std"]) == pytest.approx(0.0081650, abs=1e-6)
    assert (table["fedavg"]["runs_ok"], table["fedavg"]["runs_failed"]) == ("2", "1")
    assert "| pooled | centralized | 3/3 | 0.810 ± 0.008 |" in markdown
    assert "fedavg seed 2: RuntimeError: boom" in markdown
    assert "vs pooled (0.810): -0.015 (goal: within 0.02 — met)" in markdown
    assert "local_a (0.700): +0.095 (goal: at least +0.03 — met)" in markdown
    # the same verdict by the mean of the held-out centers' AUCs, its own column
    assert "| pooled | centralized | 3/3 | 0.810 ± 0.008 | 0.810 ± 0.008 |" in markdown
    assert "by mean held-out AUC (mean of centers): **fedavg** (0.745)" in markdown
    assert "vs pooled (0.810): -0.065 (goal: within 0.02 — not met)" in markdown
    assert len(list(csv.DictReader((tmp_path / "runs.csv").open()))) == 9
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    assert "epsilon" not in markdown  # no arm had a privacy record
    assert not (tmp_path / "privacy_utility.png").exists()


def test_a_privacy_sweep_table_shows_each_arms_epsilon_and_its_cost_against_no_dp(tmp_path: Path) -> None:
    def row(arm: str, seed: int, auc: float, patient: float = math.nan, hospital: float = math.nan) -> dict:
        return {"arm": arm, "kind": "federated", "seed": seed, "status": "ok", "reused": False, "held_out_auc": auc,
                "held_out_center_auc": auc, "held_out_sensitivity": 0.9, "held_out_specificity": 0.5,
                "internal_test_auc": auc, "epsilon_patient": patient, "epsilon_hospital": hospital,
                "threshold": 0.5, "wall_seconds": 10.0, "run_dir": "x"}

    results = [row("no_dp", s, 0.80) for s in range(2)]
    results += [row("patient_dp_eps8", s, 0.79 - 0.01 * s, patient=7.99 + 0.01 * s) for s in range(2)]
    results += [row("hospital_dp_z2", s, 0.60, hospital=4.7) for s in range(2)]
    markdown = write_report(results, ["no_dp", "patient_dp_eps8", "hospital_dp_z2"], tmp_path,
                            {"experiment": "quick", "seeds": [0, 1], "held_out_centers": ["teaching"]})
    assert "epsilon (patient / hospital) |" in markdown
    assert "| 7.995 ± 0.005 / n/a |" in markdown and "| n/a / 4.700 ± 0.000 |" in markdown
    assert "- patient_dp_eps8 vs no_dp: -0.015 (patient epsilon 8.00)" in markdown
    assert "- hospital_dp_z2 vs no_dp: -0.200 (hospital epsilon 4.70)" in markdown
    assert float(_table(tmp_path / "table.csv")["patient_dp_eps8"]["epsilon_patient_mean"]) == pytest.approx(7.995)
    assert (tmp_path / "privacy_utility.png").stat().st_size > 10_000  # AUC, sensitivity, specificity against epsilon
