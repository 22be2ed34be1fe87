"""``ecs-simulate experiment=smoke privacy=central`` end to end on Flower's Simulation Runtime:
the tiny cohort, one round per stage, no GAN. Flower's DP wrapper releases every round, and the
run directory's privacy record holds the central entry whose epsilon dp-accounting reproduces
from its recorded events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.privacy_ledger import PrivacyLedger

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
ECS_SIMULATE = Path(sys.executable).parent / "ecs-simulate"


def test_central_dp_smoke_federation_writes_a_record_dp_accounting_reproduces(tmp_path: Path, tiny_cohort: Path) -> None:
    run_dir = tmp_path / "runs" / "central"
    env = {**os.environ, "ECS_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(ECS_SIMULATE), "experiment=smoke", f"run_dir={run_dir}", f"cohort_dir={tiny_cohort}", "privacy=central", "report=false",
         "strategy.weighting=uniform", "synthesis=false", "rounds.gan=0", "rounds.stage_a=1", "rounds.stage_b=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rounds] == ["stage_a", "stage_b"] and all(r["aggregated"] for r in rounds)
    data = json.loads((run_dir / "privacy.json").read_text())
    assert set(data) == {"unit", "delta", "sites", "central"} and data["sites"] == {}
    ledger = PrivacyLedger.from_dict(data, mode="central")
    central = ledger.central
    z, clip = 1.0, 1.0  # configs/privacy/central.yaml
    assert central["events"] == [{"kind": "gaussian", "noise_multiplier": z, "count": 2}]  # one release per round
    trainers = len(rounds[0]["sampled"])
    assert central["noise_std"] == {"stage_a": round(z * clip / trainers, 6), "stage_b": round(z * clip / trainers, 6)}
    reported, recomputed = ledger.verify(rtol=0.01)["central"]  # dp-accounting reproduces Flower's accountant
    assert 0 < reported <= central["max_epsilon"]
    assert central["epsilon_one_patient"] > reported  # a patient moves a clipped update by up to 2C: z / 2
    assert json.loads((run_dir / "metrics.json").read_text())["privacy"]["central_epsilon"] == reported
    assert "## central" in (run_dir / "privacy.md").read_text()
