"""The privacy record: every epsilon in a ledger is recomputed from its recorded events with
dp-accounting and agrees within 1 % with what the real accountants (Opacus's RDP and PRV,
Flower's RdpAccountant) reported; a tampered figure is caught; the files round-trip."""

from __future__ import annotations

import json

import pytest
from flwr.serverapp import PrivacyConfig, RdpAccountant
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    SamplingMethod,
)
from opacus.accountants import PRVAccountant, RDPAccountant

from server.privacy_ledger import PrivacyLedger, epsilon_from_events, merge_events

DELTA = 1e-4


def _opacus_entry(kind: str, steps: list[tuple[float, float, int]]) -> dict:
    """Run Opacus's accountant through ``steps`` = [(noise multiplier, sample rate, steps)] as a site would."""
    accountant = RDPAccountant() if kind == "rdp" else PRVAccountant()
    events = []
    for z, q, count in steps:
        for _ in range(count):
            accountant.step(noise_multiplier=z, sample_rate=q)
        events.append({"kind": "poisson_gaussian", "sample_rate": q, "noise_multiplier": z, "count": count} if q < 1
                      else {"kind": "gaussian", "noise_multiplier": z, "count": count})
    return {"accountant": kind, "mechanism": "DP-SGD (Opacus)", "clipping_norm": 1.0, "events": events,
            "epsilon": accountant.get_epsilon(DELTA), "delta": DELTA}


def _flower_entry(z: float, rounds: int) -> dict:
    """Flower's RdpAccountant as the DP strategy wrapper drives it: one Gaussian release per round."""
    config = PrivacyConfig(target_delta=DELTA, population_size=4, neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                           sampling_method=SamplingMethod.NO_AMPLIFICATION)
    accountant = RdpAccountant(config)
    for _ in range(rounds):
        accountant.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=4, population_size=4))
    events = merge_events({"kind": "gaussian", "noise_multiplier": c["event"]["noise_multiplier"], "count": c["count"]}
                          for c in accountant.state_dict()["compositions"])
    return {"accountant": "rdp", "mechanism": "Flower server-side fixed clipping", "clipping_norm": 0.5,
            "events": events, "epsilon": accountant.get_epsilon(DELTA), "delta": DELTA}


@pytest.fixture(scope="module")
def ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(delta=DELTA, mode="both")
    # an RDP site: two stages of DP-SGD, then the noised evaluation histograms (plain Gaussian releases)
    ledger.update_site("clinic", _opacus_entry("rdp", [(1.1, 0.05, 120), (1.0, 0.08, 60), (20.0, 1.0, 3)]))
    ledger.update_site("regional", _opacus_entry("prv", [(1.0, 0.04, 150), (1.3, 0.1, 40)]))
    ledger.set_central(_flower_entry(1.5, 12))
    return ledger


def test_every_epsilon_is_recomputed_from_its_events_within_one_percent(ledger) -> None:
    checked = ledger.verify(rtol=0.01)
    assert set(checked) == {"site clinic", "site regional", "central"}
    for name, (reported, again) in checked.items():
        assert 0.1 < reported < 100, name  # a real, finite privacy cost was accounted
        assert again == pytest.approx(reported, rel=0.01), name
    assert len(ledger.central["events"]) == 1 and ledger.central["events"][0]["count"] == 12  # merged releases


def test_a_wrong_epsilon_or_a_dropped_event_is_caught(ledger) -> None:
    data = ledger.to_dict()
    del data["sites"]["regional"]  # PLD is the slow recomputation; the RDP entries show the check
    data["sites"]["clinic"]["epsilon"] *= 1.02
    with pytest.raises(ValueError, match="site clinic"):
        PrivacyLedger.from_dict(data).verify()
    data = {**ledger.to_dict(), "sites": {}}
    data["central"]["events"][0]["count"] -= 1  # one release left out of the record
    with pytest.raises(ValueError, match="central"):
        PrivacyLedger.from_dict(data).verify()
    with pytest.raises(ValueError, match="kind"):
        ledger.update_site("x", {**ledger.sites["clinic"], "events": [{"kind": "laplace", "noise_multiplier": 1, "count": 1}]})


def test_rdp_and_pld_recomputations_differ_as_the_accountants_do() -> None:
    events = [{"kind": "poisson_gaussian", "sample_rate": 0.05, "noise_multiplier": 1.1, "count": 50}]
    rdp, pld = epsilon_from_events(events, DELTA, "rdp"), epsilon_from_events(events, DELTA, "prv")
    assert pld < rdp  # PLD is tighter than RDP's conversion, so a mix-up of the two fails the 1 % check
    assert epsilon_from_events([], DELTA, "rdp") == 0.0


def test_files_round_trip_and_say_none_without_privacy(tmp_path, ledger) -> None:
    json_path, md_path = ledger.write(tmp_path / "run")
    data = json.loads(json_path.read_text())
    assert set(data) == {"unit", "delta", "sites", "central"} and data["unit"] == "patient"
    assert PrivacyLedger.from_dict(data, mode="both").to_dict() == ledger.to_dict()
    text = md_path.read_text()
    assert "site clinic" in text and "central" in text and "Not covered" in text
    _, none_md = PrivacyLedger(delta=DELTA).write(tmp_path / "none")
    assert json.loads((tmp_path / "none" / "privacy.json").read_text())["central"] is None
    assert "No differential privacy" in none_md.read_text()
