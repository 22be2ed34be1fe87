"""``ecs-simulate experiment=smoke privacy=local`` end to end on Flower's Simulation Runtime: the
tiny cohort, no GAN, every site trains under patient-level DP-SGD and releases its evaluation
histograms through the Gaussian mechanism, sites whose budget is spent decline (typed replies,
not errors), the others go on, and the run ends cleanly (final evaluation, export, privacy
record) once fewer than k = 2 sites can train.

The budget is set so that this happens at known rounds: with a batch larger than any site's
patients (q = 1: one Gaussian step per round), z = 2 for DP-SGD and z = 4 for each evaluation
release, a site's epsilon depends only on its delta, 1 / (10 x its patients). Before round r a
site needs room for r steps and r + 1 releases (each round's validation, the final one), RDP:
university (20 patients) 2.38 > 2.3 at r = 2; regional (14) 2.27 / 2.88 and clinic (6)
1.99 / 2.55 at r = 2 / 3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.messages import TRAIN_LOSS
from server.privacy_ledger import PrivacyLedger

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
ECS_SIMULATE = Path(sys.executable).parent / "ecs-simulate"
BUDGET = ["privacy=local", "privacy.local.target_epsilon=2.3", "privacy.local.noise_multiplier=2.0",
          "privacy.local.evaluation.noise_multiplier=4.0", "training.batch_size=64"]


def test_local_dp_smoke_federation_declines_over_budget_and_ends_cleanly(tmp_path: Path, tiny_cohort: Path) -> None:
    run_dir = tmp_path / "runs" / "local"
    env = {**os.environ, "ECS_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(ECS_SIMULATE), "experiment=smoke", f"run_dir={run_dir}", f"cohort_dir={tiny_cohort}", *BUDGET, "report=false",
         "synthesis=false", "rounds.gan=0", "rounds.stage_a=1", "rounds.stage_b=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["global_round"] for r in rounds] == [1, 2, 3]  # round 4: no k = 2 sites with budget left
    assert rounds[0]["answered"] == ["clinic", "regional", "university"] and not rounds[0]["declined"]
    assert list(rounds[1]["declined"]) == ["university"] and rounds[1]["answered"] == ["clinic", "regional"]
    assert "university" not in rounds[2]["sampled"] and set(rounds[2]["declined"]) == {"clinic", "regional"}
    assert not any(r["failed"] or r["rejected"] for r in rounds)  # a decline is a typed reply, not an error
    assert all(TRAIN_LOSS not in train for r in rounds for train in r["train"].values())  # private losses stay home
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "k = 2" in metrics["privacy"]["stopped"]  # why training stopped
    assert (run_dir / "model" / "lsnet.onnx").stat().st_size > 0  # the model it has is evaluated and exported
    ledger = PrivacyLedger.from_dict(json.loads((run_dir / "privacy.json").read_text()), mode="local")
    assert set(ledger.sites) == {"clinic", "regional", "university", "community", "teaching"} and ledger.central is None
    sgd, release = ({"kind": "gaussian", "noise_multiplier": z} for z in (2.0, 4.0))
    assert ledger.sites["university"]["events"] == [{**sgd, "count": 1}, {**release, "count": 2}]  # round 1, its val, final
    for center in ("clinic", "regional"):  # two rounds, each validated, then the final release
        assert ledger.sites[center]["events"] == [{**sgd, "count": 1}, {**release, "count": 1},
                                                  {**sgd, "count": 1}, {**release, "count": 2}]
    for center in ("clinic", "regional", "university"):
        assert ledger.sites[center]["epsilon"] <= 2.3 and "exhausted" in ledger.sites[center]
    for center in ("community", "teaching"):  # held out: one release, the final evaluation
        assert ledger.sites[center]["events"] == [{**release, "count": 1}] and "exhausted" not in ledger.sites[center]
    assert all(0 < reported <= 2.3 for reported, _ in ledger.verify(rtol=0.01).values())  # dp-accounting agrees
    assert sorted(rounds[1]["val"]) == ["clinic", "regional"]  # a site that declined releases no validation
    final = [json.loads(line) for line in (run_dir / "final_evaluation.jsonl").read_text().splitlines()]
    assert len(final) == 5 and not any("error" in line for line in final)  # every final release fit its budget
    assert json.loads((run_dir / "final_histograms.json").read_text())["bins"] == 10  # privacy.local.evaluation.bins
    for role in ("internal_test", "held_out"):  # the server says how much the noise can move its figures
        noise = metrics[role]["noise"]
        assert noise["noise_std_per_bin"] > 0 and 0 < noise["auc_sd"] < 0.5
