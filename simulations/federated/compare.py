"""``ecs-simulate experiment=compare``: the FLamby protocol on one cohort, over seeds, one table.

For every seed in ``seeds`` and every arm in ``compare.arms`` (seed-major, so an interrupted
comparison still holds whole seeds), on the cohort and held-out centers of the federated
experiment ``compare.experiment`` (default ``quick``):

| arm | what runs | how |
|---|---|---|
| ``pooled`` | centralized, all training centers pooled | :func:`simulations.centralized.run.run_training` |
| ``local`` | centralized, each training center alone (one arm ``local_<center>`` per center) | same, ``mode=local`` |
| ``fedavg``, ``fedprox``, ``fedbn``, ``fedadam`` (any ``strategy``) | one federated run | :func:`simulations.federated.simulate.simulate`: its own SuperLink + Ray, stopped by PID |
| ``{name: ..., arm: <one of the above>, overrides: [...]}`` | that arm under its own name, with config overrides of its own | e.g. ``experiment=privacy_sweep``: fedavg at several privacy budgets |

**Same model, same recipe, comparable budget.** Every arm is composed from the same experiment
config (cohort, models, ``training`` recipe, GAN, seed). A centralized arm gets the federated
arms' budget in local epochs: stage A ``rounds.stage_a x local.epochs`` epochs, stage B
``rounds.stage_b x local.epochs``, the same ``local.max_steps_per_epoch`` cap per epoch, and
``rounds.gan x local.gan_steps`` SG-CycleGAN steps; its peak learning rates are the stage's
``training.<stage>.lr``, which the federated server cosine-decays over rounds. So every arm makes
the same number of passes over its own training data (a pooled epoch has more steps than one
site's epoch; a federated round is one epoch at each site, in parallel).

**Held-out metrics.** Every arm is evaluated on all images of the cohort's held-out centers, at
its own operating point chosen on its own validation data. Federated figures come from
1,000-bin score histograms (AUC within 0.002 of the exact one); centralized ones are exact. The
internal-test AUC pools the test splits of all training centers (a local arm's model is
evaluated there too, not only on its own center).

**Output** (``<run_dir>``, default ``runs/federated/compare/manual``): ``<arm>/seed<s>/`` (the
arm's own run folder), ``results.json`` (every arm x seed, updated after each), ``table.csv`` /
``table.md`` (:mod:`simulations.federated.compare_report`) and ``compare.png``.

**Failures and resume.** A failed arm x seed becomes an error row (its traceback in
``<arm>/seed<s>/error.txt``) and the others carry on; the exit code is 1 then. Rerunning the
same command reuses every arm x seed whose metrics already exist, resumes an interrupted
federated run from its last completed round, and retries the rest.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from client.cohort import center_roles
from simulations.centralized.run import ensure_cohort
from simulations.federated.compare_report import write_report
from strategies.factory import STRATEGIES

__all__ = ["Arm", "expand_arms", "shared_overrides", "compose_experiment", "arm_config", "centralized_config", "last_error", "run_compare"]

Log = Callable[[str], None]
# overrides that belong to the comparison itself, not to each arm's experiment
_COMPARE_KEYS = ("experiment", "seeds", "seed", "run_dir", "run_id", "resume", "strategy", "compare")


@dataclass(frozen=True)
class Arm:
    """One row of the table: a centralized baseline or a federated strategy."""

    name: str
    kind: str  # centralized | federated
    mode: str | None = None  # centralized: pooled | local
    center: str | None = None  # local: the center
    strategy: str | None = None  # federated: configs/strategy/<name>.yaml
    overrides: tuple[str, ...] = ()  # config overrides of this arm alone (a variant arm)

    def describe(self) -> str:
        extra = f" with {' '.join(self.overrides)}" if self.overrides else ""
        if self.kind == "federated":
            return f"federated, strategy {self.strategy}{extra}"
        return ("centralized, training centers pooled" if self.mode == "pooled" else f"centralized, {self.center} alone") + extra


def _variant(spec: Mapping, training_centers: list[str]) -> Arm:
    """``{name, arm, overrides}``: the arm ``arm`` (not ``local``, which is several) renamed, with overrides."""
    unknown = sorted(set(spec) - {"name", "arm", "overrides"})
    if unknown or "name" not in spec or "arm" not in spec:
        raise ValueError(f"compare.arms: a variant arm needs name and arm (and optional overrides), got {dict(spec)}")
    base = expand_arms([str(spec["arm"])], training_centers)
    if len(base) != 1:
        raise ValueError(f"compare.arms: variant {spec['name']!r} must build on one arm, not {spec['arm']!r}")
    return replace(base[0], name=str(spec["name"]), overrides=tuple(str(o) for o in spec.get("overrides") or ()))


def expand_arms(names: list, training_centers: list[str]) -> list[Arm]:
    """``pooled`` | ``local`` (every training center) | ``local_<center>`` | a strategy name |
    ``{name, arm, overrides}`` (that arm with its own overrides, under its own name)."""
    arms: list[Arm] = []
    for name in names:
        if isinstance(name, Mapping):
            arms.append(_variant(name, training_centers))
            continue
        name = str(name)
        if name == "pooled":
            arms.append(Arm("pooled", "centralized", mode="pooled"))
        elif name == "local":
            arms += [Arm(f"local_{c}", "centralized", mode="local", center=c) for c in training_centers]
        elif name.startswith("local_"):
            arms.append(Arm(name, "centralized", mode="local", center=name.removeprefix("local_")))
        elif name in STRATEGIES:
            arms.append(Arm(name, "federated", strategy=name))
        else:
            raise ValueError(f"compare.arms: unknown arm {name!r}; use pooled, local, local_<center> or one of {STRATEGIES}")
    seen = [a.name for a in arms]
    if len(seen) != len(set(seen)):
        raise ValueError(f"compare.arms lists an arm twice: {seen}")
    return arms


def shared_overrides(cli_overrides: list[str]) -> list[str]:
    """The command line's overrides that apply to every arm (not the comparison's own keys)."""
    kept = []
    for override in cli_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] not in _COMPARE_KEYS:
            kept.append(override)
    return kept


def compose_experiment(experiment: str, overrides: list[str]) -> DictConfig:
    """``configs/federated/simulate.yaml`` with ``experiment=<experiment>`` and ``overrides``.

    Inside the running ``ecs-simulate`` Hydra app this uses the app's own config search path;
    elsewhere (tests, scripts) it initializes Hydra on ``configs.federated`` for the call.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"experiment={experiment}", *overrides]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="simulate", overrides=overrides)
    with initialize_config_module(config_module="configs.federated", version_base="1.3"):
        return compose(config_name="simulate", overrides=overrides)


def centralized_config(fed_cfg: DictConfig, arm: Arm) -> DictConfig:
    """The ``ecs-train`` config of a centralized arm: the experiment's recipe, the federated budget."""
    cfg = OmegaConf.to_container(fed_cfg, resolve=True)
    rounds, local = cfg["rounds"], cfg["local"]
    epochs = int(local["epochs"])
    cfg["training"]["stage_a"]["epochs"] = int(rounds["stage_a"]) * epochs
    cfg["training"]["stage_b"]["epochs"] = int(rounds["stage_b"]) * epochs
    cfg["training"]["max_steps_per_epoch"] = local["max_steps_per_epoch"]
    cfg["gan"]["steps"] = int(rounds["gan"]) * int(local["gan_steps"])
    cfg.update(mode=arm.mode, center=arm.center)
    return OmegaConf.create(cfg)


def arm_config(experiment: str, shared: list[str], arm: Arm, seed: int, run_dir: Path, resume: bool = False) -> tuple[DictConfig, list[str]]:
    """The config one arm x seed runs (``experiment`` + the shared, the arm's own and the run's overrides)."""
    overrides = [*shared, *arm.overrides, f"seed={seed}", f"run_dir={run_dir}"]
    if arm.kind == "federated":
        overrides.append(f"strategy={arm.strategy}")
        if resume:
            overrides.append("resume=true")
    return compose_experiment(experiment, overrides), overrides


def _complete(arm: Arm, run_dir: Path) -> bool:
    if arm.kind == "federated":
        return (run_dir / "metrics.json").is_file()  # the ServerApp writes it last
    return (run_dir / "metrics.json").is_file() and (run_dir / "model" / "operating_point.json").is_file()


def last_error(flower_log: Path) -> str:
    """The last line of a Flower log that names an exception (empty if none)."""
    if not flower_log.is_file():
        return ""
    pattern = re.compile(r"\b\w*(Error|Exception|Crash|FailedRounds)\b:?")
    for line in reversed(flower_log.read_text(errors="replace").splitlines()):
        if pattern.search(line) and "Traceback" not in line:
            return line.strip()[:300]
    return ""


def _run_federated(experiment: str, shared: list[str], arm: Arm, seed: int, run_dir: Path, log: Log) -> None:
    from simulations.federated.simulate import simulate

    resume = (run_dir / "checkpoint.pt").is_file() and (run_dir / "rounds.jsonl").is_file()
    cfg, overrides = arm_config(experiment, shared, arm, seed, run_dir, resume=resume)
    if resume:
        log(f"[ecs-compare]   resuming the interrupted run in {run_dir}")
    code = simulate(cfg, overrides, log, experiment=experiment)
    if code != 0:
        detail = last_error(run_dir / "flower.log")
        raise RuntimeError(f"the federated run did not complete (exit code {code}){': ' + detail if detail else ''}; "
                           f"see {run_dir / 'flower.log'}")


def _run_centralized(cfg: DictConfig, arm: Arm, run_dir: Path, log: Log) -> None:
    from simulations.centralized.run import run_training

    run_training(centralized_config(cfg, arm), run_dir, lambda message: log(f"  {message}"))


def _internal_test_all_centers(cfg: DictConfig, run_dir: Path, centers: list[str], cohort_dir: Path) -> dict:
    """A local arm's selected model on the test splits of every training center (cached in the run dir)."""
    cached = run_dir / "internal_test_all_centers.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    import torch

    from client.data.preprocess import PreprocessConfig
    from client.data.site_datasets import site_us_dataset
    from ecs_models.build import build_classifier
    from ecs_models.training.data import TransformedImages, combine, make_loader
    from ecs_models.training.distill import predict_scores
    from ecs_models.training.metrics import screening_metrics
    from ecs_models.training.runtime import resolve_device
    from server.context import model_spec

    threshold = float(json.loads((run_dir / "metrics.json").read_text())["threshold"])
    model = build_classifier(model_spec(cfg))
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"])
    tr = cfg.training
    preprocess = PreprocessConfig(output_size=int(tr.preprocess_size))
    data = combine([site_us_dataset(cohort_dir / c, ["test"], preprocess, cfg.paths.cache) for c in centers])
    loader = make_loader(TransformedImages(data, int(tr.img_size), train=False), int(tr.eval_batch_size), shuffle=False)
    labels, scores = predict_scores(model.student, loader, resolve_device(str(cfg.device)))
    result = {"centers": centers, **screening_metrics(labels, scores, threshold)}
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _nan(value: object) -> float:
    return float("nan") if value is None else float(value)


def _epsilons(run_dir: Path, training_centers: list[str]) -> dict:
    """The run's privacy record: the largest epsilon of a training site (patient level) and the
    server's (hospital level); NaN where the run had no such mechanism."""
    path = run_dir / "privacy.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    sites = [float(e["epsilon"]) for c, e in (record.get("sites") or {}).items() if c in training_centers]
    central = record.get("central") or {}
    return {"epsilon_patient": max(sites) if sites else float("nan"), "epsilon_hospital": _nan(central.get("epsilon"))}


def arm_metrics(arm: Arm, run_dir: Path, cfg: DictConfig, training_centers: list[str], cohort_dir: Path) -> dict:
    """The table's figures of one finished arm x seed, from its run folder."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if arm.kind == "federated":
        held, internal = metrics.get("held_out") or {}, metrics.get("internal_test") or {}
        per_center = [c.get("auc") for c in metrics.get("centers", []) if c.get("role") == "held_out"]
    else:
        held = metrics["held_out"].get("pooled", {})
        internal = metrics["internal_test"].get("pooled", {})
        per_center = [v.get("auc") for k, v in metrics["held_out"].items() if k != "pooled"]
        if arm.mode == "local":
            internal = _internal_test_all_centers(cfg, run_dir, training_centers, cohort_dir)
    per_center = [_nan(v) for v in per_center]
    return {**_epsilons(run_dir, training_centers), "held_out_auc": _nan(held.get("auc")),
            "held_out_center_auc": sum(per_center) / len(per_center) if per_center else float("nan"),
            "held_out_sensitivity": _nan(held.get("sensitivity")),
            "held_out_specificity": _nan(held.get("specificity")), "internal_test_auc": _nan(internal.get("auc")),
            "threshold": _nan(metrics.get("threshold")), "held_out_n": held.get("n")}


def _run_one(arm: Arm, seed: int, out: Path, experiment: str, shared: list[str], context: dict, tag: str, log: Log) -> dict:
    run_dir = out / arm.name / f"seed{seed}"
    row = {"arm": arm.name, "kind": arm.kind, "seed": seed, "run_dir": str(run_dir), "status": "ok", "reused": False}
    cfg, _ = arm_config(experiment, shared, arm, seed, run_dir)
    timing_file = run_dir / "compare_arm.json"
    if _complete(arm, run_dir):
        row["reused"] = True
        log(f"{tag}: reusing the finished run in {run_dir}")
    else:
        log(f"{tag}: {arm.describe()} -> {run_dir}")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            if arm.kind == "federated":
                _run_federated(experiment, shared, arm, seed, run_dir, log)
            else:
                _run_centralized(cfg, arm, run_dir, log)
        except Exception as exc:  # noqa: BLE001  (one arm's failure must not stop the comparison)
            (run_dir / "error.txt").write_text(traceback.format_exc())
            row.update(status="error", error=f"{type(exc).__name__}: {exc}"[:500], wall_seconds=time.perf_counter() - started)
            log(f"{tag}: ERROR {row['error']} (the other arms carry on)")
            return row
        timing_file.write_text(json.dumps({"arm": arm.name, "seed": seed, "wall_seconds": time.perf_counter() - started}) + "\n")
    row["wall_seconds"] = json.loads(timing_file.read_text())["wall_seconds"] if timing_file.is_file() else None
    try:
        row.update(arm_metrics(arm, run_dir, cfg, context["training_centers"], context["cohort_dir"]))
    except Exception as exc:  # noqa: BLE001
        row.update(status="error", error=f"reading its metrics: {type(exc).__name__}: {exc}"[:500])
        log(f"{tag}: ERROR {row['error']}")
        return row
    wall = f"{row['wall_seconds']:.0f} s" if row["wall_seconds"] is not None else "time unknown"
    log(f"{tag}: held-out AUC {row['held_out_auc']:.3f} sens {row['held_out_sensitivity']:.3f} "
        f"spec {row['held_out_specificity']:.3f}; internal-test AUC {row['internal_test_auc']:.3f} ({wall})")
    return row


def run_compare(cfg: DictConfig, cli_overrides: list[str], log: Log = print) -> int:
    """Run (or resume) the comparison ``cfg`` (see the module docstring); returns the exit code."""
    out = Path(str(cfg.run_dir)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    experiment = str(cfg.compare.experiment)
    seeds = [int(s) for s in (cfg.seeds if cfg.seeds is not None else [cfg.seed])]
    shared = shared_overrides(cli_overrides)
    base = compose_experiment(experiment, [*shared, f"seed={seeds[0]}"])
    if base.get("compare") is not None:
        raise ValueError(f"compare.experiment={experiment} is itself a comparison; name a single-run experiment (quick, smoke)")
    if base.gan_artifact:
        raise ValueError("experiment=compare: gan_artifact is not supported (the centralized arms train their own GAN)")
    cohort_dir = ensure_cohort(base, log).resolve()
    training, held_out = center_roles(cohort_dir)
    if base.held_out_centers is not None and sorted(base.held_out_centers) != sorted(held_out):
        raise ValueError(f"experiment=compare evaluates every arm on the cohort's held-out centers {held_out}; "
                         f"held_out_centers={list(base.held_out_centers)} is not supported")
    arms = expand_arms(OmegaConf.to_container(cfg.compare.arms, resolve=True), training)
    meta = {"experiment": experiment, "seeds": seeds, "arms": [asdict(a) for a in arms], "overrides": shared,
            "cohort_dir": str(cohort_dir), "training_centers": training, "held_out_centers": held_out,
            "budget": {"rounds": OmegaConf.to_container(base.rounds), "local": OmegaConf.to_container(base.local),
                       "centralized_epochs": {s: int(base.rounds[s]) * int(base.local.epochs) for s in ("stage_a", "stage_b")},
                       "centralized_gan_steps": int(base.rounds.gan) * int(base.local.gan_steps)}}
    (out / "compare.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"[ecs-compare] {experiment}: {len(arms)} arms x {len(seeds)} seeds {seeds} on {cohort_dir.name} "
        f"(training {training}, held out {held_out}) -> {out}")
    log(f"[ecs-compare] budget: federated {meta['budget']['rounds']} rounds of {meta['budget']['local']}; centralized "
        f"{meta['budget']['centralized_epochs']} epochs, {meta['budget']['centralized_gan_steps']} GAN steps")
    context = {"training_centers": training, "cohort_dir": cohort_dir}
    results: list[dict] = []
    total, index = len(arms) * len(seeds), 0
    for seed in seeds:  # seed-major: an interrupted comparison still holds whole seeds
        for arm in arms:
            index += 1
            tag = f"[ecs-compare] ({index}/{total}) {arm.name} seed {seed}"
            results.append(_run_one(arm, seed, out, experiment, shared, context, tag, log))
            (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = write_report(results, [a.name for a in arms], out, meta)
    log(markdown)
    failed = [f"{r['arm']} seed {r['seed']}" for r in results if r["status"] != "ok"]
    if failed:
        log(f"[ecs-compare] {len(failed)} of {total} runs failed ({', '.join(failed)}); error rows in {out / 'table.md'}")
        return 1
    log(f"[ecs-compare] {out / 'table.md'}, {out / 'table.csv'}, {out / 'compare.png'}")
    return 0
