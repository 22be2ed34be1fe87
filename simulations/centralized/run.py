"""One centralized training run: pooled (all training centers) or local (one center alone).

Steps: make or reuse the cohort; real ultrasound datasets per split; optionally train an
SG-CycleGAN on the training centers' MRI + ultrasound and synthesize labelled ultrasound from
their MRI; stage A (real + synthetic) and stage B (real, class-weighted) with the paper's
checkpoint rule on validation data (at each epoch's validation operating point, see
:class:`~ecs_models.training.metrics.CheckpointSelector`); an operating point chosen on validation data; evaluation on
every training center's internal test split and on the held-out centers; the exported student.

Everything here is plain PyTorch over ``ecs_models.training``: the federated client calls the
same functions on its own data.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from client.cohort import center_roles
from client.data.preprocess import PreprocessConfig
from client.data.site_datasets import site_us_dataset
from ecs_models import create_model
from ecs_models.bundle import export_student
from ecs_models.complexity import complexity_report
from ecs_models.evaluation import operating_point
from ecs_models.inputs import intensity_summary
from ecs_models.run_checkpoint import RUN_CONFIG, student_kwargs
from ecs_models.training.data import (
    TransformedImages,
    cap_synthetic,
    combine,
    dataset_labels,
    make_loader,
    synthetic_dataset,
)
from ecs_models.training.distill import DistillationModel, StageConfig, predict_scores, train_stage
from ecs_models.training.metrics import CheckpointSelector, choose_threshold, screening_metrics
from ecs_models.training.runtime import resolve_device, seed_everything
from simulations.centralized.local_dp import pooled_dp
from simulations.centralized.privacy import write_privacy_record
from simulations.cohort.generate import cohort_fingerprint, generate_cohort
from simulations.cohort.repartition import is_partition_of
from simulations.cohort.spec import cohort_spec_from_config

__all__ = ["seed_everything", "resolve_device", "ensure_cohort", "fill_cache", "run_training", "distillation_model", "finished_run", "held_out_datasets",
           "student_from_run", "save_synthetic", "load_synthetic"]

SYNTHETIC_FILE = "synthetic.npz"  # the synthetic ultrasound stage A trained on (uint8 images, labels)

Log = Callable[[str], None]


def ensure_cohort(cfg: DictConfig, log: Log) -> Path:
    """Generate the configured cohort into ``cfg.cohort_dir`` or reuse the identical one there.

    A repartitioned copy of the configured cohort there (``simulations.cohort.repartition``) is
    used as it is.
    """
    spec = cohort_spec_from_config(OmegaConf.to_container(cfg.cohort, resolve=True))
    out = Path(cfg.cohort_dir)
    seed = int(cfg.cohort_seed)
    if is_partition_of(out, cohort_fingerprint(spec, seed)):
        log(f"cohort {out} is a repartitioned copy of {spec.name} (seed {seed}); using it as it is")
        return out
    generate_cohort(spec, out, seed=seed, workers=int(cfg.cohort_workers), log=log)
    return out


def _preprocess_one(path: str, output_size: int, cache_dir: str) -> None:
    from client.data.cache import PreprocessedCache
    from client.data.pipeline import load_preprocessed

    try:
        load_preprocessed(path, PreprocessConfig(output_size=output_size), PreprocessedCache(cache_dir))
    except Exception:  # noqa: BLE001 - the dataset quarantines it with the reason when it reads the file
        pass


def fill_cache(cohort_dir: Path, cfg: DictConfig, workers: int, log: Log) -> None:
    """Preprocess every ultrasound file of every center of ``cohort_dir`` into ``cfg.paths.cache``
    (as ``cfg`` trains) with ``workers`` processes, so that runs started afterwards only read it.

    The datasets fill the cache one file at a time otherwise; this is the same work in parallel
    (cache writes are atomic, so concurrent fills of one file are harmless)."""
    from concurrent.futures import ProcessPoolExecutor

    from client.data.site_datasets import site_rows

    paths = [str(center / row.file) for center in sorted(p for p in Path(cohort_dir).iterdir() if (p / "manifest.csv").is_file())
             for row in site_rows(center, ["train", "val", "test", ""])]
    size, cache = int(cfg.training.preprocess_size), str(cfg.paths.cache)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(_preprocess_one, paths, [size] * len(paths), [cache] * len(paths), chunksize=8), 1):
            if done % 500 == 0 or done == len(paths):
                log(f"cache {Path(cohort_dir).name}: {done}/{len(paths)} ultrasound files ({time.perf_counter() - start:.0f} s)")


def held_out_datasets(cfg: DictConfig, cohort_dir: Path, centers: list[str]) -> dict[str, object]:
    """Every ultrasound image of each held-out center (all splits), preprocessed as ``cfg`` trains:
    center -> dataset of ``([1, S, S] in [0, 1], label)`` with ``patient_ids``."""
    pp = PreprocessConfig(output_size=int(cfg.training.preprocess_size))
    return {c: site_us_dataset(cohort_dir / c, ["train", "val", "test", ""], pp, cfg.paths.cache) for c in centers}


def save_synthetic(path: Path, dataset) -> None:
    """Write a dataset of ``([1, S, S] in [0, 1], label)`` items as ``images`` uint8 [N, S, S] and
    ``labels`` int64 [N] (compressed npz; 70 images at 128 px are ~1 MB)."""
    images = np.stack([np.asarray(dataset[i][0])[0] for i in range(len(dataset))]) if len(dataset) else np.zeros((0, 1, 1))
    np.savez_compressed(path, images=np.round(images * 255).astype(np.uint8), labels=dataset_labels(dataset))


def load_synthetic(path: Path):
    """The images saved by :func:`save_synthetic` as a dataset of ``([1, S, S] in [0, 1], label)``."""
    with np.load(path) as saved:
        images = torch.from_numpy(saved["images"].astype(np.float32) / 255.0)[:, None]
        return synthetic_dataset(images * 2.0 - 1.0, saved["labels"].tolist())


def _centers(cohort_dir: Path, cfg: DictConfig) -> tuple[list[str], list[str]]:
    training, held_out = center_roles(cohort_dir)
    if cfg.mode == "local":
        if cfg.center not in training:
            raise ValueError(f"mode=local needs center=<one of {training}>, got {cfg.center!r}")
        training = [cfg.center]
    elif cfg.mode != "pooled":
        raise ValueError(f"mode must be pooled or local, got {cfg.mode!r}")
    return training, held_out


def _synthesize(cfg: DictConfig, cohort_dir: Path, centers: list[str], device: torch.device, log: Log) -> tuple[object, dict]:
    """Train the GAN on the centers' training MRI + US; return (synthetic dataset, GAN metrics)."""
    from client.data.gan_images import load_center_mri, load_center_us
    from ecs_models.training.gan import gan_trainer, synthesize_us, train_gan

    size, cache = int(cfg.gan.image_size), cfg.paths.cache
    mri = [load_center_mri(cohort_dir / c, image_size=size, cache_dir=cache) for c in centers]
    us = [load_center_us(cohort_dir / c, image_size=size, cache_dir=cache) for c in centers]
    mri_images = torch.cat([m.images for m in mri])
    mri_labels = torch.cat([m.labels for m in mri])
    us_images = torch.cat([u.images for u in us])
    if len(mri_images) == 0:
        log("  no MRI at the training centers: no synthetic data")
        return None, {"synthetic_images": 0}
    model = create_model(cfg.gan.name, preset=cfg.gan.preset, image_size=size).to(device)
    steps = int(cfg.gan.steps)
    trainer = gan_trainer(model, total_steps=steps, lr=float(cfg.gan.lr), seed=int(cfg.seed), device=device)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    mri_loader = make_loader(mri_images, int(cfg.gan.batch_size), shuffle=True, generator=gen)
    us_loader = make_loader(us_images, int(cfg.gan.batch_size), shuffle=True, generator=gen)
    log(f"  SG-CycleGAN: {len(mri_images)} MRI, {len(us_images)} US images, {steps} steps")
    metrics = train_gan(trainer, mri_loader, us_loader, steps=steps, device=device, log=log, log_every=max(1, steps // 4))
    synthetic = synthesize_us(model, mri_images.to(device), batch_size=32).cpu()
    metrics["synthetic_images"] = len(synthetic)
    metrics["synthetic_positives"] = int(mri_labels.sum())
    return synthetic_dataset(synthetic, mri_labels.tolist()), metrics


def _evaluate(model: torch.nn.Module, datasets: dict[str, object], size: int, batch: int, threshold: float, device: torch.device) -> dict:
    """Per-center metrics at ``threshold`` plus the pooled figure over all given datasets."""
    results, pooled_labels, pooled_scores = {}, [], []
    for name, dataset in datasets.items():
        if len(dataset) == 0:
            continue
        labels, scores = predict_scores(model, make_loader(TransformedImages(dataset, size, train=False), batch, shuffle=False), device)
        results[name] = screening_metrics(labels, scores, threshold)
        pooled_labels.append(labels)
        pooled_scores.append(scores)
    if pooled_labels:
        results["pooled"] = screening_metrics(np.concatenate(pooled_labels), np.concatenate(pooled_scores), threshold)
    return results


def _student_kwargs(cfg: DictConfig) -> tuple[str, dict]:
    return student_kwargs(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.training.img_size))


def distillation_model(cfg: DictConfig) -> DistillationModel:
    """The student of ``cfg.model`` and, with ``cfg.distillation``, the teacher of ``cfg.teacher``,
    both at ``cfg.training.img_size`` (freshly initialised: seed torch first)."""
    name, kwargs = _student_kwargs(cfg)
    student = create_model(name, **kwargs)
    teacher = None
    if cfg.distillation:
        if not hasattr(student, "forward_with_maps"):
            raise ValueError(f"distillation=true needs a student with gradient maps; {name} has none")
        teacher_cfg = OmegaConf.to_container(cfg.teacher, resolve=True)
        teacher = create_model(teacher_cfg.pop("name"), img_size=int(cfg.training.img_size), **teacher_cfg)
    return DistillationModel(student, teacher)


def run_training(cfg: DictConfig, run_dir: Path, log: Log = print, *, synthetic_cache: dict | None = None) -> dict:
    """Train and evaluate one configuration; write checkpoint, metrics and model into ``run_dir``.

    ``synthetic_cache`` lets runs that share seed, centers and GAN settings (the variants of one
    seed in an ablation) share one trained GAN and its synthetic images.
    Returns the metrics dictionary also written to ``run_dir/metrics.json``.
    """
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").unlink(missing_ok=True)  # a folder holds a finished run or none
    OmegaConf.save(cfg, run_dir / RUN_CONFIG, resolve=True)
    write_privacy_record(cfg, run_dir)  # privacy.json + privacy.md; refuses client-level (central) DP
    generator = seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    cohort_dir = ensure_cohort(cfg, log)
    train_centers, held_out = _centers(cohort_dir, cfg)
    tr = cfg.training
    pp, cache = PreprocessConfig(output_size=int(tr.preprocess_size)), cfg.paths.cache
    log(f"run {run_dir.name}: mode={cfg.mode} centers={train_centers} held-out={held_out} device={device}")
    real_sets = [site_us_dataset(cohort_dir / c, ["train"], pp, cache) for c in train_centers]
    real_train = combine(real_sets)
    val = combine([site_us_dataset(cohort_dir / c, ["val"], pp, cache) for c in train_centers])
    internal_test = {c: site_us_dataset(cohort_dir / c, ["test"], pp, cache) for c in train_centers}
    held_out_sets = held_out_datasets(cfg, cohort_dir, held_out)
    train_labels = dataset_labels(real_train)
    log(f"  real ultrasound: train {len(real_train)} ({int(train_labels.sum())} positive), val {len(val)}")

    synthetic, gan_metrics = None, {}
    if cfg.synthesis:
        key = json.dumps([int(cfg.seed), train_centers, OmegaConf.to_container(cfg.gan, resolve=True), str(cohort_dir)])
        if synthetic_cache is not None and key in synthetic_cache:
            synthetic, gan_metrics = synthetic_cache[key]
            log("  reusing this seed's SG-CycleGAN synthetic images")
        else:
            synthetic, gan_metrics = _synthesize(cfg, cohort_dir, train_centers, device, log)
            if synthetic_cache is not None:
                synthetic_cache[key] = (synthetic, gan_metrics)
        synthetic = cap_synthetic(synthetic, len(real_train), float(tr.synthetic_per_real), generator)
        save_synthetic(run_dir / SYNTHETIC_FILE, synthetic)

    name = _student_kwargs(cfg)[0]
    model = distillation_model(cfg)
    teacher = model.teacher

    size, batch = int(tr.img_size), int(tr.batch_size)
    val_loader = make_loader(TransformedImages(val, size, train=False), int(tr.eval_batch_size), shuffle=False)
    selector = CheckpointSelector()
    best: dict = {"state": copy.deepcopy(model.state_dict()), "stage": "init", "epoch": -1}
    history: list[dict] = []

    def on_epoch_end(stage: str) -> Callable[[int, dict], None]:
        def callback(epoch: int, parts: dict) -> None:
            labels, scores = predict_scores(model.student, val_loader, device)
            m = screening_metrics(labels, scores, choose_threshold(labels, scores))  # at the operating point
            chosen = selector.update(len(history), m["sensitivity"], m["specificity"], m["auc"])
            history.append({"stage": stage, "epoch": epoch, **parts, **{f"val_{k}": m[k] for k in ("sensitivity", "specificity", "auc")}})
            log(f"    val: sens={m['sensitivity']:.3f} spec={m['specificity']:.3f} auc={m['auc']:.3f}{'  (kept)' if chosen else ''}")
            if chosen:
                best.update(state=copy.deepcopy(model.state_dict()), stage=stage, epoch=epoch)
        return callback

    stage_a_data = combine([real_train] + ([synthetic] if synthetic is not None else []))
    stages = [(stage, data, stage_cfg) for stage, data, stage_cfg in (
        ("A", stage_a_data, StageConfig(**OmegaConf.to_container(tr.stage_a), max_steps_per_epoch=tr.max_steps_per_epoch)),
        ("B", real_train, StageConfig(**OmegaConf.to_container(tr.stage_b), max_steps_per_epoch=tr.max_steps_per_epoch)),
    ) if stage_cfg.epochs > 0]
    dp = pooled_dp(cfg, cohort_dir, train_centers, real_sets, stage_epochs=[c.epochs for _, _, c in stages])  # privacy=local
    for index, (stage, data, stage_cfg) in enumerate(stages):
        teacher_lr = f", teacher lr {stage_cfg.teacher_lr}" if teacher is not None and stage_cfg.teacher_lr else ""
        log(f"  stage {stage}: {len(data)} images, {stage_cfg.epochs} epochs, lr {stage_cfg.lr}{teacher_lr}")
        images = TransformedImages(data, size, train=True)
        loader = (make_loader(images, batch, shuffle=True, generator=generator, workers=int(tr.num_workers)) if dp is None
                  else dp.loader(images, generator))
        train_stage(model, loader, stage_cfg, device=device, labels_for_weights=train_labels,
                    on_epoch_end=on_epoch_end(stage), log=log, dp=None if dp is None else dp.stage(index))

    model.load_state_dict(best["state"])
    val_labels, val_scores = predict_scores(model.student, val_loader, device)
    op = operating_point(val_labels, val_scores, selector.target_sensitivity)  # validation only, then fixed
    threshold = op["threshold"]
    metrics = {
        "run": run_dir.name, "mode": cfg.mode, "train_centers": train_centers, "held_out_centers": held_out,
        "model": name, "seed": int(cfg.seed), "device": str(device),
        "selected_checkpoint": {"stage": best["stage"], "epoch": best["epoch"]},
        "threshold": threshold, "operating_point": {k: v for k, v in op.items() if k != "val"},
        "val": op["val"],
        "internal_test": _evaluate(model.student, internal_test, size, int(tr.eval_batch_size), threshold, device),
        "held_out": _evaluate(model.student, held_out_sets, size, int(tr.eval_batch_size), threshold, device),
        "complexity": complexity_report(model.student, (1, 1, size, size)),
        "gan": gan_metrics, "history": history,
    }
    if teacher is not None:
        t_labels, t_scores = predict_scores(model.teacher, val_loader, device)
        t_threshold = choose_threshold(t_labels, t_scores)
        metrics["teacher"] = {
            "threshold": t_threshold,
            "held_out": _evaluate(model.teacher, held_out_sets, size, int(tr.eval_batch_size), t_threshold, device),
            "complexity": complexity_report(model.teacher, (1, 1, size, size)),
        }
    if dp is not None:  # the pooled training's ledger entry: privacy.json (rewritten) and metrics.json
        metrics["privacy"] = dp.account.entry()
        write_privacy_record(cfg, run_dir, metrics["privacy"])
    metrics["seconds"] = time.perf_counter() - start
    run = {"kind": "centralized", "dir": str(run_dir), "name": run_dir.name, "mode": str(cfg.mode),
           "experiment": cfg.get("experiment_name"), "seed": int(cfg.seed), "train_centers": train_centers}
    _save(run_dir, model, selector, metrics, name, size, threshold, log,
          bundle={"preprocess": pp, "run": run,  # training-pixel statistics would be a release DP does not cover
                  "intensity": _training_intensity(real_train) if dp is None else None})
    return metrics


def _training_intensity(dataset, limit: int = 2000) -> dict | None:
    """The bundle's intensity statistics over (at most ``limit``, evenly spaced) training frames."""
    if len(dataset) == 0:
        return None
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(limit, len(dataset))).round().astype(int))
    return intensity_summary([dataset[int(i)][0][0].numpy() for i in indices])


def student_from_run(run_dir: Path) -> tuple[torch.nn.Module, DictConfig, dict]:
    """The kept student of a finished run (eval mode, CPU), its resolved config and its metrics."""
    cfg = OmegaConf.load(run_dir / RUN_CONFIG)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    name, kwargs = _student_kwargs(cfg)
    student = create_model(name, **kwargs)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    student.load_state_dict({k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")})
    return student.eval(), cfg, metrics


def finished_run(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The metrics of a finished run of exactly ``cfg`` in ``run_dir``, else None.

    Finished = ``metrics.json`` written; same configuration = the saved resolved config equals
    ``cfg`` resolved. Lets an interrupted ablation skip the variants it already trained.
    """
    metrics_path, config_path = run_dir / "metrics.json", run_dir / RUN_CONFIG
    if not (metrics_path.is_file() and config_path.is_file()):
        return None
    if OmegaConf.to_container(OmegaConf.load(config_path)) != OmegaConf.to_container(cfg, resolve=True):
        return None
    return json.loads(metrics_path.read_text())


def _save(run_dir: Path, model: DistillationModel, selector: CheckpointSelector, metrics: dict,
          name: str, size: int, threshold: float, log: Log, bundle: dict) -> None:
    torch.save({"model": model.state_dict(), "selector": selector.state_dict(), "metrics": metrics}, run_dir / "checkpoint.pt")
    onnx_path, diff = export_student(model.student, run_dir / "model", name=name, size=size, threshold=threshold,
                                     target_sensitivity=selector.target_sensitivity, val=metrics["val"],
                                     chosen_on="validation scores of the pooled training centers (centralized)",
                                     **bundle)
    # last: metrics.json marks the folder as a finished run (finished_run), so a failed export is not one
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    log(f"  exported {onnx_path} (onnxruntime max abs diff {diff:.2e}), threshold {threshold:.4f}")
