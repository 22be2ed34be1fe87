"""Server helpers: the global arrays' Flower record keeps every array's shape."""

from __future__ import annotations

import numpy as np

from server.federation import _to_record


def test_record_keeps_shapes_of_zero_dim_and_strided_arrays() -> None:
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not C-contiguous
    arrays = {"bn.num_batches_tracked": np.asarray(7, dtype=np.int64), "w": strided, "b": np.ones(3, np.float32)}
    record = _to_record(arrays)
    for key, value in arrays.items():
        got = record[key].numpy()
        assert got.shape == value.shape and got.dtype == value.dtype, key  # FedAdam compares shapes per key
        np.testing.assert_array_equal(got, value)


def test_stage_messages_carry_the_teacher_learning_rate_and_bad_ones_are_refused(tmp_path) -> None:
    import pytest

    from server.config import compose_config
    from server.federation import _Run

    cfg = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'a'}", "training.stage_a.teacher_lr=2e-4"])
    run = _Run(None, cfg, log=lambda _m: None)
    assert run.base_params("stage_a")["teacher-lr"] == 2e-4
    assert run.base_params("stage_b")["teacher-lr"] == 0.0  # null: the stage's own lr
    bad = compose_config(["experiment=smoke", f"run_dir={tmp_path / 'b'}", "training.stage_b.teacher_lr=-1"])
    with pytest.raises(ValueError, match="training.stage_b.teacher_lr"):
        _Run(None, bad, log=lambda _m: None)
