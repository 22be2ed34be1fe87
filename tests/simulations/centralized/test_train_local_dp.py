"""``ecs-train privacy=local`` on the tiny cohort: the pooled run trains both stages under
patient-level DP-SGD with one accountant, and its entry (in metrics.json and privacy.json) lists
every step, reproduced by dp-accounting; synthesis is refused (the GAN is not under DP-SGD)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose

from server.privacy_ledger import PrivacyLedger
from simulations.centralized.run import run_training

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)


def test_pooled_run_under_local_dp_records_every_step(tmp_path: Path, tiny_cohort: Path) -> None:
    overrides = ["experiment=train_smoke", "privacy=local", f"paths.root={tmp_path}", f"cohort_dir={tiny_cohort}",
                 "training.max_steps_per_epoch=2"]
    with pytest.raises(ValueError, match="synthesis=false"):
        run_training(compose("train", overrides), tmp_path / "refused", log=lambda _m: None)
    metrics = run_training(compose("train", [*overrides, "synthesis=false"]), tmp_path / "run", log=lambda _m: None)
    entry = metrics["privacy"]
    patients = 18  # with training ultrasound (24 images) at the tiny cohort's 3 training centers: q = 8 / 18,
    # ceil(18 / 8) = 3 steps per epoch, capped at 2
    assert entry["events"] == [{"kind": "poisson_gaussian", "sample_rate": 8 / patients,
                                "noise_multiplier": entry["noise_multiplier"], "count": 4}]  # stages A + B, 2 steps each
    assert 7.9 <= entry["epsilon"] <= 8.0  # the derived noise spends the planned budget (4 steps), no more
    ledger = PrivacyLedger.from_dict(json.loads((tmp_path / "run" / "privacy.json").read_text()), mode="local")
    assert ledger.sites == {"pooled": entry}
    reported, recomputed = ledger.verify(rtol=0.01)["site pooled"]
    assert reported == entry["epsilon"] and recomputed == pytest.approx(reported, rel=0.01)
