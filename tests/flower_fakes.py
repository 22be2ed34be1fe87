"""Fake Flower messages and grids for server and strategy tests (no SuperLink).

A test module that builds Messages imports the autouse fixture ``task_identity`` with the
helpers it uses (``from flower_fakes import task_identity  # noqa: F401``), or gets it from
its folder's conftest.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.app.message import make_message
from flwr.app.metadata import Metadata
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from protocol.messages import (
    ARRAYS_RECORD,
    METRICS_RECORD,
    SITE_RECORD,
    TRAIN_LOSS,
    EvaluateReply,
    SiteInfo,
    TrainReply,
)


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower stamps new Messages with the process's run id; give tests one."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def _metadata(src: int, kind: str = "train") -> Metadata:
    return Metadata(run_id=1, message_id=f"m{src}-{time.perf_counter_ns()}", src_node_id=src, dst_node_id=0,
                    reply_to_message_id="x", group_id="", created_at=time.time(), ttl=3600.0, message_type=kind)


def train_reply(src: int, arrays: dict[str, np.ndarray], n: float = 10.0, **metrics: float) -> Message:
    """A train reply; ``metrics`` (wire keys) are added to or replace the reply's metrics."""
    reply = TrainReply(num_examples=n, losses={TRAIN_LOSS: 1.0}).to_record()
    content = RecordDict({ARRAYS_RECORD: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
                          METRICS_RECORD: MetricRecord({**reply, **metrics})})
    return make_message(_metadata(src), content=content)


def error_reply(src: int, reason: str = "site raised") -> Message:
    return make_message(_metadata(src), error=Error(code=0, reason=reason))


def eval_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, bins: int = 1000) -> dict:
    """What ``client.task.evaluate_split`` reports for these labels and scores."""
    from ecs_models.training.binned_metrics import confusion_at, score_histograms

    neg, pos = score_histograms(labels, scores, bins)
    return EvaluateReply(**confusion_at(labels, scores, threshold), hist_neg=neg.tolist(), hist_pos=pos.tolist(),
                         num_examples=float(len(labels))).to_record()


def eval_reply(src: int, labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, bins: int = 1000,
               **changed: object) -> Message:
    """An evaluation reply; ``changed`` replaces metrics (``hist_neg=`` for ``hist-neg``)."""
    metrics = eval_metrics(labels, scores, threshold, bins)
    metrics.update({key.replace("_", "-"): value for key, value in changed.items()})
    return make_message(_metadata(src, "evaluate"), content=RecordDict({METRICS_RECORD: MetricRecord(metrics)}))


def info_reply(src: int, center: str, **counts: int) -> Message:
    """A site's answer to the ``info`` query: its center name and counts (``SiteInfo`` fields, 10 unless given)."""
    names = ("n_us_train", "n_us_val", "n_us_test", "n_us_all", "n_mri_train", "positives_train", "max_train_examples_gan",
             "max_train_examples_stage_a", "max_train_examples_stage_b")
    info = SiteInfo(center=center, **{**dict.fromkeys(names, 10), **counts})
    content = RecordDict({METRICS_RECORD: MetricRecord(info.metrics()), SITE_RECORD: ConfigRecord(info.site_record())})
    return make_message(_metadata(src, "query"), content=content)


class FakeGrid(Grid):
    """Lists node ids; send_and_receive answers with ``responder(message)`` (None = no reply)."""

    def __init__(self, node_ids: list[int], responder=None) -> None:  # noqa: ANN001
        self.node_ids = list(node_ids)
        self.responder = responder
        self.sent: list[Message] = []

    def set_run(self, run) -> None:  # noqa: ANN001
        pass

    @property
    def run(self):  # noqa: ANN201
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001,ANN201
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type)

    def get_node_ids(self):  # noqa: ANN201
        return list(self.node_ids)

    def push_messages(self, messages):  # noqa: ANN001,ANN201
        return []

    def pull_messages(self, message_ids):  # noqa: ANN001,ANN201
        return []

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001,ANN201
        messages = list(messages)
        self.sent.extend(messages)
        replies = [self.responder(m) for m in messages] if self.responder else []
        return [r for r in replies if r is not None]
