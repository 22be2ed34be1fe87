"""The membership-inference audit end to end at smoke scale (``--preset smoke``): canaries, shadows
and targets of both arms, the DP arm's ledger, the report's files; a bad configuration refused."""

from __future__ import annotations

import json

import pytest
import yaml

from simulations.centralized.membership_audit import audit_config, main

pytestmark = pytest.mark.slow  # an end-to-end run: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("membership_audit")
    out = root / "audit"
    return main(["--preset", "smoke", "--out", str(out), f"paths.root={root}", "cohort_workers=1"]), out


def test_both_arms_attack_both_networks_on_every_canary(smoke) -> None:
    report, _ = smoke
    assert list(report["arms"]) == ["no_dp", "dp_eps8"]
    for arm in report["arms"].values():
        assert set(arm["networks"]) == {"student", "teacher"}
        for m in arm["networks"].values():
            for attack in ("lira_offline", "loss"):
                assert m[attack]["members"] + m[attack]["non_members"] == report["canaries"] * report["targets"] == 16
                assert m[attack]["epsilon_lower_bound"]["confidence"] == pytest.approx(0.975)  # two attacks share 95 %
            assert m["auc"] == max(m["lira_offline"]["auc"], m["loss"]["auc"])
            assert m["epsilon_lower_bound"] >= 0.0


def test_the_dp_arm_trains_under_the_hospitals_budget_and_the_plain_arm_without(smoke) -> None:
    report, _ = smoke
    assert report["arms"]["no_dp"]["privacy"] == [None]
    (entry,) = report["arms"]["dp_eps8"]["privacy"]
    assert entry["unit"] == "patient" and entry["noise_multiplier"] > 0
    assert 7.0 < entry["epsilon"] <= 8.0 + 1e-6  # the derived noise spends the planned steps' budget
    assert entry["events"][0]["kind"] == "poisson_gaussian"


def test_the_folder_holds_report_config_and_versions(smoke) -> None:
    report, out = smoke
    assert json.loads((out / "audit.json").read_text())["arms"].keys() == report["arms"].keys()
    table = (out / "audit.md").read_text()
    assert "| dp_eps8 | teacher | 8.00 |" in table and "inf (no DP)" in table
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["audit"]["canaries"] == 16 and config["privacy"]["mode"] == "local"
    assert "torch" in json.loads((out / "versions.json").read_text())


def test_a_rerun_with_another_arm_trains_that_arm_only(smoke, capsys) -> None:
    report, out = smoke
    capsys.readouterr()
    again = main(["--preset", "smoke", "--out", str(out), f"paths.root={out.parent}", "cohort_workers=1", "+audit.arms.dp_eps2=2.0"])
    printed = capsys.readouterr().out
    assert printed.count("reusing") == 2 * (2 + 1)  # the first two arms: 2 shadows and 1 target each
    assert printed.count("trained 1 epochs") == 3  # the new arm's
    assert {k: again["arms"][k] for k in report["arms"]} == json.loads(json.dumps(report["arms"]))
    assert 1.5 < again["arms"]["dp_eps2"]["privacy"][0]["epsilon"] <= 2.0 + 1e-6


def test_an_audit_without_two_shadows_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 shadows"):
        audit_config("smoke", ["audit.shadows=1"])
