"""The coordinator's run on a fake Grid: records, config checks, site discovery."""

from __future__ import annotations

import numpy as np
import pytest
from flower_fakes import FakeGrid, info_reply, task_identity  # noqa: F401
from flwr.app import Message, MessageType

from server.config import compose_config
from server.federation import _Run, _to_record, discover_sites, run_federation

CENTERS = {1: "clinic", 2: "regional", 3: "teaching"}


def test_record_keeps_shapes_of_zero_dim_and_strided_arrays() -> None:
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not C-contiguous
    arrays = {"bn.num_batches_tracked": np.asarray(7, dtype=np.int64), "w": strided, "b": np.ones(3, np.float32)}
    record = _to_record(arrays)
    for key, value in arrays.items():
        got = record[key].numpy()
        assert got.shape == value.shape and got.dtype == value.dtype, key  # FedAdam compares shapes per key
        np.testing.assert_array_equal(got, value)


def test_stage_messages_carry_the_teacher_learning_rate_and_bad_ones_are_refused(tmp_path) -> None:
    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'a'}", "held_out_centers=[]",
                          "training.stage_a.teacher_lr=2e-4"])
    run = _Run(None, cfg, log=lambda _m: None)
    assert run.base_params("stage_a")["teacher-lr"] == 2e-4
    assert run.base_params("stage_b")["teacher-lr"] == 0.0  # null: the stage's own lr
    bad = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'b'}", "held_out_centers=[]",
                          "training.stage_b.teacher_lr=-1"])
    with pytest.raises(ValueError, match="training.stage_b.teacher_lr"):
        _Run(None, bad, log=lambda _m: None)


def _identify(message: Message) -> Message:
    node = message.metadata.dst_node_id
    return info_reply(node, CENTERS[node], **{"max-train-examples-stage_b": 10.0 * node})


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
    assert _Run(grid, none_held_out, log=lambda _m: None).held_out == []


def test_discovery_stops_on_a_held_out_name_no_connected_site_has() -> None:
    grid = FakeGrid(list(CENTERS), _identify)
    with pytest.raises(ValueError, match=r"\['teachng'\].*connected centers: \['clinic', 'regional', 'teaching'\]"):
        discover_sites(grid, expected=3, held_out=["teachng"], timeout=5.0, log=lambda _m: None)
    assert {m.metadata.message_type for m in grid.sent} == {MessageType.QUERY}  # identification only


def test_discovery_splits_training_and_held_out_sites_with_their_declared_counts() -> None:
    sites = discover_sites(FakeGrid(list(CENTERS), _identify), expected=3, held_out=["teaching"], timeout=5.0,
                           log=lambda _m: None)
    assert (sites.train, sites.held_out) == ([1, 2], [3])
    assert sites.info["regional"]["max-train-examples-stage_b"] == 20.0

