"""Paired comparison of finished ``ecs-train`` runs on the same held-out images: is B better than A?

Runs are paired by position (A's i-th with B's i-th, typically the same seed). Each run's kept
student is re-scored on every held-out image; the statistic is the mean over pairs of
``metric(B_i) - metric(A_i)`` for AUC and for sensitivity and specificity at each run's own
operating point (its ``metrics.json`` threshold), with a 95 % interval from a bootstrap over
held-out *patients* (all images of a patient drawn together; the same draw for every pair).

    python -m simulations.centralized.paired --a RUN_A0 RUN_A1 RUN_A2 --b RUN_B0 RUN_B1 RUN_B2
    python -m simulations.centralized.paired --a abl/lsnet_no_synthesis/seed* --b abl/lsnet_full/seed*
    ... --synthetic abl/lsnet_full/seed0/synthetic.npz   # also: do the students read the synthetic images?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ecs_models.evaluation import patient_resamples
from ecs_models.training.data import TransformedImages, combine, dataset_labels, make_loader
from ecs_models.training.distill import predict_scores
from ecs_models.training.metrics import screening_metrics
from simulations.centralized.run import held_out_datasets, load_synthetic, student_from_run

METRICS = ("auc", "sensitivity", "specificity")


def _load(run_dir: Path) -> tuple[torch.nn.Module, object, dict]:
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (not a finished ecs-train run)")
    return student_from_run(run_dir)


def score_held_out(run_dir: Path, log=print, *, loaded: tuple | None = None) -> dict:
    """Re-score a finished run's student on all held-out images (``loaded``: its
    :func:`student_from_run` result, when the caller has it already).

    Returns {"labels": int [N], "scores": float [N] (probability of invasion), "patients": [N] ids,
    "threshold": the run's operating point}; items in the cohort's center and file order.
    """
    student, cfg, metrics = loaded or _load(run_dir)
    datasets = held_out_datasets(cfg, Path(cfg.cohort_dir), list(metrics["held_out_centers"]))
    data = combine(list(datasets.values()))
    log(f"scoring {run_dir} on {len(data)} held-out images")
    labels, scores = _score(student, cfg, data)
    if not np.array_equal(labels, dataset_labels(data)):
        raise RuntimeError(f"{run_dir}: scored labels out of order")
    patients = [f"{c}/{p}" for c, d in datasets.items() for p in d.patient_ids]
    return {"labels": labels, "scores": scores, "patients": patients, "threshold": float(metrics["threshold"])}


def _score(student: torch.nn.Module, cfg, data) -> tuple[np.ndarray, np.ndarray]:
    size, batch = int(cfg.training.img_size), int(cfg.training.eval_batch_size)
    loader = make_loader(TransformedImages(data, size, train=False), batch, shuffle=False)
    return predict_scores(student, loader, torch.device("cpu"))


def score_synthetic(run_dir: Path, synthetic_file: Path, *, loaded: tuple | None = None) -> dict[str, float]:
    """A run's student on labelled synthetic ultrasound (``synthetic.npz`` of a run that
    synthesized): AUC, and sensitivity / specificity at the run's operating point. A student
    trained on real images only tells whether the synthetic images carry the label's anatomy."""
    student, cfg, metrics = loaded or _load(run_dir)
    labels, scores = _score(student, cfg, load_synthetic(synthetic_file))
    m = screening_metrics(labels, scores, float(metrics["threshold"]))
    return {k: m[k] for k in METRICS} | {"n": int(len(labels)), "positives": int(labels.sum())}


def _metrics(run: dict, index: np.ndarray) -> dict[str, float]:
    m = screening_metrics(run["labels"][index], run["scores"][index], run["threshold"])
    return {k: m[k] for k in METRICS}


def paired_bootstrap(runs_a: list[dict], runs_b: list[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean over pairs of B - A per metric, with a patient-level bootstrap
    (:func:`ecs_models.evaluation.patient_resamples`: the same draw for every pair).

    Returns {metric: {"a": mean A, "b": mean B, "diff": mean B - A, "low", "high": 95 % interval,
    "p_not_better": share of resamples with diff <= 0}}.
    """
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"need the same number of runs on both sides, got {len(runs_a)} and {len(runs_b)}")
    patients = runs_a[0]["patients"]
    for run in runs_a + runs_b:
        if run["patients"] != patients or not np.array_equal(run["labels"], runs_a[0]["labels"]):
            raise ValueError("the runs were not evaluated on the same held-out images (different cohorts?)")
    everything = np.arange(len(patients))

    def per_pair(index: np.ndarray) -> list[tuple[dict, dict]]:
        return [(_metrics(a, index), _metrics(b, index)) for a, b in zip(runs_a, runs_b, strict=True)]

    def mean_diff(pairs: list[tuple[dict, dict]]) -> dict[str, float]:
        return {k: float(np.nanmean([mb[k] - ma[k] for ma, mb in pairs])) for k in METRICS}

    draws = [mean_diff(per_pair(index)) for index in patient_resamples(patients, resamples, seed)]
    full = per_pair(everything)
    observed = mean_diff(full)
    result = {}
    for k in METRICS:
        values = np.asarray([d[k] for d in draws])
        result[k] = {"a": float(np.mean([ma[k] for ma, _ in full])), "b": float(np.mean([mb[k] for _, mb in full])),
                     "diff": observed[k], "low": float(np.nanpercentile(values, 2.5)),
                     "high": float(np.nanpercentile(values, 97.5)), "p_not_better": float(np.mean(values <= 0))}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulations.centralized.paired", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", type=Path, required=True, help="run folders of the reference (A)")
    parser.add_argument("--b", nargs="+", type=Path, required=True, help="run folders compared with it (B), same order")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap draws of held-out patients")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument("--synthetic", type=Path,
                        help="also score every run on this synthetic.npz (from a run that synthesized)")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args(argv)
    try:
        loaded = {d: _load(d) for d in dict.fromkeys(args.a + args.b)}  # each run once, even if named twice
        scored = {d: score_held_out(d, loaded=run) for d, run in loaded.items()}
        runs_a, runs_b = [scored[d] for d in args.a], [scored[d] for d in args.b]
        result = paired_bootstrap(runs_a, runs_b, args.resamples, args.seed)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        sys.exit(f"paired: {exc}")
    n_pos = int(runs_a[0]["labels"].sum())
    print(f"{len(runs_a)} pair(s); {len(runs_a[0]['labels'])} held-out images ({n_pos} positive) of "
          f"{len(set(runs_a[0]['patients']))} patients; {args.resamples} patient-level bootstrap draws")
    print("| metric | A (mean) | B (mean) | B - A | 95 % interval | P(B - A <= 0) |")
    print("|---|---|---|---|---|---|")
    for k, r in result.items():
        print(f"| {k} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] | {r['p_not_better']:.3f} |")
    if args.synthetic is not None:
        print(f"on {args.synthetic} (labelled synthetic ultrasound):")
        for side, dirs in (("A", args.a), ("B", args.b)):
            for d in dirs:
                m = score_synthetic(d, args.synthetic, loaded=loaded[d])
                result.setdefault("synthetic", {})[str(d)] = m
                print(f"  {side} {d}: AUC {m['auc']:.3f}, sensitivity {m['sensitivity']:.3f}, "
                      f"specificity {m['specificity']:.3f} ({m['n']} images, {m['positives']} positive)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
