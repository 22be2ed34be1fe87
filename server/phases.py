"""The phase runner: a run's phases (GAN, stage A, stage B) as Flower strategy runs, each round
persisted (checkpoint + ``rounds.jsonl``) so that a resumed run continues where it stopped.

Each phase is one ``Strategy.start`` of Flower's strategy wrapped by
:class:`strategies.wrapper.SiteAwareStrategy` (no round loop of our own). After every round the
paper's checkpoint rule (:class:`~ecs_models.training.metrics.CheckpointSelector`) on the pooled
validation histograms, at each round's own operating point, decides whether the round's model
is the one kept. A resumed phase restarts the strategy with the saved global arrays,
server-optimizer state, round offset and RNG states.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord

from ecs_models.build import build_classifier, build_gan
from ecs_models.training.binned_metrics import binned_metrics, binned_threshold
from ecs_models.training.metrics import CheckpointSelector
from protocol.messages import GAN_LOSS, NUM_EXAMPLES, TRAIN_LOSS, Evaluate
from server import local_dp
from server.config import gan_rounds
from server.context import RunContext, fmt, rng_state, to_numpy, to_record, torch_state
from strategies.central_dp import num_sampled
from strategies.factory import build_strategy
from strategies.fedbn import norm_keys
from strategies.wrapper import RoundReport, SiteAwareStrategy, SitesDeclined

__all__ = ["SimulatedServerCrash", "plan", "fresh_state", "run_phase"]


class SimulatedServerCrash(RuntimeError):
    """``debug.stop_after_round``: the server stops right after persisting that round."""


def plan(ctx: RunContext) -> list[tuple[str, int]]:
    """(phase, rounds) in order; no GAN rounds without synthesis or with a generator artifact."""
    cfg = ctx.cfg
    return [("gan", gan_rounds(cfg)), ("stage_a", int(cfg.rounds.stage_a)), ("stage_b", int(cfg.rounds.stage_b))]


def _global_base(ctx: RunContext, phase: str) -> int:
    """Rounds of the phases before ``phase`` (global round = base + phase round)."""
    base = 0
    for name, rounds in plan(ctx):
        if name == phase:
            return base
        base += rounds
    raise KeyError(phase)


def fresh_state(ctx: RunContext) -> dict:
    """The checkpoint state of a run before its first round (initial arrays from the seed)."""
    torch.manual_seed(int(ctx.cfg.seed))
    classifier = build_classifier(ctx.models)
    arrays = torch_state(classifier)
    if ctx.spec.fedbn:
        keys = norm_keys(classifier)
        arrays = {k: v for k, v in arrays.items() if k not in keys}
    gan_arrays = None
    if ctx.cfg.synthesis and not ctx.cfg.gan_artifact:
        torch.manual_seed(int(ctx.cfg.seed))
        gan_arrays = torch_state(build_gan(ctx.models.gan))
    return {"version": 1, "phase": None, "phase_round": 0, "global_round": 0, "completed": [],
            "gan_arrays": gan_arrays, "model_arrays": arrays, "strategy": None,
            "selector": CheckpointSelector().state_dict(), "best": None, "rng": None, "privacy": None}


def _round_config(ctx: RunContext, phase: str) -> Callable[[int], dict]:
    """The stage's peak learning rate. Each site positions the phase's warm-up + cosine
    schedule at its round (``phase_round`` of ``phase_rounds``), so the global model follows the
    schedule of a centralized run; a fresh per-round schedule (warm-up and decay to 0 inside
    every round, measured in docs/federated.md) learned markedly slower."""
    if phase == "gan":
        return lambda _r: {}
    base = float(ctx.cfg.training[phase].lr)
    return lambda _r: {"lr": base}


def _on_round_end(ctx: RunContext, strategy: SiteAwareStrategy, report: RoundReport, arrays: ArrayRecord) -> None:
    """Keep the round's arrays, update the checkpoint rule, persist the round, print it."""
    local_dp.record_round(ctx.privacy.ledger, report, ctx.log)
    state = ctx.state
    key = "gan_arrays" if report.phase == "gan" else "model_arrays"
    state[key] = to_numpy(arrays)
    state.update(phase=report.phase, phase_round=report.round, global_round=report.global_round,
                 strategy=strategy.state_dict())
    selected = False
    if report.phase != "gan" and report.val_pooled:
        selector = CheckpointSelector()
        selector.load_state_dict(state["selector"])
        neg, pos = (np.asarray(report.val_histograms[k]) for k in ("neg", "pos"))
        p = binned_metrics(neg, pos, binned_threshold(neg, pos))  # at this round's operating point
        selected = selector.update(report.global_round, p["sensitivity"], p["specificity"], p["auc"])
        state["selector"] = selector.state_dict()
        if selected:
            state["best"] = {"arrays": copy.deepcopy(state[key]), "phase": report.phase, "round": report.round,
                             "global_round": report.global_round, "val_histograms": report.val_histograms,
                             "val": report.val_pooled}
    state["rng"] = rng_state()
    state["privacy"] = ctx.privacy.state_dict()  # the ledger and the accountant, with the round they account
    ctx.store.save_checkpoint(state)
    ctx.store.append_round({**report.to_json(), "selected": selected})
    _print_round(ctx, report, selected)
    stop = ctx.cfg.debug.stop_after_round
    if stop is not None and report.global_round >= int(stop):
        raise SimulatedServerCrash(f"debug.stop_after_round={stop}: stopping after round {report.global_round}")


def _print_round(ctx: RunContext, report: RoundReport, selected: bool) -> None:
    """One progress line for the round, then one line per center."""
    parts = [f"[ecs] {report.phase:<7} {report.round:>2}/{int(ctx.cfg.rounds[report.phase]):<2} (round {report.global_round:>2})",
             f"sites {len(report.answered)}/{len(report.sampled)}", f"{report.seconds:6.1f}s"]
    loss = report.train_pooled.get(TRAIN_LOSS, report.train_pooled.get(GAN_LOSS))
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    if report.val_pooled:
        p = report.val_pooled
        parts.append(f"val AUC {fmt(p['auc'])} sens {fmt(p['sensitivity'])} spec {fmt(p['specificity'])}")
    if selected:
        parts.append("(kept)")
    if report.failed:
        parts.append(f"failed: {', '.join(sorted(report.failed))}")
    if report.rejected:
        parts.append(f"rejected: {', '.join(sorted(report.rejected))}")
    if report.declined:
        parts.append(f"declined (privacy budget): {', '.join(sorted(report.declined))}")
    ctx.log(" | ".join(parts))
    for center in sorted(set(report.sampled) | set(report.val)):
        train = report.train.get(center, {})
        val = report.val.get(center, {})
        status = ("ok" if center in report.answered else "rejected" if center in report.rejected
                  else "failed" if center in report.failed else "-")
        t_loss = train.get(TRAIN_LOSS, train.get(GAN_LOSS))
        ctx.log(f"[ecs]     {center:<12} {status:<8} n={int(train.get(NUM_EXAMPLES, 0)):>5} loss {fmt(t_loss)}"
                f" | val n={int(val.get('n', 0)):>4} AUC {fmt(val.get('auc'))} sens {fmt(val.get('sensitivity'))}"
                f" spec {fmt(val.get('specificity'))}")


def _strategy(ctx: RunContext, phase: str, train_nodes: list[int], done: int) -> SiteAwareStrategy:
    """The configured Flower strategy for ``phase``, wrapped, resumed after ``done`` rounds."""
    part, sites = ctx.cfg.participation, ctx.sites
    available = part.min_available_nodes
    inner = build_strategy(ctx.spec, fraction_train=float(part.fraction_train),
                           min_train_nodes=min(int(part.min_train_nodes), len(train_nodes)),
                           min_available_nodes=min(int(available) if available else len(train_nodes), len(train_nodes)))
    sampled = num_sampled(len(train_nodes), float(part.fraction_train), int(part.min_train_nodes))
    inner = ctx.privacy.wrap(inner, phase, sampled)  # privacy=central: Flower's DP wrapper with the run's accountant
    statistics = [k for k in ctx.state["model_arrays"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    strategy = SiteAwareStrategy(
        inner, phase=phase, centers=sites.centers, train_nodes=train_nodes,
        eval_nodes=[] if phase == "gan" else train_nodes, round_offset=done, global_round_base=_global_base(ctx, phase),
        min_train_replies=ctx.privacy.min_replies(sampled, min(int(part.min_train_replies), len(train_nodes))),
        max_failed_rounds=int(part.max_failed_rounds), outlier_factor=float(part.outlier_factor),
        max_examples=sites.example_limits(phase), histogram_bins=ctx.histogram_bins,
        statistics_keys=statistics if phase != "gan" else (), round_config=_round_config(ctx, phase),
        require_privacy=local_dp.local_dp(ctx.cfg) is not None)
    strategy.on_round_end = lambda report, arrays: _on_round_end(ctx, strategy, report, arrays)
    if ctx.state["phase"] == phase and ctx.state["strategy"] is not None:
        strategy.load_state_dict(ctx.state["strategy"])
    return strategy


def run_phase(ctx: RunContext, phase: str, rounds: int) -> None:
    """Run (or finish, after a resume) ``rounds`` rounds of ``phase`` and mark it completed."""
    sites = ctx.sites
    assert sites is not None
    done = ctx.state["phase_round"] if ctx.state["phase"] == phase else 0
    train_nodes = sites.with_mri() if phase == "gan" else sites.train
    if not train_nodes:
        ctx.log(f"[ecs] {phase}: no site can train this phase; skipped")
        return
    k = min(int(ctx.cfg.participation.min_train_replies), len(train_nodes))
    while done < rounds and not ctx.privacy.stopped:
        nodes = local_dp.eligible(ctx.privacy.ledger, sites.centers, train_nodes)
        if len(nodes) < k:  # local DP: too few sites have budget left; the run ends with the model it has
            ctx.privacy.budget_exhausted(f"{phase} round {done + 1}: {len(nodes)} site(s) within their local DP budget, "
                                         f"k = {k} needed (exhausted: {local_dp.exhausted(ctx.privacy.ledger)})")
            ctx.log(f"[ecs] {ctx.privacy.stopped}; no more training")
            break
        strategy = _strategy(ctx, phase, nodes, done)
        key = "gan_arrays" if phase == "gan" else "model_arrays"
        evaluate = Evaluate(**ctx.run_fields(), split="val")
        try:
            strategy.start(ctx.grid, to_record(ctx.state[key]), num_rounds=rounds - done, timeout=ctx.timeout,
                           train_config=ConfigRecord(ctx.train_request(phase).to_record()),
                           evaluate_config=ConfigRecord(evaluate.to_record()), evaluate_fn=strategy.evaluate_fn)
        except SitesDeclined as exc:  # the phase goes on (resumed from its last round) without them
            ctx.log(f"[ecs] {exc} (privacy budget); {phase} continues without them")
            done = ctx.state["phase_round"] if ctx.state["phase"] == phase else 0
            continue
        break
    ctx.state["completed"].append(phase)
    ctx.state.update(phase=phase, phase_round=rounds, strategy=None)
    ctx.store.save_checkpoint(ctx.state)
