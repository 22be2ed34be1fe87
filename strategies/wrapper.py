"""``SiteAwareStrategy``: what Flower's strategies lack, wrapped around any of them.

Flower's ``Strategy.start`` runs the rounds; this wrapper only intercepts its four hooks and
adds, without copying the round loop:

* **Who trains.** ``configure_train`` / ``configure_evaluate`` see a view of the Grid that lists
  only the phase's nodes (held-out centers never receive a train message; the GAN phase only
  goes to sites with MRI). The inner strategy samples from that view (k-of-n with its own
  ``fraction_train`` / ``min_train_nodes`` / ``min_available_nodes``). Independently of any
  sampling code, :meth:`start` hands Flower's round loop a Grid that refuses to send a train
  message to any other node (:class:`TrainMessageRefused`, nothing sent) and records the
  centers each round's train messages actually went to (``train_centers`` in ``rounds.jsonl``).
* **Reply validation** (:mod:`strategies.validation`): error replies, missing replies (round
  timeout) and training replies with NaN/Inf, a ``num-examples`` that is not positive or above
  what the site declared at discovery (``max_examples``), or an outlying update norm are logged
  and left out; the inner strategy aggregates the rest, sorted by center name (a fixed summation
  order, so a resumed run reproduces an uninterrupted one). Fewer than ``min_train_replies``
  valid replies void the round (the global model is kept); more than ``max_failed_rounds`` void
  rounds in a row stop the run with a clear message instead of waiting forever.
* **Per-center metrics.** Evaluation replies carry counts (confusion matrix at the server's
  threshold, per-class score histograms of ``histogram_bins`` bins); replies whose counts are
  malformed or inconsistent are rejected with the reason like training replies; the wrapper
  computes each accepted center's and the pooled AUC / sensitivity / specificity
  (:mod:`ecs_models.training.binned_metrics`).
* **Statistics stay averaged.** With a server optimizer (FedAdam, FedYogi, FedAvgM), BatchNorm
  running statistics are replaced by their plain weighted average: an Adam step on a running
  variance can make it negative.
* **Rounds across restarts.** ``round_offset`` shifts Flower's 1-based round numbers, so a phase
  resumed after round k continues as round k + 1 for the inner strategy (FedAdam's bias
  correction depends on it) and for the clients' seeds; :meth:`state_dict` /
  :meth:`load_state_dict` carry the inner strategy's state (server optimizer moments).
* **Local DP.** A site's ``privacy`` record (its ledger entry) is kept per round
  (``RoundReport.privacy``); a site that declines a round over its budget is listed in
  ``declined``, and the next round raises :class:`SitesDeclined` so that the phase runner
  restarts the phase without it.
* **Checkpoint hook.** :meth:`evaluate_fn` is passed to ``Strategy.start`` as its
  ``evaluate_fn``: after every round it hands a :class:`RoundReport` and the new global arrays
  to ``on_round_end`` (the ServerApp persists the round there).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedAvgM, Result, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from ecs_models.training.binned_metrics import DEFAULT_BINS, binned_metrics
from protocol.messages import (
    CONFUSION_KEYS,
    PRIVACY_RECORD,
    Evaluate,
    EvaluateReply,
    MessageError,
    PrivacyReport,
    TrainRequest,
    wire,
)
from strategies.grids import NodeSubsetGrid, TrainGuardGrid, TrainMessageRefused
from strategies.validation import Rejection, evaluate_problem, validate_train_replies

__all__ = ["RoundReport", "SiteAwareStrategy", "SitesDeclined", "TooManyFailedRounds", "TrainMessageRefused", "center_metrics",
           "pool_evaluations", "privacy_report", "Rejection"]

logger = logging.getLogger(__name__)


def privacy_report(content: RecordDict) -> PrivacyReport | None:
    """A reply's ``privacy`` record (local DP), None without one; MessageError when malformed."""
    return PrivacyReport.from_record(content[PRIVACY_RECORD]) if PRIVACY_RECORD in content.config_records else None


class TooManyFailedRounds(RuntimeError):
    """More consecutive rounds without ``min_train_replies`` valid replies than allowed."""


class SitesDeclined(RuntimeError):
    """Sites declined the last round (local DP budget): the phase goes on without them."""


@dataclass
class RoundReport:
    """What happened in one round, as persisted to ``rounds.jsonl``."""

    phase: str
    round: int  # within the phase, 1-based
    global_round: int  # across phases, 1-based
    sampled: list[str] = field(default_factory=list)
    train_centers: list[str] = field(default_factory=list)  # train messages actually sent (recorded at the Grid)
    answered: list[str] = field(default_factory=list)  # valid and aggregated
    failed: dict[str, str] = field(default_factory=dict)  # center -> error / "no reply"
    rejected: dict[str, str] = field(default_factory=dict)  # center (+ " (evaluate)") -> validation reason
    declined: dict[str, str] = field(default_factory=dict)  # center -> why (local DP: over its budget)
    privacy: dict[str, dict] = field(default_factory=dict)  # center -> its latest ledger entry (local DP)
    aggregated: bool = False
    train: dict[str, dict[str, float]] = field(default_factory=dict)  # center -> train metrics
    train_pooled: dict[str, float] = field(default_factory=dict)
    val: dict[str, dict[str, float]] = field(default_factory=dict)  # center -> binned metrics
    val_pooled: dict[str, float] = field(default_factory=dict)
    val_histograms: dict[str, list[int]] = field(default_factory=dict)  # pooled "neg" / "pos"
    update_norms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # the whole round: train step + per-round validation
    train_seconds: float = 0.0  # train step: configure_train -> replies -> aggregate_train done
    evaluate_seconds: float = 0.0  # validation step: configure_evaluate -> aggregate_evaluate done
    sent_bytes: int = 0  # serialized arrays of the train message sent to each sampled site
    reply_bytes: dict[str, int] = field(default_factory=dict)  # center -> serialized arrays of its train reply
    started: float = 0.0

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("val_histograms", "started", "privacy")}
        return out


def pool_evaluations(replies: Iterable[EvaluateReply]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Summed per-class score histograms (int64 [bins] each) and confusion matrix of evaluation replies."""
    replies = list(replies)
    neg = np.sum([np.asarray(r.hist_neg, np.int64) for r in replies], axis=0)
    pos = np.sum([np.asarray(r.hist_pos, np.int64) for r in replies], axis=0)
    confusion = {key: sum(r.confusion()[key] for r in replies) for key in CONFUSION_KEYS}
    return neg, pos, confusion


def center_metrics(reply: EvaluateReply | MetricRecord | dict, threshold: float) -> dict[str, float]:
    """Binned metrics of one evaluation reply (histograms + exact confusion at ``threshold``)."""
    if not isinstance(reply, EvaluateReply):
        reply = EvaluateReply.from_record(reply)
    return binned_metrics(np.asarray(reply.hist_neg), np.asarray(reply.hist_pos), threshold, reply.confusion())


class SiteAwareStrategy(Strategy):
    """Wraps a Flower ``FedAvg``-family strategy (see the module docstring).

    Args:
        inner: the configured Flower strategy (FedAvg, FedProx, FedAdam, FedMedian, Krum, ...).
        phase: phase name sent to clients in every config (``gan``, ``stage_a``, ``stage_b``).
        centers: node id -> center name, for every node of the federation.
        train_nodes: nodes that may receive train messages in this phase.
        eval_nodes: nodes that validate after each round (empty: no per-round evaluation).
        round_offset: rounds of this phase already completed (resume).
        global_round_base: rounds of earlier phases (global round = base + phase round).
        min_train_replies: k, valid replies needed to aggregate a round.
        max_failed_rounds: consecutive void rounds tolerated before stopping.
        outlier_factor: update-norm rejection factor over the round median (0: off).
        max_examples: node id -> most training examples the site declared for this phase at
            discovery; a train reply claiming more ``num-examples`` is rejected.
        histogram_bins: bins of the evaluation score histograms the sites were asked for.
        statistics_keys: running-statistics keys averaged plainly under a server optimizer.
        round_config: ``phase_round -> dict`` of per-round train config (learning rate, ...).
        threshold: operating point for the per-round validation confusion matrices.
        on_round_end: ``(report, arrays)`` after every round (persistence, progress line).
        require_privacy: local DP: a train reply without the site's ledger entry is rejected.
    """

    def __init__(
        self,
        inner: FedAvg,
        *,
        phase: str,
        centers: dict[int, str],
        train_nodes: Iterable[int],
        eval_nodes: Iterable[int] = (),
        round_offset: int = 0,
        global_round_base: int = 0,
        min_train_replies: int = 1,
        max_failed_rounds: int = 2,
        outlier_factor: float = 10.0,
        max_examples: Mapping[int, float] | None = None,
        histogram_bins: int = DEFAULT_BINS,
        statistics_keys: Iterable[str] = (),
        round_config: Callable[[int], dict] | None = None,
        threshold: float = 0.5,
        on_round_end: Callable[[RoundReport, ArrayRecord], None] | None = None,
        require_privacy: bool = False,
    ) -> None:
        self.inner = inner
        self.phase = phase
        self.centers = dict(centers)
        self.train_nodes = sorted(train_nodes)
        self.eval_nodes = sorted(eval_nodes)
        self.round_offset = round_offset
        self.global_round_base = global_round_base
        self.min_train_replies = max(1, int(min_train_replies))
        self.max_failed_rounds = int(max_failed_rounds)
        self.outlier_factor = float(outlier_factor)
        self.max_examples = dict(max_examples or {})
        self.histogram_bins = int(histogram_bins)
        self.statistics_keys = frozenset(statistics_keys)
        self.round_config = round_config
        self.threshold = float(threshold)
        self.on_round_end = on_round_end
        self.require_privacy = require_privacy
        self.failed_rounds = 0
        self.declined: dict[int, str] = {}  # node -> reason, this strategy's lifetime
        self._sent: dict[str, np.ndarray] | None = None
        self._report: RoundReport | None = None
        self._evaluate_started: float | None = None

    # -- helpers -------------------------------------------------------------------------
    def _round(self, server_round: int) -> int:
        return server_round + self.round_offset

    def _center(self, node_id: int) -> str:
        return self.centers.get(node_id, f"node-{node_id}")

    def _new_report(self, server_round: int) -> RoundReport:
        phase_round = self._round(server_round)
        return RoundReport(self.phase, phase_round, self.global_round_base + phase_round, started=time.perf_counter())

    def _privacy(self, report: RoundReport, center: str, content: RecordDict) -> PrivacyReport | None:
        """The reply's ledger entry into ``report.privacy`` (a malformed one: rejected, None)."""
        try:
            privacy = privacy_report(content)
        except MessageError as exc:
            report.rejected[center] = f"privacy record: {exc}"
            return None
        if privacy is not None:
            report.privacy[center] = json.loads(privacy.ledger)
        return privacy

    def _record_train_centers(self, node_ids: list[int]) -> None:
        if self._report is not None:
            self._report.train_centers = sorted({*self._report.train_centers, *map(self._center, node_ids)})

    # -- Strategy API ----------------------------------------------------------------------
    def start(self, grid: Grid, *args, **kwargs) -> Result:  # noqa: ANN002,ANN003
        """Flower's ``Strategy.start`` over a Grid that only lets train messages reach ``train_nodes``."""
        guarded = TrainGuardGrid(grid, self.train_nodes, self._record_train_centers, self._center)
        return super().start(guarded, *args, **kwargs)

    def summary(self) -> None:
        logger.info("SiteAwareStrategy(%s) phase=%s train=%s eval=%s", type(self.inner).__name__, self.phase,
                    [self._center(n) for n in self.train_nodes], [self._center(n) for n in self.eval_nodes])
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if self.declined:
            raise SitesDeclined(f"{sorted(map(self._center, self.declined))} declined round {self._round(server_round) - 1}")
        report = self._report = self._new_report(server_round)
        extra = self.round_config(report.round) if self.round_config is not None else {}
        for key, value in wire(TrainRequest, phase=self.phase, phase_round=report.round, global_round=report.global_round,
                               **extra).items():
            config[key] = value
        self._sent = {k: v.numpy() for k, v in arrays.items()}
        report.sent_bytes = arrays.count_bytes()
        messages = list(self.inner.configure_train(report.round, arrays, config, NodeSubsetGrid(grid, self.train_nodes)))
        report.sampled = sorted(self._center(m.metadata.dst_node_id) for m in messages)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        report = self._report or self._new_report(server_round)
        replies = list(replies)
        answered_nodes = {m.metadata.src_node_id for m in replies}
        for node in self.train_nodes:
            if self._center(node) in report.sampled and node not in answered_nodes:
                report.failed[self._center(node)] = "no reply within the round timeout"
        ok: list[tuple[int, str, RecordDict]] = []
        by_node: dict[int, Message] = {}
        for msg in replies:
            center = self._center(msg.metadata.src_node_id)
            if msg.has_error():
                report.failed[center] = f"error reply: {msg.error.reason}"
            elif (privacy := self._privacy(report, center, msg.content)) is not None and privacy.declined:
                report.declined[center] = self.declined[msg.metadata.src_node_id] = privacy.reason
                logger.warning("round %d: %s %s", report.global_round, center, privacy.reason)
            elif self.require_privacy and privacy is None:  # an update no site ledger accounts for
                report.rejected.setdefault(center, "no privacy record: local DP is on, the update is not accounted")
            elif center not in report.rejected:
                ok.append((msg.metadata.src_node_id, center, msg.content))
                by_node[msg.metadata.src_node_id] = msg
                report.reply_bytes[center] = sum(record.count_bytes() for record in msg.content.array_records.values())
        accepted, rejections, norms = validate_train_replies(
            ok, self._sent, weight_key=self.inner.weighted_by_key, max_examples=self.max_examples,
            outlier_factor=self.outlier_factor)
        for rejection in rejections:
            report.rejected[rejection.center] = rejection.reason
            logger.warning("round %d: rejected %s: %s", report.global_round, rejection.center, rejection.reason)
        for center, reason in report.failed.items():
            logger.warning("round %d: %s failed: %s", report.global_round, center, reason)
        accepted_msgs = sorted((by_node[n] for n in accepted), key=lambda m: self._center(m.metadata.src_node_id))
        report.update_norms = {self._center(n): norms[n] for n in accepted}
        for msg in accepted_msgs:
            metrics = next(iter(msg.content.metric_records.values()))
            report.train[self._center(msg.metadata.src_node_id)] = {k: float(v) for k, v in metrics.items() if not isinstance(v, list)}
        if len(accepted_msgs) < self.min_train_replies:
            self.failed_rounds += 1
            logger.warning("round %d: %d valid replies < k=%d: round void, global model kept (%d/%d void rounds in a row)",
                           report.global_round, len(accepted_msgs), self.min_train_replies, self.failed_rounds, self.max_failed_rounds)
            report.train_seconds = time.perf_counter() - report.started
            if self.failed_rounds > self.max_failed_rounds:
                raise TooManyFailedRounds(
                    f"{self.failed_rounds} consecutive rounds of phase {self.phase} had fewer than {self.min_train_replies} "
                    f"valid replies (last: failed {report.failed}, rejected {report.rejected}); stopping")
            return None, None
        self.failed_rounds = 0
        statistics = None
        if self.statistics_keys and isinstance(self.inner, (FedOpt, FedAvgM)):
            statistics = _average_keys([m.content for m in accepted_msgs], self.statistics_keys, self.inner.weighted_by_key)
        arrays, metrics = self.inner.aggregate_train(report.round, accepted_msgs)
        if arrays is not None and statistics is not None:
            for key, value in statistics.items():
                arrays[key] = value
        report.answered = [self._center(m.metadata.src_node_id) for m in accepted_msgs]
        report.aggregated = arrays is not None
        if metrics is not None:
            report.train_pooled = {k: float(v) for k, v in metrics.items() if not isinstance(v, list)}
        report.train_seconds = time.perf_counter() - report.started
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if not self.eval_nodes:
            return []
        report = self._report or self._new_report(server_round)
        self._evaluate_started = time.perf_counter()
        for key, value in wire(Evaluate, phase="evaluate", split="val", threshold=self.threshold,
                               global_round=report.global_round).items():
            config[key] = value
        messages = self.inner.configure_evaluate(report.round, arrays, config, NodeSubsetGrid(grid, self.eval_nodes))
        # a site that declined the round (local DP budget) is not asked to release a validation either
        return [m for m in messages if m.metadata.dst_node_id not in self.declined]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        report = self._report or self._new_report(server_round)
        started, self._evaluate_started = self._evaluate_started, None
        try:
            return self._aggregate_evaluate(report, replies)
        finally:
            if started is not None:
                report.evaluate_seconds = time.perf_counter() - started

    def _aggregate_evaluate(self, report: RoundReport, replies: Iterable[Message]) -> MetricRecord | None:
        accepted = []
        for msg in sorted(replies, key=lambda m: self._center(m.metadata.src_node_id)):
            center = self._center(msg.metadata.src_node_id)
            if msg.has_error():
                report.failed[f"{center} (evaluate)"] = msg.error.reason
                continue
            privacy = self._privacy(report, center, msg.content)
            if privacy is not None and privacy.declined:  # local DP: the release would exceed its budget
                report.declined[center] = privacy.reason
                logger.warning("round %d: %s (evaluation) %s", report.global_round, center, privacy.reason)
                continue
            problem = evaluate_problem(msg.content, self.histogram_bins)
            if problem is not None:
                report.rejected[f"{center} (evaluate)"] = problem
                logger.warning("round %d: rejected the evaluation of %s: %s", report.global_round, center, problem)
                continue
            reply = EvaluateReply.from_record(next(iter(msg.content.metric_records.values())))
            report.val[center] = center_metrics(reply, self.threshold)
            accepted.append(reply)
        if not accepted:
            return None
        neg, pos, confusion = pool_evaluations(accepted)
        report.val_pooled = binned_metrics(neg, pos, self.threshold, confusion)
        report.val_histograms = {"neg": neg.tolist(), "pos": pos.tolist()}
        return MetricRecord({k: float(v) for k, v in report.val_pooled.items() if v == v})  # NaN left out

    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """``Strategy.start``'s ``evaluate_fn``: closes the round and calls ``on_round_end``."""
        if server_round == 0 or self._report is None:
            return None
        report, self._report = self._report, None
        report.seconds = time.perf_counter() - report.started
        if self.on_round_end is not None:
            self.on_round_end(report, arrays)
        return None

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The inner strategy's data attributes (server optimizer moments, ...) and counters."""
        inner = {k: v for k, v in vars(self.inner).items() if not callable(v)}
        return {"inner": inner, "failed_rounds": self.failed_rounds}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state["inner"].items():  # sampling limits are configuration, set for the nodes at
            if key not in ("min_available_nodes", "min_train_nodes", "min_evaluate_nodes"):  # hand (local-DP declines)
                setattr(self.inner, key, value)
        self.failed_rounds = int(state["failed_rounds"])


def _average_keys(contents: list[RecordDict], keys: frozenset[str], weight_key: str) -> dict:
    """Plain weighted average of ``keys`` over replies (Flower's own FedAvg aggregation)."""
    filtered = []
    for content in contents:
        record = next(iter(content.array_records.values()))
        metrics = next(iter(content.metric_records.values()))
        subset = ArrayRecord({k: v for k, v in record.items() if k in keys})
        filtered.append(RecordDict({"arrays": subset, "metrics": MetricRecord({weight_key: metrics[weight_key]})}))
    if not filtered or not len(next(iter(filtered[0].array_records.values()))):
        return {}
    return dict(aggregate_arrayrecords(filtered, weight_key).items())
