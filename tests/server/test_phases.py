"""The phase runner on a fake Grid: every round persisted with who trained, and a run stopped
after a round and resumed ends with the arrays of the uninterrupted run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flower_fakes import FakeGrid, eval_reply, task_identity, train_reply  # noqa: F401
from flwr.app import Message, MessageType

from protocol.messages import ARRAYS_RECORD, CONFIG_RECORD, SiteInfo, parse_request
from server.config import compose_config
from server.context import RunContext
from server.federation import _resume_or_start
from server.phases import SimulatedServerCrash, run_phase
from server.sites import Sites

CENTERS = {1: "clinic", 2: "regional", 3: "teaching"}
COUNTS = dict.fromkeys(("n_us_train", "n_us_val", "n_us_test", "n_us_all", "n_mri_train", "positives_train",
                        "max_train_examples_gan", "max_train_examples_stage_a", "max_train_examples_stage_b"), 10)


def _site_reply(message: Message) -> Message:
    """A deterministic site: adds (global round x 1e-3) to every float array; scores that depend on the round."""
    node, request = message.metadata.dst_node_id, parse_request(message.content[CONFIG_RECORD])
    if message.metadata.message_type == MessageType.TRAIN:
        arrays = {k: v.numpy() for k, v in message.content[ARRAYS_RECORD].items()}
        moved = {k: v + np.asarray(request.global_round * 1e-3 * node, v.dtype) if v.dtype.kind == "f" else v for k, v in arrays.items()}
        return train_reply(node, moved, n=5.0)
    rng = np.random.default_rng(1000 * request.global_round + node)
    labels = np.array([0, 1] * 5)
    return eval_reply(node, labels, np.clip(labels * 0.3 + rng.random(10) * 0.7, 0, 1), request.threshold, bins=request.bins)


def _context(tmp_path, **overrides: object) -> RunContext:
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=[teaching]", "synthesis=false",
                          "rounds.stage_a=3", *(f"{k}={v}" for k, v in overrides.items())])
    ctx = RunContext(FakeGrid(list(CENTERS), _site_reply), cfg, log=lambda _m: None)
    _resume_or_start(ctx)
    ctx.sites = Sites(CENTERS, train=[1, 2], held_out=[3], info={c: SiteInfo(center=c, **COUNTS) for c in CENTERS.values()})
    return ctx


def test_every_round_is_persisted_with_the_centers_that_trained(tmp_path) -> None:
    ctx = _context(tmp_path)
    run_phase(ctx, "stage_a", 3)
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["global_round"] for r in rounds] == [1, 2, 3]
    assert all(r["train_centers"] == ["clinic", "regional"] for r in rounds)  # never the held-out teaching
    assert ctx.store.load_checkpoint()["phase_round"] == 3 and "stage_a" in ctx.state["completed"]
    trained = {m.metadata.dst_node_id for m in ctx.grid.sent if m.metadata.message_type == MessageType.TRAIN}
    assert trained == {1, 2}


def test_a_stopped_and_resumed_phase_ends_like_the_uninterrupted_one(tmp_path) -> None:
    whole = _context(tmp_path / "whole")
    run_phase(whole, "stage_a", 3)
    stopped = _context(tmp_path / "resumed", **{"debug.stop_after_round": 1})
    with pytest.raises(SimulatedServerCrash):
        run_phase(stopped, "stage_a", 3)
    resumed = _context(tmp_path / "resumed", resume="true")
    assert resumed.state["phase_round"] == 1
    run_phase(resumed, "stage_a", 3)
    for key, value in whole.state["model_arrays"].items():
        np.testing.assert_array_equal(resumed.state["model_arrays"][key], value, err_msg=key)
    assert resumed.state["best"]["global_round"] == whole.state["best"]["global_round"]
    lines = (tmp_path / "resumed" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["global_round"] for line in lines] == [1, 2, 3]
