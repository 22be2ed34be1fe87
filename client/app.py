"""The Flower ClientApp of a hospital (``clientapp = "client.app:app"``): Messages <-> ``client.task``.

The same app runs behind a hospital's SuperNode (node config ``data-dir``, ``center``,
``cache-dir``) and as a simulated center (``partition-id`` -> a center of the run config's
``cohort-dir``). What each message holds is :mod:`protocol.messages` (its table lists them).

Train and evaluate replies carry only model arrays and aggregate metrics, always with
``num-examples``; train replies also carry timings (``train-seconds``: the local optimisation
loop; ``client-seconds``: the whole handler, arrays in to reply built). An exception becomes an error reply (Flower's), which the server logs and
leaves out of the round.

Local DP (``local_dp`` in the request): train and evaluate replies add the record ``privacy``
(the site's ledger entry); a round that would exceed the site's budget gets a typed decline
(``privacy`` with ``declined``, no arrays), not an error.

Simulated transient failures (simulation only): the run config's ``faults`` is a JSON object
``{center: {"drop_p": p, "delay_s": s}}``; a train message is dropped (error reply) with
probability ``p``, drawn from (seed, center, round) so reruns repeat it, and answered ``s``
seconds late.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import task
from protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    GENERATOR_RECORD,
    METRICS_RECORD,
    PRIVACY_RECORD,
    SITE_RECORD,
    ClassifierTrain,
    Evaluate,
    GanTrain,
    InfoQuery,
    NormStateQuery,
    PrivacyReport,
    Request,
    Synthesize,
    parse_request,
)

app = ClientApp()


class SimulatedDropout(RuntimeError):
    """A configured transient failure of a simulated center."""


def _site(context: Context) -> task.Site:
    return task.site_from_config(context.node_config, context.run_config)


def _request(msg: Message) -> Request:
    """The typed request of ``msg`` (:func:`protocol.messages.parse_request`: an error names the bad field)."""
    return parse_request(msg.content[CONFIG_RECORD] if CONFIG_RECORD in msg.content.config_records else {})


def _inject_faults(site: task.Site, request: Request, context: Context) -> None:
    faults = json.loads(str(context.run_config.get("faults", "") or "{}"))
    spec = faults.get(site.center)
    if not spec:
        return
    global_round = getattr(request, "global_round", 0)
    draw = random.Random(f"{getattr(request, 'seed', None)}|{site.center}|{request.phase}|{global_round}").random()
    if draw < float(spec.get("drop_p", 0.0)):
        raise SimulatedDropout(f"{site.center} dropped round {global_round} (simulated, p={spec['drop_p']})")
    time.sleep(float(spec.get("delay_s", 0.0)))


def _reply(msg: Message, arrays: dict | None, metrics: dict, privacy: PrivacyReport | None = None) -> Message:
    content = RecordDict({METRICS_RECORD: MetricRecord(metrics)})
    if arrays is not None:
        content[ARRAYS_RECORD] = ArrayRecord(arrays)
    if privacy is not None:
        content[PRIVACY_RECORD] = ConfigRecord(privacy.to_record())
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Phases ``gan``, ``stage_a``, ``stage_b``: local training from the global arrays."""
    site, request = _site(context), _request(msg)
    _inject_faults(site, request, context)
    started = time.perf_counter()
    state = msg.content[ARRAYS_RECORD].to_torch_state_dict()
    if not isinstance(request, GanTrain | ClassifierTrain):
        raise ValueError(f"a train message with phase {request.phase!r}")
    round_of = task.train_gan_round if isinstance(request, GanTrain) else task.train_classifier_round
    try:
        arrays, reply = round_of(site, state, request)
    except task.privacy.BudgetExhausted as declined:  # over budget: a typed decline, no arrays
        return _reply(msg, None, {}, declined.report)
    metrics = replace(reply, client_seconds=time.perf_counter() - started).to_record()  # handler: arrays in, work, arrays out
    return _reply(msg, arrays, metrics, task.privacy_report(site, request))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Confusion matrix and score histograms of the requested split."""
    site, request = _site(context), _request(msg)
    if not isinstance(request, Evaluate):
        raise ValueError(f"an evaluate message with phase {request.phase!r}")
    try:
        reply = task.evaluate_split(site, msg.content[ARRAYS_RECORD].to_torch_state_dict(), request)
    except task.privacy.BudgetExhausted as declined:  # the release would exceed the budget: no metrics
        return _reply(msg, None, {}, declined.report)
    return _reply(msg, None, reply.to_record(), task.privacy_report(site, request))


@app.query()
def query(msg: Message, context: Context) -> Message:
    """``info`` (who am I, counts), ``synthesize`` (local synthetic US), ``norm-state`` (FedBN)."""
    site, request = _site(context), _request(msg)
    if isinstance(request, InfoQuery):
        info = task.site_info(site)
        reply = _reply(msg, None, info.metrics())
        reply.content[SITE_RECORD] = ConfigRecord(info.site_record())
        return reply
    if isinstance(request, Synthesize):
        return _reply(msg, None, task.synthesize(site, msg.content[GENERATOR_RECORD].to_torch_state_dict(), request).to_record())
    if isinstance(request, NormStateQuery):
        arrays, reply = task.local_norm_state(site, request)
        return _reply(msg, arrays, reply.to_record())
    raise ValueError(f"a query message with phase {request.phase!r}")
