"""The coordinator's parts on a fake Grid: records, config checks, site discovery, final evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flower_fakes import FakeGrid, eval_reply, info_reply, task_identity  # noqa: F401
from flwr.app import Message, MessageType

from protocol.messages import CONFIG_RECORD, HISTOGRAM_KEYS, METRICS_RECORD, parse_request
from server.config import compose_config
from server.context import RunContext, to_record
from server.federation import run_federation
from server.final import final_evaluation
from server.phases import fresh_state
from server.sites import Sites, discover_sites

CENTERS = {1: "clinic", 2: "regional", 3: "teaching"}


def test_record_keeps_shapes_of_zero_dim_and_strided_arrays() -> None:
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not C-contiguous
    arrays = {"bn.num_batches_tracked": np.asarray(7, dtype=np.int64), "w": strided, "b": np.ones(3, np.float32)}
    record = to_record(arrays)
    for key, value in arrays.items():
        got = record[key].numpy()
        assert got.shape == value.shape and got.dtype == value.dtype, key  # FedAdam compares shapes per key
        np.testing.assert_array_equal(got, value)


def test_stage_messages_carry_the_teacher_learning_rate_and_bad_ones_are_refused(tmp_path) -> None:
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'a'}", "held_out_centers=[]",
                          "training.stage_a.teacher_lr=2e-4"])
    run = RunContext(None, cfg, log=lambda _m: None)
    assert run.train_request("stage_a").teacher_lr == 2e-4
    assert run.train_request("stage_b").teacher_lr == 0.0  # null: the stage's own lr
    # class weighting: the stage's config, stage B weighted unless it says otherwise (the one default)
    assert (run.train_request("stage_a").class_weighted, run.train_request("stage_b").class_weighted) == (
        bool(cfg.training.stage_a.get("class_weighted", False)), bool(cfg.training.stage_b.get("class_weighted", True)))
    bad = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'b'}", "held_out_centers=[]",
                          "training.stage_b.teacher_lr=-1"])
    with pytest.raises(ValueError, match="training.stage_b.teacher_lr"):
        RunContext(None, bad, log=lambda _m: None)


def _identify(message: Message) -> Message:
    node = message.metadata.dst_node_id
    return info_reply(node, CENTERS[node], max_train_examples_stage_b=10 * node)


def test_a_run_without_a_held_out_list_stops_before_any_message(tmp_path) -> None:
    grid = FakeGrid(list(CENTERS), _identify)
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}"])  # what a deployment gets by default
    with pytest.raises(ValueError, match=r"held_out_centers is not set.*held_out_centers=\[teaching,rural\].*held_out_centers=\[\]"):
        run_federation(grid, cfg, log=lambda _m: None)
    assert grid.sent == []
    not_a_list = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=teaching"])
    with pytest.raises(ValueError, match="must be a list"):
        run_federation(grid, not_a_list, log=lambda _m: None)
    none_held_out = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=[]"])
    assert RunContext(grid, none_held_out, log=lambda _m: None).held_out == []


def test_discovery_stops_on_a_held_out_name_no_connected_site_has() -> None:
    grid = FakeGrid(list(CENTERS), _identify)
    with pytest.raises(ValueError, match=r"\['teachng'\].*connected centers: \['clinic', 'regional', 'teaching'\]"):
        discover_sites(grid, expected=3, held_out=["teachng"], timeout=5.0, log=lambda _m: None)
    assert {m.metadata.message_type for m in grid.sent} == {MessageType.QUERY}  # identification only


def test_discovery_splits_training_and_held_out_sites_with_their_declared_counts() -> None:
    sites = discover_sites(FakeGrid(list(CENTERS), _identify), expected=3, held_out=["teaching"], timeout=5.0,
                           log=lambda _m: None)
    assert (sites.train, sites.held_out) == ([1, 2], [3])
    assert sites.example_limits("stage_b") == {1: 10.0, 2: 20.0}  # training sites only


def test_final_evaluation_leaves_out_a_malformed_reply_and_pools_the_others(tmp_path) -> None:
    labels = {1: np.array([0, 0, 1]), 2: np.array([0, 1]), 3: np.array([0, 1, 1, 0])}
    scores = {1: np.array([0.2, 0.6, 0.7]), 2: np.array([0.3, 0.8]), 3: np.array([0.1, 0.9, 0.4, 0.5])}

    def evaluate(message: Message) -> Message:
        node = message.metadata.dst_node_id
        threshold = parse_request(message.content[CONFIG_RECORD]).threshold
        reply = eval_reply(node, labels[node], scores[node], threshold, bins=16)
        if node == 2:  # regional sends one bin too many
            key = HISTOGRAM_KEYS[0]
            reply.content[METRICS_RECORD][key] = [*reply.content[METRICS_RECORD][key], 0]
        return reply

    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=[teaching]", "histogram_bins=16"])
    logs: list[str] = []
    run = RunContext(FakeGrid(list(CENTERS), evaluate), cfg, log=logs.append)
    run.store.start(cfg, resume=False)
    run.state = fresh_state(run)
    run.sites = Sites(CENTERS, train=[1, 2], held_out=[3], info={})
    final = final_evaluation(run)
    lines = {line["center"]: line for line in final["centers"]}
    assert lines["regional"]["error"] == "rejected: hist-neg has 17 bins, expected 16"
    assert any("rejected the final evaluation of regional" in line for line in logs)
    assert (lines["clinic"]["n"], lines["teaching"]["n"]) == (3, 4)
    assert final["internal_test"]["n"] == 3 and final["held_out"]["n"] == 4  # regional left out of the pool
    # the accepted replies' histograms are kept for the run report (non-zero bins only)
    kept = json.loads((tmp_path / "final_histograms.json").read_text())
    assert kept["bins"] == 16 and set(kept["centers"]) == {"clinic", "teaching"}
    assert kept["centers"]["teaching"]["role"] == "held_out"
    assert sum(kept["centers"]["teaching"]["neg"].values()) == 2 and sum(kept["centers"]["teaching"]["pos"].values()) == 2


def test_the_exported_operating_point_reports_validation_figures_at_its_own_threshold(tmp_path) -> None:
    """The selected round's record holds its pooled validation histograms and ``val``, figures at
    the per-round threshold 0.5. The run's operating point (sensitivity first, from the
    histograms) is elsewhere, and the validation sensitivity/specificity recorded with it must be
    those at *that* threshold (they once were the round's 0.5 figures: threshold 0.055 beside a
    sensitivity of 0.42)."""
    from ecs_models.training.binned_metrics import binned_metrics, score_histograms

    rng = np.random.default_rng(0)
    val_labels = (rng.random(400) < 0.2).astype(int)
    val_scores = np.clip(rng.normal(0.15 + 0.25 * val_labels, 0.12), 0, 1)  # most positives below 0.5
    neg, pos = score_histograms(val_labels, val_scores, bins=16)
    labels, scores = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.5])

    def evaluate(message: Message) -> Message:
        node = message.metadata.dst_node_id
        return eval_reply(node, labels, scores, parse_request(message.content[CONFIG_RECORD]).threshold, bins=16)

    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path}", "held_out_centers=[teaching]", "histogram_bins=16"])
    run = RunContext(FakeGrid(list(CENTERS), evaluate), cfg, log=lambda _m: None)
    run.store.start(cfg, resume=False)
    run.state = fresh_state(run)
    run.state["best"] = {"arrays": run.state["model_arrays"], "global_round": 3,
                         "val_histograms": {"neg": neg.tolist(), "pos": pos.tolist()}, "val": binned_metrics(neg, pos, 0.5)}
    run.sites = Sites(CENTERS, train=[1, 2], held_out=[3], info={})
    final = final_evaluation(run)
    at_threshold = binned_metrics(neg, pos, final["threshold"])
    assert final["threshold"] < 0.5 and final["val"]["threshold"] == final["threshold"]
    assert final["val"]["sensitivity"] == at_threshold["sensitivity"] >= 0.95
    assert final["val"]["specificity"] == at_threshold["specificity"]
    assert final["val"]["sensitivity"] != run.state["best"]["val"]["sensitivity"]  # not the round's 0.5 figures
