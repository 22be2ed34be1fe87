"""How much of a model's held-out AUC depends on its batch-norm running statistics.

For each finished run (a federated run folder, or a centralized / compare-arm folder with a
``checkpoint.pt``) the selected student is scored on every held-out center with five sets of
batch-norm statistics (ecs_models.training.norm_stats):

  own          the statistics the run ended with (what its metrics report)
  pooled       re-estimated on the training centers' training splits, pooled (mixed batches)
  site-mean    re-estimated per training center, then averaged by images (what FedAvg does)
  site-total   per center, pooled with the law of total variance (site-mean + variance of means)
  held-out     each held-out center's own statistics, from its unlabelled images (AdaBN)

If only "held-out" lifts a model, it learned on per-scanner normalized features: in federated
training every batch comes from one scanner (docs/federated.md, finding 6).

    python benchmarks/probe_norm_stats.py RUN [RUN ...] [--cohort DIR] [--json OUT]

A folder without ``config.yaml`` (a compare arm run centrally) borrows the first given
folder's config for the model, cohort and preprocessing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from client.cohort import cohort_centers  # noqa: E402
from client.data.preprocess import PreprocessConfig  # noqa: E402
from client.data.site_datasets import site_us_dataset  # noqa: E402
from ecs_models.build import build_classifier  # noqa: E402
from ecs_models.training.data import TransformedImages, combine, make_loader  # noqa: E402
from ecs_models.training.distill import predict_scores  # noqa: E402
from ecs_models.training.norm_stats import (  # noqa: E402
    estimate_batch_norm_stats,
    pool_site_stats,
    use_batch_norm_stats,
)
from server.context import model_spec  # noqa: E402

VARIANTS = ("own", "pooled", "site-mean", "site-total", "held-out")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (federated, or compare arms with checkpoint.pt)")
    parser.add_argument("--cohort", type=Path, default=None, help="cohort folder (default: the config's cohort_dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser.parse_args()


def selected_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The run's selected classifier state: a federated checkpoint's best round, else ``model``."""
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "model" in checkpoint:
        return checkpoint["model"]
    arrays = (checkpoint.get("best") or {}).get("arrays") or checkpoint["model_arrays"]
    return {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}


def probe(run_dir: Path, cfg, cohort: Path) -> dict:  # noqa: ANN001
    """Held-out AUC per center (and all held-out images together) under each statistics variant."""
    model = build_classifier(model_spec(cfg))
    state = model.state_dict()
    state.update(selected_state(run_dir))
    model.load_state_dict(state)
    student = model.student.eval()
    tr = cfg.training
    preprocess, size = PreprocessConfig(output_size=int(tr.preprocess_size)), int(tr.img_size)
    held_out = [str(c) for c in cfg.held_out_centers]
    training = [c for c in cohort_centers(cohort) if c not in held_out]

    def data(center: str, splits: list[str]):
        return site_us_dataset(cohort / center, splits, preprocess, cfg.paths.cache)

    def loader(dataset, shuffle: bool = False):
        return make_loader(TransformedImages(dataset, size, train=False), int(tr.eval_batch_size), shuffle=shuffle,
                           generator=torch.Generator().manual_seed(0))

    held_sets = {c: data(c, ["train", "val", "test", ""]) for c in held_out}
    train_sets = {c: data(c, ["train"]) for c in training}
    per_site = [estimate_batch_norm_stats(student, loader(train_sets[c], shuffle=True)) for c in training]
    sizes = [len(train_sets[c]) for c in training]
    stats = {"own": None,
             "pooled": estimate_batch_norm_stats(student, loader(combine(list(train_sets.values())), shuffle=True)),
             "site-mean": pool_site_stats(per_site, sizes, between_sites=False),
             "site-total": pool_site_stats(per_site, sizes, between_sites=True)}
    device = torch.device("cpu")
    out: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        labels, scores, row = [], [], {}
        for center, dataset in held_sets.items():
            chosen = estimate_batch_norm_stats(student, loader(dataset, shuffle=True)) if variant == "held-out" else stats[variant]
            if chosen is None:
                y, s = predict_scores(student, loader(dataset), device)
            else:
                with use_batch_norm_stats(student, chosen):
                    y, s = predict_scores(student, loader(dataset), device)
            row[center] = float(roc_auc_score(y, s))
            labels.append(y)
            scores.append(s)
        row["all held-out"] = float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))
        out[variant] = row
        print(f"  {variant:<10} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    configs = [r / "config.yaml" for r in args.runs if (r / "config.yaml").is_file()]
    if not configs:
        raise SystemExit("error: none of the folders has a config.yaml; give at least one federated run folder first")
    fallback = OmegaConf.load(configs[0])
    results = {}
    for run_dir in args.runs:
        cfg = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else fallback
        if str(cfg.model.norm) != "batch":
            print(f"{run_dir}: model.norm={cfg.model.norm}, no batch-norm statistics to probe; skipped")
            continue
        cohort = args.cohort or Path(str(cfg.cohort_dir))
        print(f"{run_dir} (held-out AUC by batch-norm statistics)", flush=True)
        try:
            results[str(run_dir)] = probe(run_dir, cfg, cohort)
        except (FileNotFoundError, KeyError, ValueError) as exc:  # one bad folder does not stop the others
            print(f"  error: {type(exc).__name__}: {exc}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
