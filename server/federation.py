"""The coordinator's run: phases, persistence, resume, final evaluation and export.

The parts, each in its own module: :mod:`server.sites` (discovery), :mod:`server.phases` (the
phase runner, persistence and resume), :mod:`server.synthesis`, :mod:`server.final` (final
evaluation and export), sharing a :class:`server.context.RunContext`.

Order of a run (each phase is one ``Strategy.start`` of Flower's strategy, wrapped by
:class:`strategies.wrapper.SiteAwareStrategy`; no round loop of our own):

0. **Sites.** A ``query``/``info`` message to every connected node answers which center it is
   (and its counts); centers named in ``held_out_centers`` (required, :func:`server.config.held_out_centers`)
   are held out: they receive only ``query`` and ``evaluate`` messages, never ``train``. A
   held-out name that matches no connected center stops the run before any training, since
   that center would otherwise train under its real name.
1. **SG-CycleGAN** (``rounds.gan`` rounds on the training sites that have MRI), or a generator
   artifact (``gan_artifact``: file and SHA-256 recorded in versions.json); then one
   ``synthesize`` query per training site: each turns its own MRI into synthetic US locally.
2. **Stage A** (real + synthetic US) and 3. **stage B** (real US, class-weighted), teacher +
   LSNet distillation; after every round the training sites validate (histograms), and the
   paper's checkpoint rule (:class:`~ecs_models.training.metrics.CheckpointSelector`) on the
   pooled validation histograms, at each round's own operating point, selects the round whose
   model is kept.
4. **Final evaluation** of the selected model: every training site on its internal test split,
   every held-out center on all its images; the operating point is chosen on the pooled
   validation histograms of the selected round (sensitivity >= 0.95 first).
5. **Export**: ``model/lsnet.onnx`` + ``model/operating_point.json`` as centralized runs do.

After every round the run directory gets the checkpoint and a ``rounds.jsonl`` line
(:mod:`server.store`), and one progress line per round plus one line per center is printed.
``resume=true`` continues from the last completed round of the run in ``run_dir``: the phase's
Flower strategy restarts with the saved global arrays, server-optimizer state, round offset and
RNG states, so the remaining rounds are those of an uninterrupted run.
"""


from __future__ import annotations

import time
from collections.abc import Callable

from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from omegaconf import DictConfig, OmegaConf

from ecs_models.training.runtime import seed_everything
from server.context import RunContext, set_rng_state
from server.final import export, final_evaluation, print_final
from server.phases import fresh_state, plan, run_phase
from server.sites import discover_sites
from server.synthesis import synthesize

__all__ = ["run_federation"]

Log = Callable[[str], None]


def _resume_or_start(ctx: RunContext) -> None:
    """A fresh state, or the last checkpoint of ``run_dir`` with ``resume=true``."""
    cfg = ctx.cfg
    ctx.store.start(cfg, resume=bool(cfg.resume))
    ctx.state = fresh_state(ctx)
    checkpoint = ctx.store.load_checkpoint() if cfg.resume else None
    if checkpoint is not None:
        ctx.state = checkpoint
        ctx.store.truncate_rounds(checkpoint["global_round"])
        ctx.log(f"[ecs] resuming {cfg.run_dir} after {checkpoint['phase']} round {checkpoint['phase_round']} "
                f"(global round {checkpoint['global_round']})")
    elif cfg.resume:
        ctx.log(f"[ecs] resume=true but no checkpoint in {cfg.run_dir}: starting from round 1")


def run_federation(grid: Grid, cfg: DictConfig, log: Log = print) -> dict:
    """Run (or resume) the federated experiment ``cfg`` over ``grid``; returns metrics.json's content."""
    start = time.perf_counter()
    ctx = RunContext(grid, cfg, log)
    _resume_or_start(ctx)
    expected = int(cfg.expected_sites or cfg.participation.min_available_nodes or 1)
    ctx.sites = s = discover_sites(grid, expected=expected, held_out=ctx.held_out, timeout=ctx.timeout, log=log)
    log(f"[ecs] run {cfg.run_dir}: strategy {ctx.spec.name}, training centers "
        f"{[s.centers[n] for n in s.train]}, held-out {[s.centers[n] for n in s.held_out]}")
    ctx.privacy.start(len(s.train), ctx.state.get("privacy"))
    if ctx.state["rng"] is not None:
        set_rng_state(ctx.state["rng"])
    else:
        seed_everything(int(cfg.seed))
    _train(ctx)
    ctx.store.save_arrays("final_arrays.npz", ctx.state["model_arrays"])
    final = final_evaluation(ctx)
    exported = export(ctx, final.pop("full_arrays"), final["threshold"], final.get("val"), final["target_sensitivity"])
    print_final(ctx, final)
    metrics = {"experiment": str(cfg.experiment_name), "strategy": ctx.spec.name, "seed": int(cfg.seed),
               "training_centers": [s.centers[n] for n in s.train], "held_out_centers": [s.centers[n] for n in s.held_out],
               "rounds": OmegaConf.to_container(cfg.rounds), "seconds": time.perf_counter() - start, **final, **exported}
    metrics["privacy"] = ctx.privacy.summary()
    ctx.privacy.write(cfg.run_dir)
    ctx.store.write_json("metrics.json", metrics)
    return metrics


def _train(ctx: RunContext) -> None:
    """The phases not completed yet; the central DP budget ends training cleanly, ledger saved."""
    if ctx.privacy.stopped:
        ctx.log(f"[ecs] privacy budget already exhausted ({ctx.privacy.stopped}): no more training")
        return
    try:
        for phase, rounds in plan(ctx):
            if phase in ctx.state["completed"]:
                continue
            if phase == "stage_a":
                synthesize(ctx)
            if rounds > 0:
                run_phase(ctx, phase, rounds)
            else:
                ctx.state["completed"].append(phase)
    except PrivacyBudgetExhausted as exc:
        ctx.privacy.budget_exhausted(str(exc))
        ctx.state["privacy"] = ctx.privacy.state_dict()
        ctx.store.save_checkpoint(ctx.state)
        ctx.privacy.write(ctx.cfg.run_dir)
        ctx.log(f"[ecs] privacy budget: {exc}; training ends here, the selected round so far is evaluated and exported")
