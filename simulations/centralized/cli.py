"""``ecs-train``: the Hydra entry point for centralized runs, comparisons and ablations.

Without ``variants`` it trains one configuration; with ``variants`` (an experiment such as
``ablation``) it trains every variant for every seed in ``seeds`` and writes one table
(``table.md``, ``table.csv``: held-out sensitivity, specificity and AUC as mean +- std).
Rerunning the same command into the same folder (``hydra.run.dir=...``) reuses every variant x
seed that finished there with the same configuration.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ecs_models import create_model
from ecs_models.complexity import complexity_report
from simulations.centralized.run import ensure_cohort, fill_cache, finished_run, run_training
from simulations.cli_errors import user_errors
from simulations.report.build import report_after_run

REPORT_SIZE = 320  # input size at which the table reports cost (the paper's LSNet input)


def _log(message: str) -> None:
    print(message, flush=True)


def variant_config(base: DictConfig, overrides: dict, seed: int) -> DictConfig:
    """``base`` with a variant's overrides; a different ``model.name`` replaces the model node."""
    cfg = OmegaConf.masked_copy(base, [k for k in base if k not in ("variants", "seeds")])
    overrides = dict(overrides)
    model = overrides.pop("model", None)
    if model is not None:
        if "name" in model and model["name"] != cfg.model.name:
            cfg.model = OmegaConf.create(dict(model))
        else:
            cfg.model = OmegaConf.merge(cfg.model, model)
    cfg = OmegaConf.merge(cfg, overrides)
    cfg.seed = int(seed)
    return cfg


def train_variants(cfg: DictConfig, run_dir: Path, log: Callable[[str], None] = _log,
                   jobs: int = 1) -> tuple[dict[str, list[dict]], dict[str, DictConfig]]:
    """Train every variant of ``cfg.variants`` for every seed of ``cfg.seeds`` (or ``cfg.seed``).

    Run folders are ``run_dir/<variant>/seed<s>``; one that finished with the same configuration
    is reused. ``jobs`` > 1 (a big machine): the cohorts are made and their preprocessing cached
    first, then the unfinished runs train ``jobs`` at a time in their own processes (each trains
    its own GAN where it synthesizes, instead of sharing one per seed). Returns (variant ->
    metrics of each seed, in ``seeds`` order; variant -> its config of the last seed).
    """
    seeds = list(cfg.seeds) if cfg.seeds is not None else [int(cfg.seed)]
    runs = [(seed, variant, variant_config(cfg, {} if overrides is None else OmegaConf.to_container(overrides), seed))
            for seed in seeds for variant, overrides in cfg.variants.items()]  # seed-major
    if jobs > 1:
        _train_in_parallel(runs, run_dir, jobs, log)
    results: dict[str, list[dict]] = {}
    cfgs: dict[str, DictConfig] = {}
    synthetic_cache: dict = {}
    for seed, variant, vcfg in runs:  # seed-major: an interrupted comparison still holds whole seeds
        if variant == next(iter(cfg.variants)):
            synthetic_cache.clear()  # one GAN per seed, shared by that seed's variants
        cfgs[variant] = vcfg
        variant_dir = run_dir / variant / f"seed{seed}"
        metrics = finished_run(variant_dir, vcfg)
        if metrics is not None:
            log(f"== {variant} seed {seed}: reusing the finished run in {variant_dir}")
        else:
            log(f"== {variant} seed {seed}")
            metrics = run_training(vcfg, variant_dir, log, synthetic_cache=synthetic_cache)
        results.setdefault(variant, []).append(metrics)
    return results, cfgs


def _train_one(resolved: dict, run_dir: str, threads: int) -> str:
    """One run in a worker process of :func:`_train_in_parallel`; its log lines carry its folder."""
    import torch

    torch.set_num_threads(threads)
    name = "/".join(Path(run_dir).parts[-2:])
    run_training(OmegaConf.create(resolved), Path(run_dir), lambda m: print(f"[{name}] {m}", flush=True))
    return name


def _train_in_parallel(runs: list[tuple[int, str, DictConfig]], run_dir: Path, jobs: int, log: Callable[[str], None]) -> None:
    """Train the unfinished ``(seed, variant, config)`` runs ``jobs`` at a time (spawned processes)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    todo = [(vcfg, run_dir / variant / f"seed{seed}") for seed, variant, vcfg in runs
            if finished_run(run_dir / variant / f"seed{seed}", vcfg) is None]
    if not todo:
        return
    workers = max(1, (os.cpu_count() or 1))
    for cohort in {str(vcfg.cohort_dir): vcfg for vcfg, _ in todo}.values():  # one generation per cohort, not racing
        fill_cache(ensure_cohort(cohort, log), cohort, workers, log)
    threads = max(1, workers // min(jobs, len(todo)))
    log(f"training {len(todo)} run(s), {jobs} at a time, {threads} torch thread(s) each")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_one, OmegaConf.to_container(vcfg, resolve=True), str(d), threads) for vcfg, d in todo]
        for future in as_completed(futures):
            log(f"finished {future.result()}")


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if len(arr) == 0:
        return "n/a"
    return f"{arr.mean():.3f} ± {arr.std(ddof=0):.3f}" if len(arr) > 1 else f"{arr[0]:.3f}"


def _cost(name: str, model_cfg: dict) -> tuple[float, float]:
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    if name in ("lsnet", "teacher"):
        kwargs["img_size"] = REPORT_SIZE
    report = complexity_report(create_model(name, **kwargs), (1, 1, REPORT_SIZE, REPORT_SIZE))
    return report["params"] / 1e6, report["gmacs"]


def summarise(results: dict[str, list[dict]], cfgs: dict[str, DictConfig], out_dir: Path) -> str:
    """Write ``table.md`` / ``table.csv`` (held-out pooled metrics over seeds); return the markdown."""
    rows = []
    if "lsnet_full" in results and all("teacher" in m for m in results["lsnet_full"]):
        teacher_runs = [m["teacher"]["held_out"]["pooled"] for m in results["lsnet_full"]]
        params, gmacs = _cost("teacher", OmegaConf.to_container(cfgs["lsnet_full"].teacher))
        rows.append(("teacher (of lsnet_full)", teacher_runs, params, gmacs))
    for variant, runs in results.items():
        model_cfg = OmegaConf.to_container(cfgs[variant].model)
        params, gmacs = _cost(model_cfg["name"], model_cfg)
        rows.append((variant, [m["held_out"]["pooled"] for m in runs], params, gmacs))
    header = "| model | held-out sensitivity | held-out specificity | held-out AUC | params (M) | GMACs @320 |"
    lines = [header, "|---|---|---|---|---|---|"]
    table = []
    for name, pooled, params, gmacs in rows:
        cells = [_mean_std([p[k] for p in pooled]) for k in ("sensitivity", "specificity", "auc")]
        lines.append(f"| {name} | {' | '.join(cells)} | {params:.3f} | {gmacs:.3f} |")
        for seed_index, p in enumerate(pooled):
            table.append({"model": name, "seed_index": seed_index, **{k: p[k] for k in ("sensitivity", "specificity", "auc", "threshold")},
                          "params_m": params, "gmacs_320": gmacs})
    markdown = "\n".join(lines) + "\n"
    (out_dir / "table.md").write_text(markdown)
    with (out_dir / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return markdown


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="train")
def _main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with user_errors("ecs-train"):
        if cfg.variants is None:
            metrics = run_training(cfg, run_dir, _log)
            pooled = metrics["held_out"].get("pooled", {})
            _log(f"held-out: sensitivity {pooled.get('sensitivity', float('nan')):.3f}, specificity "
                 f"{pooled.get('specificity', float('nan')):.3f}, AUC {pooled.get('auc', float('nan')):.3f} -> {run_dir}")
            if cfg.report:
                report_after_run(run_dir, _log)  # report.html; a failing report is logged, the run stands
            return
        results, cfgs = train_variants(cfg, run_dir, _log)
        (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
        _log(summarise(results, cfgs, run_dir))
        if cfg.report:
            report_after_run(run_dir, _log)


def main() -> None:
    """Console entry point (``ecs-train``)."""
    _main()


if __name__ == "__main__":
    main()
