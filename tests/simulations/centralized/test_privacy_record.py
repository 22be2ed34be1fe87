"""ecs-train's privacy record: a run directory says when no mechanism ran, keeps the pooled
training's entry, and client-level (central) DP is refused for a centralized run."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_module

from simulations.centralized.privacy import write_privacy_record


def _train_config(*overrides: str):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=train_smoke", *overrides])


def test_a_run_without_privacy_says_so_and_an_entry_is_kept(tmp_path) -> None:
    write_privacy_record(_train_config(), tmp_path / "none")
    assert json.loads((tmp_path / "none" / "privacy.json").read_text()) == {"unit": "patient", "delta": None, "sites": {},
                                                                              "central": None}
    assert "No differential privacy" in (tmp_path / "none" / "privacy.md").read_text()
    entry = {"accountant": "rdp", "mechanism": "DP-SGD", "clipping_norm": 1.0, "epsilon": 1.0, "delta": 1e-5,
             "events": [{"kind": "poisson_gaussian", "sample_rate": 0.1, "noise_multiplier": 1.0, "count": 10}]}
    ledger = write_privacy_record(_train_config(), tmp_path / "pooled", entry)
    assert json.loads((tmp_path / "pooled" / "privacy.json").read_text())["sites"]["pooled"]["events"] == entry["events"]
    assert ledger.sites["pooled"]["epsilon"] == 1.0


def test_central_dp_is_refused_for_a_centralized_run(tmp_path) -> None:
    with pytest.raises(ValueError, match="privacy=central .* centralized run"):
        write_privacy_record(_train_config("privacy=central"), tmp_path)
    assert not (tmp_path / "privacy.json").exists()
