"""Shortcut audit (issue 13): does the screening model read the burned-in calipers off the screen?

The cohort burns endometrial-thickness calipers into about half the frames, and the thickness
separates the classes, so a model that sees them can read the label without looking at the
invasion. The data layer is meant to remove them. This audit measures whether it does:

1. twin cohorts of one preset and seed, with calipers on every frame and on none: the same
   participants and images otherwise (the caliper draw takes one random number either way);
   each is generated once and then reused;
2. the strongest recipe, the pooled student (``ecs-train experiment=shortcut_audit``: LSNet alone,
   16 epochs of Adam 1e-3, class-weighted), trained on each twin for every seed; finished runs in
   the output folder are reused;
3. held-out AUC (all held-out images, and per held-out center) of the two, and a cross-check:
   the calipers-trained model scored on the *no-calipers* twin's held-out images, i.e. the same
   participants without calipers. 95 % intervals are a bootstrap over held-out patients
   (:func:`simulations.centralized.paired.paired_bootstrap`); they do not include the
   seed-to-seed spread of training.

Verdict: the two held-out AUCs (all images, mean over seeds) agree within 0.02 or not.
Writes ``audit.md`` and ``audit.json`` into the output folder and prints the table.

    python -m simulations.centralized.shortcut_audit                      # quick cohort, seed 0
    python -m simulations.centralized.shortcut_audit --seeds 0 1 2 --threads 1
    python -m simulations.centralized.shortcut_audit --seeds 0 1 2 --jobs 6 device=cuda cohort_workers=16   # a GPU machine
    python -m simulations.centralized.shortcut_audit --preset smoke paths.root=/tmp/x   # tiny cohort, ~1 min
    python -m simulations.centralized.shortcut_audit cohort_workers=1 paths.root=/tmp/ecs-audit   # any ecs-train override
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

import client.data
from client.data.preprocess import PIPELINE_VERSION
from simulations.centralized.cli import train_variants
from simulations.centralized.paired import paired_bootstrap, score_held_out
from simulations.centralized.run import student_from_run
from simulations.cli_errors import user_errors

__all__ = ["TOLERANCE", "PRESETS", "TWINS", "audit_config", "run_audit", "audit_markdown", "main"]

TOLERANCE = 0.02  # held-out AUCs closer than this count as agreeing
TWINS = ("calipers", "no_calipers")  # variant names in configs/experiment/shortcut_audit.yaml
CROSS_CHECK = ("on_calipers_images", "on_no_calipers_images")  # the calipers-trained model's two scorings
EXPERIMENT = "shortcut_audit"
# Hydra overrides per preset on top of the experiment. smoke: the tiny cohort and two optimiser
# steps at 64 px, to check the whole chain in about a minute (numbers meaningless).
PRESETS = {
    "quick": [],
    "smoke": ["cohort=tiny", "training.img_size=64", "training.preprocess_size=64", "training.eval_batch_size=16",
              "training.stage_a.epochs=1", "training.max_steps_per_epoch=2"],
}
PIPELINE_FILE = "pipeline.json"  # the data pipeline version the folder's runs were trained with

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"[shortcut-audit] {message}", flush=True)


def audit_config(preset: str, seeds: list[int] | None = None, overrides: list[str] | None = None) -> DictConfig:
    """``configs/train.yaml`` with ``experiment=shortcut_audit``, the preset's overrides, then
    ``seeds`` (None: the experiment's) and the caller's Hydra ``overrides`` (they win)."""
    from hydra import compose, initialize_config_module

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    extra = [f"seeds=[{','.join(str(int(s)) for s in seeds)}]"] if seeds else []
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={EXPERIMENT}", *PRESETS[preset], *extra, *(overrides or [])])
    if set(TWINS) - set(cfg.variants or {}):
        raise ValueError(f"the configuration must keep the variants {list(TWINS)}, has {list(cfg.variants or {})}")
    return cfg


def _check_pipeline(out_dir: Path) -> None:
    """Refuse a folder whose runs were trained by another data pipeline version.

    Reuse of a finished run compares its configuration only; the preprocessing code (which
    removes the calipers) is not part of it, so runs from before and after a detector fix would
    otherwise be mixed silently.
    """
    version = int(PIPELINE_VERSION)
    marker = out_dir / PIPELINE_FILE
    if marker.is_file():
        found = json.loads(marker.read_text()).get("pipeline_version")
        if found != version:
            raise ValueError(f"{out_dir} holds runs trained with data pipeline version {found}, this code is version "
                             f"{version}: choose another --out (e.g. {out_dir}-pipeline{version})")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pipeline_version": version, "client_data": str(Path(client.data.__file__).parent)}) + "\n")


def _on_cohort(run: tuple, cohort_dir: str) -> tuple:
    """A loaded run (:func:`student_from_run`) whose held-out images come from ``cohort_dir``."""
    student, cfg, metrics = run
    cfg = cfg.copy()
    cfg.cohort_dir = cohort_dir
    return student, cfg, metrics


def _subset(run: dict, center: str) -> dict:
    """A scored run (:func:`score_held_out`) restricted to one held-out center's images."""
    keep = np.asarray([p.startswith(f"{center}/") for p in run["patients"]])
    return {"labels": run["labels"][keep], "scores": run["scores"][keep], "threshold": run["threshold"],
            "patients": [p for p, k in zip(run["patients"], keep, strict=True) if k]}


def _auc_rows(runs_a: list[dict], runs_b: list[dict], names: tuple[str, str], centers: list[str],
              resamples: int) -> dict[str, dict]:
    """Held-out AUC of the scored runs B and A (paired by seed) over all held-out images and per
    center: {"all" | center: {names[1]: B, names[0]: A, "difference": B - A, "low", "high": its
    95 % interval, "images", "positives"}}, means over the pairs."""
    rows = {}
    for name in ["all", *centers]:
        a = runs_a if name == "all" else [_subset(r, name) for r in runs_a]
        b = runs_b if name == "all" else [_subset(r, name) for r in runs_b]
        try:
            with warnings.catch_warnings():  # a draw of one class only has no AUC; it is left out (nan)
                warnings.simplefilter("ignore", RuntimeWarning)
                auc = paired_bootstrap(a, b, resamples)["auc"]
        except ValueError as exc:  # the twins must hold the same participants and labels
            raise ValueError(f"held-out images of {name}: {exc}; are the twins of the same preset and seed?") from exc
        rows[name] = {names[1]: auc["b"], names[0]: auc["a"], "difference": auc["diff"], "low": auc["low"],
                      "high": auc["high"], "images": int(len(a[0]["labels"])), "positives": int(a[0]["labels"].sum())}
    return rows


def _score_seed(dirs: dict[str, Path], no_calipers_cohort: str, log: Log) -> dict[str, dict]:
    """One seed's three scorings: each twin's model on its own held-out images, and the
    calipers-trained model on the no-calipers twin's (``cross``)."""
    quiet = lambda m: log(f"  {m}")  # noqa: E731
    loaded = {twin: student_from_run(d) for twin, d in dirs.items()}
    scored = {twin: score_held_out(dirs[twin], quiet, loaded=run) for twin, run in loaded.items()}
    scored["cross"] = score_held_out(dirs["calipers"], quiet, loaded=_on_cohort(loaded["calipers"], no_calipers_cohort))
    return scored


def run_audit(cfg: DictConfig, out_dir: Path, *, resamples: int = 2000, jobs: int = 1, log: Log = _log) -> dict:
    """Train (or reuse) both twins for every seed of ``cfg`` (``jobs`` runs at a time), score them,
    write ``audit.json`` and ``audit.md`` into ``out_dir``; returns the report (``audit.json``)."""
    _check_pipeline(out_dir)
    log(f"data layer: {Path(client.data.__file__).parent} (pipeline version {PIPELINE_VERSION})")
    results, cfgs = train_variants(cfg, out_dir, log, jobs=jobs)
    seeds = [int(m["seed"]) for m in results[TWINS[0]]]
    cohorts = {twin: str(cfgs[twin].cohort_dir) for twin in TWINS}
    log(f"scoring {len(seeds)} seed(s) on the held-out centers ({resamples} patient-level bootstrap draws)")
    scored = [_score_seed({t: out_dir / t / f"seed{s}" for t in TWINS}, cohorts["no_calipers"], log) for s in seeds]
    centers = list(results[TWINS[0]][0]["held_out_centers"])
    report = {
        "cohort": str(cfg.cohort.name), "cohort_seed": int(cfg.cohort_seed), "seeds": seeds,
        "tolerance": TOLERANCE, "pipeline_version": int(PIPELINE_VERSION), "resamples": int(resamples),
        "cohorts": cohorts, "runs": {t: [str(out_dir / t / f"seed{s}") for s in seeds] for t in TWINS},
        "recipe": {"model": str(cfg.model.name), "distillation": bool(cfg.distillation), "synthesis": bool(cfg.synthesis),
                   "training": OmegaConf.to_container(cfg.training, resolve=True)},
        # each twin's model on its own held-out images; difference: calipers - none
        "held_out_auc": _auc_rows([s["no_calipers"] for s in scored], [s["calipers"] for s in scored],
                                  TWINS[::-1], centers, resamples),
        # the calipers-trained model on both twins' held-out images; difference: calipers - none
        "cross_check_auc": _auc_rows([s["cross"] for s in scored], [s["calipers"] for s in scored],
                                     CROSS_CHECK[::-1], centers, resamples),
        "per_seed": [_seed_row(seed, results, i) for i, seed in enumerate(seeds)],
    }
    diff = report["held_out_auc"]["all"]["difference"]
    report["agree"] = bool(abs(diff) <= TOLERANCE)
    report["verdict"] = _verdict(report)
    (out_dir / "audit.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out_dir / "audit.md").write_text(audit_markdown(report))
    return report


def _seed_row(seed: int, results: dict[str, list[dict]], index: int) -> dict:
    """Held-out AUCs of one seed from the runs' own metrics.json, and each run's wall time (s)."""
    row = {"seed": seed}
    for twin in TWINS:
        m = results[twin][index]
        row[twin] = {"auc": {c: v["auc"] for c, v in m["held_out"].items()}, "seconds": m["seconds"]}
    return row


def _verdict(report: dict) -> str:
    held_out, cross = report["held_out_auc"]["all"], report["cross_check_auc"]["all"]
    if report["agree"]:
        outcome = f"agree within {TOLERANCE}"
    else:
        outcome = f"differ by more than {TOLERANCE} ({'higher' if held_out['difference'] > 0 else 'lower'} with calipers)"
    return (f"VERDICT: held-out AUC with calipers {held_out['calipers']:.3f}, without {held_out['no_calipers']:.3f} "
            f"(calipers - none {held_out['difference']:+.3f}, seeds {report['seeds']}): {outcome}. "
            f"Cross-check: the calipers-trained model {cross['on_calipers_images']:.3f} on its own held-out images, "
            f"{cross['on_no_calipers_images']:.3f} on the same participants without calipers ({cross['difference']:+.3f}).")


def _row(label: str, row: dict, keys: tuple[str, str], counts: bool) -> str:
    """One markdown row: label, (images), the two AUCs in ``keys`` order, difference, interval."""
    cells = [label, *([f"{row['images']} ({row['positives']})"] if counts else []),
             *(f"{row[k]:.3f}" for k in keys), f"{row['difference']:+.3f}", f"[{row['low']:+.3f}, {row['high']:+.3f}]"]
    return "| " + " | ".join(cells) + " |"


def audit_markdown(report: dict) -> str:
    """The report as markdown: the two tables, per-seed figures and the verdict line."""
    seeds = ", ".join(str(s) for s in report["seeds"])
    label = {"all": "all held-out images"}
    lines = [
        f"# Shortcut audit: cohort `{report['cohort']}` (cohort seed {report['cohort_seed']}), training seed(s) {seeds}",
        "",
        f"Twins: calipers on every frame (`{report['cohorts']['calipers']}`) and on none "
        f"(`{report['cohorts']['no_calipers']}`). Data pipeline version {report['pipeline_version']}. "
        f"Means over seeds; 95 % intervals from {report['resamples']} bootstrap draws of held-out patients "
        "(the seed-to-seed spread of training is not in them).",
        "",
        "| held-out AUC | images (positive) | calipers on every frame | no calipers | calipers - none | 95 % interval |",
        "|---|---|---|---|---|---|",
        *(_row(label.get(n, n), r, TWINS, True) for n, r in report["held_out_auc"].items()),
        "",
        "Cross-check: the calipers-trained model on the same held-out participants without calipers "
        "(the no-calipers twin's images).",
        "",
        "| held-out AUC of the calipers-trained model | on calipers images | on no-calipers images | difference | 95 % interval |",
        "|---|---|---|---|---|",
        *(_row(label.get(n, n), r, CROSS_CHECK, False) for n, r in report["cross_check_auc"].items()),
        "",
        "| seed | AUC calipers | AUC no calipers | s calipers run | s no-calipers run |",
        "|---|---|---|---|---|",
    ]
    for row in report["per_seed"]:
        cal, none = row["calipers"], row["no_calipers"]
        lines.append(f"| {row['seed']} | {cal['auc']['pooled']:.3f} | {none['auc']['pooled']:.3f} | "
                     f"{cal['seconds']:.0f} | {none['seconds']:.0f} |")
    lines += ["", "(s per run: the run's wall time, including its cohort's generation when that run made it.)"]
    return "\n".join([*lines, "", report["verdict"], ""])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulations.centralized.shortcut_audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="quick: the quick cohort and the full recipe (default); smoke: tiny cohort, tiny budget")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: the experiment's, [0])")
    parser.add_argument("--out", type=Path,
                        help="output folder; rerunning into it reuses finished runs (default: <paths.runs>/train/shortcut_audit/<preset>)")
    parser.add_argument("--threads", type=int, help="torch threads for training and scoring (default: torch's)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at a time, each in its own process (a big machine or a GPU; default 1)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap draws of held-out patients (default 2000)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of ecs-train, e.g. paths.root=/tmp/x cohort_workers=1")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the report."""
    import torch


    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with user_errors("shortcut_audit"):
        cfg = audit_config(args.preset, args.seeds, args.overrides)
        out_dir = args.out or Path(cfg.paths.runs) / "train" / EXPERIMENT / args.preset
        _log(f"preset {args.preset}, seeds {list(cfg.seeds)}, torch threads {torch.get_num_threads()} -> {out_dir}")
        report = run_audit(cfg, out_dir, resamples=args.resamples, jobs=args.jobs)
    print(audit_markdown(report), flush=True)
    _log(f"wrote {out_dir / 'audit.md'} and audit.json ({time.perf_counter() - start:.0f} s)")
    return report


if __name__ == "__main__":
    main()
