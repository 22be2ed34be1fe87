"""``privacy=central`` on a fake Grid: Flower's server-side clipping and noise reach the global
model as configured, the accountant's ledger survives a stop and resume, the budget ends the run
cleanly with the record saved, and strategies the wrapper cannot protect are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flower_fakes import FakeGrid, eval_reply, task_identity, train_reply  # noqa: F401
from flwr.app import ConfigRecord, Message, MessageType

from protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    PRIVACY_RECORD,
    PrivacyReport,
    SiteInfo,
    parse_request,
)
from server.config import compose_config
from server.context import RunContext
from server.federation import _resume_or_start, _train
from server.phases import SimulatedServerCrash, run_phase
from server.privacy_ledger import PrivacyLedger, epsilon_from_events
from server.sites import Sites

CENTERS = {1: "clinic", 2: "regional", 3: "teaching"}
COUNTS = dict.fromkeys(("n_us_train", "n_us_val", "n_us_test", "n_us_all", "n_mri_train", "positives_train",
                        "max_train_examples_gan", "max_train_examples_stage_a", "max_train_examples_stage_b"), 10)
STEP = 1e-3  # a site's update: STEP x node id on every float (node 1 under the clipping norm, node 2 over it)


def _site_reply(message: Message) -> Message:
    node, request = message.metadata.dst_node_id, parse_request(message.content[CONFIG_RECORD])
    if message.metadata.message_type == MessageType.TRAIN:
        arrays = {k: v.numpy() for k, v in message.content[ARRAYS_RECORD].items()}
        moved = {k: v + np.asarray(STEP * node, v.dtype) if v.dtype.kind == "f" else v + 3 for k, v in arrays.items()}
        return train_reply(node, moved, n=5.0 * node)  # unequal examples: uniform weighting must ignore them
    labels = np.array([0, 1] * 5)
    return eval_reply(node, labels, labels * 0.5 + 0.25, request.threshold, bins=request.bins)


def _context(run_dir, **overrides: object) -> RunContext:
    cfg = compose_config(["experiment=smoke", f"run_dir={run_dir}", "held_out_centers=[teaching]", "synthesis=false",
                          "rounds.stage_a=3", "rounds.stage_b=0", "privacy=central", "strategy.weighting=uniform",
                          *(f"{k}={v}" for k, v in overrides.items())])
    ctx = RunContext(FakeGrid(list(CENTERS), _site_reply), cfg, log=lambda _m: None)
    _resume_or_start(ctx)
    ctx.sites = Sites(CENTERS, train=[1, 2], held_out=[3], info={c: SiteInfo(center=c, **COUNTS) for c in CENTERS.values()})
    ctx.privacy.start(len(ctx.sites.train), ctx.state.get("privacy"))
    return ctx


def _floats(arrays: dict) -> dict:
    return {k: v for k, v in arrays.items() if v.dtype.kind == "f"}


@pytest.mark.parametrize("z", [0.01, 1.0])
def test_the_global_model_is_the_mean_of_clipped_updates_plus_noise_of_z_c_over_m(tmp_path, z) -> None:
    ctx = _context(tmp_path, **{"rounds.stage_a": 1, "privacy.central.noise_multiplier": z, "privacy.central.max_epsilon": "null"})
    start = {k: v.copy() for k, v in ctx.state["model_arrays"].items()}
    run_phase(ctx, "stage_a", 1)
    sent = _floats(start)
    norm = STEP * np.sqrt(sum(v.size for v in sent.values()))  # a unit step's update norm over all floats
    clip = float(ctx.cfg.privacy.central.clipping_norm)
    assert norm * 1 < clip < norm * 2  # node 1 passes unclipped, node 2 is scaled down
    mean_step = (STEP * 1 + STEP * 2 * min(1.0, clip / (2 * norm))) / 2  # equal weights despite 5 vs 10 examples
    residual = np.concatenate([(ctx.state["model_arrays"][k] - v - mean_step).ravel() for k, v in sent.items()])
    std = z * clip / 2  # z x C / m with m = 2 sampled sites
    assert residual.std() == pytest.approx(std, rel=0.02)
    assert abs(residual.mean()) < 6 * std / np.sqrt(residual.size)  # the clipped mean, not the plain one
    for key, value in start.items():
        if value.dtype.kind != "f":  # counters: the sites' (+3) never reach the global model
            np.testing.assert_array_equal(ctx.state["model_arrays"][key], value, err_msg=key)
    entry = ctx.privacy.central_entry()
    assert entry["events"] == [{"kind": "gaussian", "noise_multiplier": z, "count": 1}]
    assert entry["noise_std"] == {"stage_a": pytest.approx(std)}


def test_a_zero_update_releases_nothing_instead_of_crashing(tmp_path) -> None:
    """Flower's fixed clipping divides by the update's norm: a site that sends the global model
    back unchanged (found when the noise of z = 8 made a site's steps non-finite) used to stop
    the run with ZeroDivisionError. Now the round releases nothing and costs no budget."""
    ctx = _context(tmp_path, **{"rounds.stage_a": 1})

    def unchanged_by_node_1(message: Message) -> Message:
        if message.metadata.dst_node_id == 1 and message.metadata.message_type == MessageType.TRAIN:
            return train_reply(1, {k: v.numpy() for k, v in message.content[ARRAYS_RECORD].items()}, n=5.0)
        return _site_reply(message)

    ctx.grid = FakeGrid(list(CENTERS), unchanged_by_node_1)
    start = {k: v.copy() for k, v in ctx.state["model_arrays"].items()}
    run_phase(ctx, "stage_a", 1)
    for key, value in start.items():  # the global model is kept
        np.testing.assert_array_equal(ctx.state["model_arrays"][key], value, err_msg=key)
    assert ctx.privacy.central_entry()["events"] == []  # no release, no epsilon spent


def test_the_noise_cannot_be_regenerated_from_the_run_seed(tmp_path) -> None:
    runs = []
    for name in ("a", "b"):
        ctx = _context(tmp_path / name, **{"rounds.stage_a": 1})
        run_phase(ctx, "stage_a", 1)
        runs.append(ctx.state["model_arrays"])
    key = next(k for k, v in runs[0].items() if v.dtype.kind == "f" and v.size > 100)
    assert not np.allclose(runs[0][key], runs[1][key])  # same seed, same updates, different noise


def test_a_stopped_and_resumed_run_continues_the_same_ledger(tmp_path) -> None:
    whole = _context(tmp_path / "whole", **{"rounds.stage_a": 2})
    run_phase(whole, "stage_a", 2)
    stopped = _context(tmp_path / "resumed", **{"rounds.stage_a": 2, "debug.stop_after_round": 1})
    with pytest.raises(SimulatedServerCrash):
        run_phase(stopped, "stage_a", 2)
    resumed = _context(tmp_path / "resumed", **{"rounds.stage_a": 2}, resume="true")
    assert resumed.privacy.accountant.num_releases == 1  # the checkpoint's accountant, not a fresh one
    run_phase(resumed, "stage_a", 2)
    a, b = whole.privacy.central_entry(), resumed.privacy.central_entry()
    assert a["events"] == b["events"] == [{"kind": "gaussian", "noise_multiplier": 1.0, "count": 2}]
    assert b["epsilon"] == a["epsilon"] == pytest.approx(epsilon_from_events(a["events"], a["delta"], "rdp"), rel=0.01)


def test_the_budget_ends_training_cleanly_with_the_record_saved(tmp_path) -> None:
    ctx = _context(tmp_path, **{"rounds.stage_a": 5, "privacy.central.max_epsilon": 8.0})
    _train(ctx)  # no exception: the accountant refused a release and training stopped
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    ledger = PrivacyLedger.from_dict(json.loads((tmp_path / "privacy.json").read_text()))
    entry = ledger.central
    assert 1 <= len(rounds) < 5 and entry["events"][0]["count"] == len(rounds)  # one release per completed round
    assert entry["epsilon"] <= 8.0 < epsilon_from_events([{**entry["events"][0], "count": len(rounds) + 1}], entry["delta"], "rdp")
    assert "exceed max_epsilon" in entry["stopped"]
    ledger.verify()
    assert ctx.store.load_checkpoint()["privacy"]["stopped"] == entry["stopped"]
    assert "central" in (tmp_path / "privacy.md").read_text()


@pytest.mark.parametrize(("overrides", "problem"), [
    (["strategy=fedadam"], "FedAvg's own aggregation"),
    (["strategy=fedbn"], "fedbn"),
    (["strategy=krum"], "FedAvg's own aggregation"),
    (["strategy=fedavg"], "equal weights"),
])
def test_a_strategy_the_dp_wrapper_cannot_protect_is_refused(tmp_path, overrides, problem) -> None:
    uniform = [] if overrides == ["strategy=fedavg"] else ["strategy.weighting=uniform"]
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=[]", "privacy=central",
                          *overrides, *uniform])
    with pytest.raises(ValueError, match=problem):
        RunContext(None, cfg, log=lambda _m: None)


def _local_entry(rounds: int) -> str:
    events = [{"kind": "poisson_gaussian", "sample_rate": 0.25, "noise_multiplier": 1.2, "count": 4 * rounds}]
    return json.dumps({"accountant": "rdp", "mechanism": "DP-SGD", "clipping_norm": 1.0, "events": events,
                       "epsilon": epsilon_from_events(events, 1e-5, "rdp"), "delta": 1e-5})


def _dp_site_reply(message: Message) -> Message:
    """A site under local DP: its reply carries its ledger entry so far (``PrivacyReport``)."""
    reply = _site_reply(message)
    request = parse_request(message.content[CONFIG_RECORD])
    reply.content[PRIVACY_RECORD] = ConfigRecord(PrivacyReport(ledger=_local_entry(request.global_round)).to_record())
    return reply


def test_both_puts_the_sites_and_the_server_entries_in_one_record(tmp_path) -> None:
    ctx = _context(tmp_path, **{"rounds.stage_a": 2, "privacy": "both"})
    assert (ctx.privacy.mode, ctx.cfg.model.norm) == ("both", "group")  # local.yaml + central.yaml, composed
    ctx.grid.responder = _dp_site_reply
    run_phase(ctx, "stage_a", 2)
    ctx.privacy.write(tmp_path)
    ledger = PrivacyLedger.from_dict(json.loads((tmp_path / "privacy.json").read_text()), mode="both")
    assert sorted(ledger.sites) == ["clinic", "regional"] and ledger.sites["clinic"]["events"][0]["count"] == 8
    assert ledger.central["events"] == [{"kind": "gaussian", "noise_multiplier": 1.0, "count": 2}]
    assert set(ledger.verify()) == {"site clinic", "site regional", "central"}
