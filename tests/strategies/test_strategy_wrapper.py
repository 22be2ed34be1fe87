"""SiteAwareStrategy on fake replies: failures, NaN, outliers, k-of-n, held-out nodes, resume state."""

from __future__ import annotations

import numpy as np
import pytest
from flower_fakes import FakeGrid, error_reply, eval_reply, train_reply
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from protocol.messages import CONFIG_RECORD, NUM_EXAMPLES, TrainRequest, wire_key
from strategies.factory import StrategySpec, build_strategy
from strategies.validation import validate_train_replies
from strategies.wrapper import SiteAwareStrategy, TooManyFailedRounds, TrainMessageRefused

CENTERS = {11: "alpha", 12: "beta", 13: "gamma", 14: "delta", 21: "heldout"}
TRAIN = [11, 12, 13, 14]
GLOBAL = {"w": np.zeros(4, np.float32), "bn.running_var": np.ones(4, np.float32)}


def _strategy(name: str = "fedavg", spec: dict | None = None, **kwargs) -> SiteAwareStrategy:  # noqa: ANN003
    inner = build_strategy(StrategySpec(name=name, **(spec or {})), fraction_train=1.0, min_train_nodes=1, min_available_nodes=1)
    kwargs.setdefault("min_train_replies", 2)
    return SiteAwareStrategy(inner, phase="stage_a", centers=CENTERS, train_nodes=TRAIN, eval_nodes=TRAIN, **kwargs)


def _configure(strategy: SiteAwareStrategy, grid: FakeGrid | None = None) -> list:
    record = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    return list(strategy.configure_train(1, record, ConfigRecord({}), grid or FakeGrid(list(CENTERS))))


def _update(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(4, value, np.float32), "bn.running_var": np.ones(4, np.float32)}


def test_held_out_nodes_never_receive_train_messages() -> None:
    strategy = _strategy()
    messages = _configure(strategy)
    assert sorted(m.metadata.dst_node_id for m in messages) == TRAIN
    assert all(m.content["config"]["phase"] == "stage_a" for m in messages)
    evals = list(strategy.configure_evaluate(1, ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}), ConfigRecord({}),
                                             FakeGrid(list(CENTERS))))
    assert 21 not in {m.metadata.dst_node_id for m in evals}


def _respond(message: Message) -> Message:
    """Every site trains to w = 1 and validates two images."""
    node = message.metadata.dst_node_id
    if message.metadata.message_type == MessageType.TRAIN:
        return train_reply(node, _update(1.0))
    return eval_reply(node, np.array([0, 1]), np.array([0.2, 0.9]))


def test_rounds_record_the_centers_train_messages_were_sent_to() -> None:
    reports = []
    strategy = _strategy(on_round_end=lambda report, _arrays: reports.append(report))
    record = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    strategy.start(FakeGrid(list(CENTERS), _respond), record, num_rounds=2, timeout=1.0,
                   evaluate_fn=strategy.evaluate_fn)
    assert [r.train_centers for r in reports] == [["alpha", "beta", "delta", "gamma"]] * 2
    assert reports[0].to_json()["train_centers"] == ["alpha", "beta", "delta", "gamma"]


def test_a_train_message_to_a_held_out_node_is_refused_before_anything_is_sent() -> None:
    strategy = _strategy()

    def stray(server_round, arrays, config, grid):  # noqa: ANN001,ANN202  (an inner strategy that ignores its Grid view)
        return [Message(content=RecordDict({"arrays": arrays, "config": config}), dst_node_id=node,
                        message_type=MessageType.TRAIN) for node in (11, 21)]

    strategy.inner.configure_train = stray
    grid = FakeGrid(list(CENTERS), _respond)
    with pytest.raises(TrainMessageRefused, match="heldout"):
        strategy.start(grid, ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}), num_rounds=1, timeout=1.0)
    assert grid.sent == []


def test_error_nan_and_outlier_replies_are_left_out_and_the_round_goes_on() -> None:
    strategy = _strategy()
    _configure(strategy)
    nan = _update(1.0)
    nan["w"][0] = np.nan
    replies = [train_reply(11, _update(1.0)), train_reply(12, _update(2.0)), error_reply(13, "ValueError: boom"),
               train_reply(14, nan)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), 1.5)  # alpha and beta, equal weights
    report = strategy._report
    assert report.answered == ["alpha", "beta"]
    assert "boom" in report.failed["gamma"]
    assert "NaN" in report.rejected["delta"]


def test_update_norm_far_above_the_median_is_rejected() -> None:
    strategy = _strategy(outlier_factor=10.0)
    _configure(strategy)
    replies = [train_reply(11, _update(1.0)), train_reply(12, _update(1.1)), train_reply(13, _update(0.9)),
               train_reply(14, _update(500.0))]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert "update norm" in strategy._report.rejected["delta"]
    np.testing.assert_allclose(arrays["w"].numpy(), 1.0, rtol=1e-6)


def test_fewer_than_k_valid_replies_void_the_round_then_stop_the_run() -> None:
    strategy = _strategy(min_train_replies=2, max_failed_rounds=1)
    for attempt in range(2):
        _configure(strategy)
        replies = [train_reply(11, _update(1.0)), error_reply(12), error_reply(13)]  # 14 never answers
        if attempt == 0:
            assert strategy.aggregate_train(1, replies) == (None, None)
            assert strategy._report.failed["delta"].startswith("no reply")
        else:
            with pytest.raises(TooManyFailedRounds):
                strategy.aggregate_train(1, replies)


def test_aggregation_is_independent_of_reply_order() -> None:
    values = [0.1, 0.7, 0.3]
    results = []
    for order in ([0, 1, 2], [2, 0, 1]):
        strategy = _strategy()
        _configure(strategy)
        replies = [train_reply(11 + i, _update(values[i]), n=float(3 + 7 * i)) for i in order]
        results.append(strategy.aggregate_train(1, replies)[0]["w"].numpy())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize(("name", "spec"), [("fedadam", {}), ("fedavgm", {"server_momentum": 0.6})])
def test_server_optimizer_leaves_running_statistics_to_plain_averaging(name: str, spec: dict) -> None:
    strategy = _strategy(name, spec, statistics_keys=["bn.running_var"])
    _configure(strategy)
    for server_round in (1, 2):  # FedAvgM's momentum acts from the second step
        replies = [train_reply(11, {"w": np.full(4, 1.0, np.float32), "bn.running_var": np.full(4, 2.0, np.float32)}),
                   train_reply(12, {"w": np.full(4, 3.0, np.float32), "bn.running_var": np.full(4, 4.0, np.float32)})]
        arrays, _ = strategy.aggregate_train(server_round, replies)
    np.testing.assert_allclose(arrays["bn.running_var"].numpy(), 3.0)
    assert not np.allclose(arrays["w"].numpy(), 2.0)  # the weights did go through the server optimizer


def test_fedavgm_momentum_accumulates_the_averaged_updates() -> None:
    """Sites return 2 on average both rounds: round 1 steps 0 -> 2; round 2 adds b x 2 + (2 - 2) = 1.2 -> 3.2."""
    strategy = _strategy("fedavgm", {"server_momentum": 0.6})
    _configure(strategy)
    steps = []
    for server_round in (1, 2):
        replies = [train_reply(11, _update(1.0)), train_reply(12, _update(3.0))]  # equal weights: average 2
        steps.append(strategy.aggregate_train(server_round, replies)[0]["w"].numpy())
    np.testing.assert_allclose(steps[0], 2.0)
    np.testing.assert_allclose(steps[1], 3.2, rtol=1e-6)


def test_state_dict_round_trips_server_optimizer_state() -> None:
    strategy = _strategy("fedadam")
    _configure(strategy)
    strategy.aggregate_train(1, [train_reply(11, _update(1.0)), train_reply(12, _update(2.0))])
    restored = _strategy("fedadam", round_offset=1)
    restored.load_state_dict(strategy.state_dict())
    np.testing.assert_array_equal(restored.inner.m_t["w"], strategy.inner.m_t["w"])
    messages = _configure(restored)
    assert messages[0].content[CONFIG_RECORD][wire_key(TrainRequest, "phase_round")] == 2  # the round after the checkpoint


def test_per_center_and_pooled_validation_metrics() -> None:
    strategy = _strategy()
    _configure(strategy)
    rng = np.random.default_rng(0)
    data = {11: (np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 12: (np.array([0, 1]), rng.random(2))}
    metrics = strategy.aggregate_evaluate(1, [eval_reply(n, *data[n]) for n in data])
    report = strategy._report
    assert set(report.val) == {"alpha", "beta"}
    assert report.val["alpha"]["auc"] == pytest.approx(0.75)
    assert report.val_pooled["n"] == 6 and metrics["n"] == 6
    assert sum(report.val_histograms["neg"]) + sum(report.val_histograms["pos"]) == 6


def test_validation_rejects_mismatched_keys() -> None:
    from flwr.app import MetricRecord, RecordDict

    content = RecordDict({"arrays": ArrayRecord({"other": Array(np.zeros(2, np.float32))}),
                          "metrics": MetricRecord({NUM_EXAMPLES: 1.0})})
    accepted, rejections, _ = validate_train_replies([(1, "a", content)], GLOBAL)
    assert accepted == [] and "keys differ" in rejections[0].reason


def test_round_report_times_the_train_and_validation_steps_and_counts_bytes() -> None:
    strategy = _strategy()
    _configure(strategy)
    report = strategy._report
    global_bytes = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}).count_bytes()
    assert report.sent_bytes == global_bytes
    strategy.aggregate_train(1, [train_reply(11, _update(1.0)), train_reply(12, _update(2.0)), error_reply(13)])
    assert report.reply_bytes == {"alpha": global_bytes, "beta": global_bytes}  # same keys, shapes, dtypes
    assert report.train_seconds > 0 and report.evaluate_seconds == 0
    record = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    list(strategy.configure_evaluate(1, record, ConfigRecord({}), FakeGrid(list(CENTERS))))
    strategy.aggregate_evaluate(1, [eval_reply(11, np.array([0, 1]), np.array([0.2, 0.9]))])
    assert report.evaluate_seconds > 0
    strategy.evaluate_fn(1, record)
    assert report.seconds >= report.train_seconds + report.evaluate_seconds
    assert {"train_seconds", "evaluate_seconds", "sent_bytes", "reply_bytes"} <= set(report.to_json())
