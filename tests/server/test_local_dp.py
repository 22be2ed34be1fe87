"""Local DP at the coordinator on a fake Grid: every request carries the setting, each site's
latest ledger entry is kept with the checkpoint, a site that declines a round over its budget
is not asked again while the others go on (k-of-n), and the run stops training cleanly when
fewer than k sites have budget left."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flower_fakes import FakeGrid, _metadata, eval_reply, task_identity, train_reply  # noqa: F401
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.app.message import make_message

from protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    PRIVACY_RECORD,
    MessageError,
    PrivacyReport,
    RunFields,
    SiteInfo,
    parse_request,
    wire_key,
)
from server.config import compose_config
from server.context import RunContext
from server.federation import _resume_or_start
from server.phases import run_phase
from server.sites import Sites

CENTERS = {1: "clinic", 2: "regional", 3: "university", 4: "teaching"}
COUNTS = dict.fromkeys(("n_us_train", "n_us_val", "n_us_test", "n_us_all", "n_mri_train", "positives_train",
                        "max_train_examples_gan", "max_train_examples_stage_a", "max_train_examples_stage_b"), 10)
DECLINES_FROM = {"clinic": 2, "regional": 4}  # global round from which the site's budget is spent


def _entry(rounds: int) -> str:
    return json.dumps({"accountant": "rdp", "mechanism": "DP-SGD", "clipping_norm": 1.0, "delta": 1e-3, "epsilon": 0.5 * rounds,
                       "events": [{"kind": "poisson_gaussian", "sample_rate": 0.5, "noise_multiplier": 1.0, "count": 2 * rounds}]})


def _site(message: Message) -> Message:
    node, request = message.metadata.dst_node_id, parse_request(message.content[CONFIG_RECORD])
    center = CENTERS[node]
    assert request.local_dp is not None and request.local_dp.planned_rounds == 5  # stage A + B rounds
    spent = min(request.global_round, DECLINES_FROM.get(center, 99) - 1)  # rounds trained so far, this one included
    if message.metadata.message_type == MessageType.TRAIN:
        if request.global_round >= DECLINES_FROM.get(center, 99):
            declined = PrivacyReport(ledger=_entry(spent), declined=True, reason=f"{center}: over budget")
            return make_message(_metadata(node), content=RecordDict({PRIVACY_RECORD: ConfigRecord(declined.to_record())}))
        arrays = {k: v.numpy() + np.asarray(1e-3, v.numpy().dtype) if v.numpy().dtype.kind == "f" else v.numpy()
                  for k, v in message.content[ARRAYS_RECORD].items()}
        reply = train_reply(node, arrays, n=5.0)
    else:
        labels = np.array([0, 1] * 5)
        reply = eval_reply(node, labels, np.linspace(0.1, 0.9, 10), request.threshold, bins=request.bins)
    reply.content[PRIVACY_RECORD] = ConfigRecord(PrivacyReport(ledger=_entry(spent)).to_record())
    return reply


def _local_dp_context(tmp_path, site, stage_a: int, stage_b: int) -> RunContext:
    """A started privacy=local run on the fake Grid: 3 training centers, teaching held out."""
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=[teaching]", "synthesis=false",
                          "privacy=local", f"rounds.stage_a={stage_a}", f"rounds.stage_b={stage_b}"])
    ctx = RunContext(FakeGrid(list(CENTERS), site), cfg, log=lambda _m: None)
    _resume_or_start(ctx)
    ctx.sites = Sites(CENTERS, train=[1, 2, 3], held_out=[4], info={c: SiteInfo(center=c, **COUNTS) for c in CENTERS.values()})
    ctx.privacy.start(3)
    return ctx


def test_sites_over_budget_decline_the_others_go_on_and_training_stops_cleanly(tmp_path) -> None:
    ctx = _local_dp_context(tmp_path, _site, stage_a=3, stage_b=2)
    run_phase(ctx, "stage_a", 3)
    run_phase(ctx, "stage_b", 2)
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["global_round"] for r in rounds] == [1, 2, 3, 4]  # round 5: too few sites with budget, not started
    assert rounds[1]["declined"] == {"clinic": "clinic: over budget"} and rounds[1]["answered"] == ["regional", "university"]
    assert rounds[1]["aggregated"] and "clinic" not in rounds[1]["rejected"] and "clinic" not in rounds[1]["failed"]
    assert rounds[2]["sampled"] == ["regional", "university"] and rounds[2]["aggregated"]  # clinic not asked again
    assert rounds[3]["declined"].keys() == {"regional"} and not rounds[3]["aggregated"]  # 1 valid reply < k = 2
    trained = [(m.metadata.dst_node_id, parse_request(m.content[CONFIG_RECORD]).global_round) for m in ctx.grid.sent
               if m.metadata.message_type == MessageType.TRAIN]
    assert max(r for n, r in trained if n == 1) == 2 and max(r for n, r in trained if n == 2) == 4
    assert ctx.privacy.stopped and "k = 2" in ctx.privacy.stopped and "stage_b" in ctx.state["completed"]
    saved = ctx.store.load_checkpoint()["privacy"]["ledger"]["sites"]  # kept with the round, for privacy.json
    assert saved["clinic"]["exhausted"] == "clinic: over budget" and saved["clinic"]["epsilon"] == 0.5
    assert "exhausted" not in saved["university"] and saved["university"]["epsilon"] == 2.0  # its latest entry (eval, round 4)


def test_an_update_without_a_ledger_entry_is_not_aggregated(tmp_path) -> None:
    def site(message: Message) -> Message:  # regional sends its update without its privacy record
        reply = _site(message)
        if CENTERS[message.metadata.dst_node_id] == "regional" and message.metadata.message_type == MessageType.TRAIN:
            reply = make_message(_metadata(2), content=RecordDict({k: v for k, v in reply.content.items() if k != PRIVACY_RECORD}))
        return reply

    ctx = _local_dp_context(tmp_path, site, stage_a=1, stage_b=4)
    run_phase(ctx, "stage_a", 1)
    (line,) = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert "no privacy record" in line["rejected"]["regional"] and line["answered"] == ["clinic", "university"]


def test_the_setting_travels_typed_and_a_malformed_privacy_record_is_refused() -> None:
    cfg = compose_config(["experiment=smoke", "held_out_centers=[]", "synthesis=false", "privacy=local"])
    record = RunContext(None, cfg, log=lambda _m: None).train_request("stage_a").to_record()
    setting = parse_request(record).local_dp
    assert (setting.target_epsilon, setting.delta, setting.noise_multiplier, setting.planned_rounds) == (8.0, 0.0, 0.0, 4)
    with pytest.raises(MessageError, match="local-dp: not a local DP setting"):
        parse_request({**record, wire_key(RunFields, "local_dp"): json.dumps({**setting.as_dict(), "target_epsilon": -1})})
    with pytest.raises(MessageError, match="ledger"):
        PrivacyReport.from_record({"ledger": "[1, 2]"})
    with pytest.raises(ValueError, match="FedProx"):
        RunContext(None, compose_config(["experiment=smoke", "held_out_centers=[]", "synthesis=false", "privacy=local",
                                         "strategy=fedprox"]), log=lambda _m: None)
    with pytest.raises(ValueError, match="GroupNorm"):
        RunContext(None, compose_config(["experiment=smoke", "held_out_centers=[]", "synthesis=false", "privacy=local",
                                         "model.norm=batch"]), log=lambda _m: None)


def test_each_run_folder_has_its_own_site_state(tmp_path: Path) -> None:
    """A comparison's arms all end in seed<s>: their sites' state (the local DP accountant, FedBN
    layers) must not be shared, while a resumed run finds its own again."""
    from server.context import run_key

    eps8, eps1 = tmp_path / "local_dp_eps8" / "seed0", tmp_path / "local_dp_eps1" / "seed0"
    assert run_key(eps8, 0) != run_key(eps1, 0)
    assert run_key(eps8, 0) == run_key(str(eps8), 0) != run_key(eps8, 1)
    assert run_key(eps8, 0).startswith("seed0-seed0-")
