"""``ecs-simulate experiment=smoke privacy=both`` end to end on Flower's Simulation Runtime: the
tiny cohort, one SG-CycleGAN round, one stage A round. Every hospital trains under patient-level
DP-SGD (the GAN round too, over every GAN parameter, on its own share of the budget) and Flower's
client-level DP wrapper releases every round's aggregate; the run directory's privacy record
holds the sites' and the server's entries, whose epsilons dp-accounting reproduces from their
recorded events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.messages import GAN_LOSS, TrainReply, wire_key
from server.privacy_ledger import PrivacyLedger, epsilon_from_events

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
ECS_SIMULATE = Path(sys.executable).parent / "ecs-simulate"


def test_both_smoke_federation_with_a_private_gan_round_writes_a_record_dp_accounting_reproduces(
        tmp_path: Path, tiny_cohort: Path) -> None:
    run_dir = tmp_path / "runs" / "both"
    env = {**os.environ, "ECS_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(ECS_SIMULATE), "experiment=smoke", f"run_dir={run_dir}", f"cohort_dir={tiny_cohort}", "privacy=both", "report=false",
         "strategy.weighting=uniform", "rounds.gan=1", "rounds.stage_a=1", "rounds.stage_b=0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rounds] == ["gan", "stage_a"] and all(r["aggregated"] for r in rounds)
    gan, stage_a = rounds
    mri_sites = ["regional", "university"]  # the tiny cohort's training centers with MRI
    assert gan["answered"] == mri_sites and not any(GAN_LOSS in gan["train"][c] for c in mri_sites)  # losses stay home
    synthetic = wire_key(TrainReply, "synthetic_images")
    assert all(stage_a["train"][c][synthetic] > 0 for c in mri_sites)  # the private generator was used

    data = json.loads((run_dir / "privacy.json").read_text())
    ledger = PrivacyLedger.from_dict(data, mode="both")
    central = ledger.central  # configs/privacy/central.yaml: z = 1, C = 1, GAN C = 1
    assert central["events"] == [{"kind": "gaussian", "noise_multiplier": 1.0, "count": 2}]  # one release per round
    assert central["noise_std"] == {"gan": round(1.0 / 2, 6), "stage_a": round(1.0 / 3, 6)}  # z x C / sampled sites
    target, share, steps = 8.0, 0.3, 2  # configs/privacy/local.yaml; smoke: local.gan_steps
    for center in mri_sites:
        site = ledger.sites[center]
        first = site["events"][0]  # the GAN round: its own noise, derived to spend its share of the budget
        assert first["kind"] == "poisson_gaussian" and first["count"] == steps
        assert first["noise_multiplier"] == site["gan_noise_multiplier"] != site["noise_multiplier"]
        spent = epsilon_from_events([first], site["delta"], "rdp")
        assert share * target - 0.05 <= spent <= share * target * 1.01  # 1 %: dp-accounting against Opacus
        assert 0 < site["epsilon"] <= target
    assert site["gan_noise_multiplier"] > 0 and ledger.sites["clinic"]["gan_noise_multiplier"] == 0  # no MRI: no GAN round
    assert set(ledger.verify(rtol=0.01)) == {f"site {c}" for c in ledger.sites} | {"central"}  # dp-accounting agrees
    assert json.loads((run_dir / "metrics.json").read_text())["privacy"]["central_epsilon"] == central["epsilon"]
    assert "## central" in (run_dir / "privacy.md").read_text() and "## site university" in (run_dir / "privacy.md").read_text()
