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
