"""Every refusal of :mod:`strategies.validation`, through ``SiteAwareStrategy``: the bad reply is
rejected with a reason that names the problem, and the round goes on with the other replies."""

from __future__ import annotations

import numpy as np
import pytest
from flower_fakes import FakeGrid, eval_reply, train_reply
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

from protocol.messages import HISTOGRAM_KEYS, METRICS_RECORD, NUM_EXAMPLES, TRAIN_LOSS, UNIT_WEIGHT
from strategies.factory import StrategySpec, build_strategy
from strategies.wrapper import RoundReport, SiteAwareStrategy

CENTERS = {11: "alpha", 12: "beta", 13: "gamma"}
TRAIN = [11, 12, 13]
BAD = 13  # gamma sends the bad reply in every test
GLOBAL = {"w": np.zeros(4, np.float32), "bn.num_batches_tracked": np.asarray(0, np.int64)}
BINS = 16


def _strategy(weighting: str = "examples", **kwargs) -> SiteAwareStrategy:  # noqa: ANN003
    inner = build_strategy(StrategySpec(weighting=weighting), fraction_train=1.0, min_train_nodes=1, min_available_nodes=1)
    return SiteAwareStrategy(inner, phase="stage_b", centers=CENTERS, train_nodes=TRAIN, eval_nodes=TRAIN,
                             min_train_replies=2, histogram_bins=BINS, **kwargs)


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(4, value, np.float32), "bn.num_batches_tracked": np.asarray(3, np.int64)}


def _started_round(**kwargs) -> SiteAwareStrategy:  # noqa: ANN003
    """A strategy whose round 1 has sent its train messages (the round's report exists)."""
    strategy = _strategy(**kwargs)
    record = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    list(strategy.configure_train(1, record, ConfigRecord({}), FakeGrid(TRAIN)))
    return strategy


def _train_round(bad_reply, **kwargs) -> tuple[np.ndarray, RoundReport]:  # noqa: ANN001,ANN003
    """alpha (w = 1) and beta (w = 3) answer well, gamma with ``bad_reply``; the aggregated w."""
    strategy = _started_round(**kwargs)
    replies = [train_reply(11, _arrays(1.0)), train_reply(12, _arrays(3.0)), bad_reply]
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays["w"].numpy(), strategy._report


def _assert_rejected_and_others_aggregated(w: np.ndarray, report: RoundReport, *words: str) -> None:
    reason = report.rejected["gamma"]
    assert all(word in reason for word in words), reason
    assert report.answered == ["alpha", "beta"] and report.aggregated
    np.testing.assert_allclose(w, 2.0)  # alpha and beta, equal weights


# -- training replies ----------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_train_reply_with_nan_or_inf_in_an_array_is_rejected(value: float, word: str) -> None:
    arrays = _arrays(2.0)
    arrays["w"][1] = value
    w, report = _train_round(train_reply(BAD, arrays))
    _assert_rejected_and_others_aggregated(w, report, "array w", word)


@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_train_reply_with_a_non_finite_metric_is_rejected(value: float, word: str) -> None:
    w, report = _train_round(train_reply(BAD, _arrays(2.0), **{TRAIN_LOSS: value}))
    _assert_rejected_and_others_aggregated(w, report, "metric train-loss", word)


@pytest.mark.parametrize("examples", [0.0, -4.0])
def test_train_reply_whose_num_examples_is_not_positive_is_rejected(examples: float) -> None:
    w, report = _train_round(train_reply(BAD, _arrays(2.0), n=examples))
    _assert_rejected_and_others_aggregated(w, report, "'num-examples'", "not positive")


def test_train_reply_without_num_examples_is_rejected() -> None:
    reply = train_reply(BAD, _arrays(2.0))
    del reply.content[METRICS_RECORD][NUM_EXAMPLES]
    w, report = _train_round(reply)
    _assert_rejected_and_others_aggregated(w, report, "'num-examples'", "missing")


def test_train_reply_with_more_examples_than_declared_at_discovery_is_rejected() -> None:
    limits = {11: 10.0, 12: 10.0, 13: 20.0}
    w, report = _train_round(train_reply(BAD, _arrays(2.0), n=21.0), max_examples=limits)
    _assert_rejected_and_others_aggregated(w, report, "num-examples = 21", "20 training examples", "discovery")


def test_train_reply_at_its_declared_count_is_accepted() -> None:
    limits = {11: 10.0, 12: 10.0, 13: 20.0}
    w, report = _train_round(train_reply(BAD, _arrays(2.0), n=20.0), max_examples=limits)
    assert report.rejected == {} and report.answered == ["alpha", "beta", "gamma"]
    np.testing.assert_allclose(w, (10 * 1.0 + 10 * 3.0 + 20 * 2.0) / 40)  # weighted by num-examples


def test_train_reply_with_a_non_positive_uniform_weight_is_rejected() -> None:
    w, report = _train_round(train_reply(BAD, _arrays(2.0), **{UNIT_WEIGHT: 0.0}), weighting="uniform")
    _assert_rejected_and_others_aggregated(w, report, "'unit-weight'", "not positive")


# -- evaluation replies ----------------------------------------------------------------------------
LABELS = {11: np.array([0, 0, 1, 1]), 12: np.array([0, 1, 1]), 13: np.array([0, 0, 1])}
SCORES = {11: np.array([0.1, 0.4, 0.35, 0.8]), 12: np.array([0.2, 0.6, 0.9]), 13: np.array([0.3, 0.7, 0.6])}


def _gamma_hist(key: str) -> list[int]:
    return list(eval_reply(BAD, LABELS[BAD], SCORES[BAD], bins=BINS).content[METRICS_RECORD][key])


def _evaluate_round(**changed: object) -> tuple[MetricRecord, RoundReport]:
    """alpha and beta report their true counts, gamma with ``changed`` metrics."""
    strategy = _started_round()
    replies = [eval_reply(n, LABELS[n], SCORES[n], bins=BINS, **(changed if n == BAD else {})) for n in TRAIN]
    return strategy.aggregate_evaluate(1, replies), strategy._report


def _assert_evaluation_rejected(metrics: MetricRecord, report: RoundReport, *words: str) -> None:
    reason = report.rejected["gamma (evaluate)"]
    assert all(word in reason for word in words), reason
    assert set(report.val) == {"alpha", "beta"}
    assert metrics["n"] == report.val_pooled["n"] == 7  # 4 + 3 images of alpha and beta
    assert sum(report.val_histograms["neg"]) + sum(report.val_histograms["pos"]) == 7


def test_evaluation_reply_of_true_counts_is_used() -> None:
    metrics, report = _evaluate_round()
    assert report.rejected == {} and metrics["n"] == 10 and set(report.val) == {"alpha", "beta", "gamma"}


def test_evaluation_histogram_of_another_length_is_rejected() -> None:
    longer = _gamma_hist(HISTOGRAM_KEYS[0]) + [0]
    metrics, report = _evaluate_round(hist_neg=longer)
    _assert_evaluation_rejected(metrics, report, "hist-neg has 17 bins", f"expected {BINS}")


def test_evaluation_histogram_with_a_negative_count_is_rejected() -> None:
    hist = _gamma_hist(HISTOGRAM_KEYS[1])
    hist[0] -= 1
    hist[-1] += 1  # same total: only the sign is wrong
    metrics, report = _evaluate_round(hist_pos=hist)
    _assert_evaluation_rejected(metrics, report, HISTOGRAM_KEYS[1], "negative count")


def test_evaluation_histogram_with_a_fractional_count_is_rejected() -> None:
    hist = [float(v) for v in _gamma_hist(HISTOGRAM_KEYS[0])]
    nonzero = [i for i, v in enumerate(hist) if v > 0]
    hist[nonzero[0]] -= 0.5
    hist[nonzero[-1]] += 0.5  # same total: only integrality is wrong
    metrics, report = _evaluate_round(hist_neg=hist)
    _assert_evaluation_rejected(metrics, report, HISTOGRAM_KEYS[0], "not an integer")


@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_evaluation_counts_that_are_not_finite_are_rejected(value: float, word: str) -> None:
    hist = [float(v) for v in _gamma_hist(HISTOGRAM_KEYS[0])]
    hist[5] = value
    metrics, report = _evaluate_round(hist_neg=hist)
    _assert_evaluation_rejected(metrics, report, HISTOGRAM_KEYS[0], word)


def test_evaluation_histograms_that_do_not_add_up_to_num_examples_are_rejected() -> None:
    metrics, report = _evaluate_round(num_examples=5.0)
    _assert_evaluation_rejected(metrics, report, "histograms count", "= 3 images", "num-examples = 5")


def test_evaluation_confusion_matrix_that_disagrees_with_the_histograms_is_rejected() -> None:
    metrics, report = _evaluate_round(tp=5)
    _assert_evaluation_rejected(metrics, report, "confusion matrix counts", "positives")


def test_evaluation_reply_without_its_histograms_is_rejected() -> None:
    strategy = _started_round()
    replies = [eval_reply(n, LABELS[n], SCORES[n], bins=BINS) for n in TRAIN]
    del replies[2].content[METRICS_RECORD][HISTOGRAM_KEYS[1]]
    metrics = strategy.aggregate_evaluate(1, replies)
    _assert_evaluation_rejected(metrics, strategy._report, "missing metrics", HISTOGRAM_KEYS[1])


def test_evaluation_confusion_count_given_as_a_list_is_rejected() -> None:
    metrics, report = _evaluate_round(fn=[0, 0])
    _assert_evaluation_rejected(metrics, report, "fn is a list", "expected one count")


def test_evaluation_reply_with_two_metric_records_is_rejected() -> None:
    strategy = _started_round()
    replies = [eval_reply(n, LABELS[n], SCORES[n], bins=BINS) for n in TRAIN]
    replies[2].content["extra"] = MetricRecord({NUM_EXAMPLES: 3.0})
    metrics = strategy.aggregate_evaluate(1, replies)
    _assert_evaluation_rejected(metrics, strategy._report, "expected one MetricRecord", "got 2")
