"""The Flower ClientApp of a hospital (``clientapp = "client.app:app"``): Messages <-> ``client.task``.

The same app runs behind a hospital's SuperNode (node config ``data-dir``, ``center``,
``cache-dir``) and as a simulated center (``partition-id`` -> a center of the run config's
``cohort-dir``). Message protocol (config record ``"config"``):

| type | ``phase`` | request | reply |
|---|---|---|---|
| query | ``info`` | - | ConfigRecord ``site`` {center}; metrics: counts per split, ``max-train-examples-<phase>`` |
| query | ``synthesize`` | ArrayRecord ``generator`` (MRI -> US part) | metrics: synthetic images |
| query | ``norm-state`` | - | ArrayRecord of the site's FedBN norm layers + num-examples |
| train | ``gan`` / ``stage_a`` / ``stage_b`` | ArrayRecord ``arrays`` | ArrayRecord ``arrays``, MetricRecord ``metrics`` |
| evaluate | ``evaluate`` | ArrayRecord ``arrays``, ``split``, ``threshold`` | MetricRecord: confusion + histograms |

Train and evaluate replies carry only model arrays and aggregate metrics, always with
``num-examples``; train replies also carry timings (``train-seconds``: the local optimisation
loop; ``client-seconds``: the whole handler, arrays in to reply built). An exception becomes an error reply (Flower's), which the server logs and
leaves out of the round.

Simulated transient failures (simulation only): the run config's ``faults`` is a JSON object
``{center: {"drop_p": p, "delay_s": s}}``; a train message is dropped (error reply) with
probability ``p``, drawn from (seed, center, round) so reruns repeat it, and answered ``s``
seconds late.
"""

from __future__ import annotations

import json
import random
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client import task

app = ClientApp()


class SimulatedDropout(RuntimeError):
    """A configured transient failure of a simulated center."""


def _site(context: Context) -> task.Site:
    return task.site_from_config(context.node_config, context.run_config)


def _params(msg: Message) -> dict:
    return dict(msg.content["config"]) if "config" in msg.content.config_records else {}


def _inject_faults(site: task.Site, params: dict, context: Context) -> None:
    faults = json.loads(str(context.run_config.get("faults", "") or "{}"))
    spec = faults.get(site.center)
    if not spec:
        return
    draw = random.Random(f"{params.get('seed')}|{site.center}|{params.get('phase')}|{params.get('global-round')}").random()
    if draw < float(spec.get("drop_p", 0.0)):
        raise SimulatedDropout(f"{site.center} dropped round {params.get('global-round')} (simulated, p={spec['drop_p']})")
    time.sleep(float(spec.get("delay_s", 0.0)))


def _reply(msg: Message, arrays: dict | None, metrics: dict) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = ArrayRecord(arrays)
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Phases ``gan``, ``stage_a``, ``stage_b``: local training from the global arrays."""
    site, params = _site(context), _params(msg)
    _inject_faults(site, params, context)
    started = time.perf_counter()
    state = msg.content["arrays"].to_torch_state_dict()
    if params["phase"] == "gan":
        arrays, metrics = task.train_gan_round(site, state, params)
    elif params["phase"] in ("stage_a", "stage_b"):
        arrays, metrics = task.train_classifier_round(site, state, params)
    else:
        raise ValueError(f"unknown train phase {params['phase']!r}")
    reply = _reply(msg, arrays, metrics)
    reply.content["metrics"]["client-seconds"] = time.perf_counter() - started  # handler: arrays in, work, arrays out
    return reply


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Confusion matrix and score histograms of the requested split."""
    site, params = _site(context), _params(msg)
    metrics = task.evaluate_split(site, msg.content["arrays"].to_torch_state_dict(), params)
    return _reply(msg, None, metrics)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """``info`` (who am I, counts), ``synthesize`` (local synthetic US), ``norm-state`` (FedBN)."""
    site, params = _site(context), _params(msg)
    phase = params.get("phase", "info")
    if phase == "info":
        reply = _reply(msg, None, {k: float(v) for k, v in task.site_info(site).items()})
        reply.content["site"] = ConfigRecord({"center": site.center})
        return reply
    if phase == "synthesize":
        metrics = task.synthesize(site, msg.content["generator"].to_torch_state_dict(), params)
        return _reply(msg, None, metrics)
    if phase == "norm-state":
        arrays, n = task.local_norm_state(site, params)
        return _reply(msg, arrays, {"num-examples": n, "unit-weight": 1.0})
    raise ValueError(f"unknown query phase {phase!r}")
