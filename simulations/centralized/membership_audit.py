"""Membership-inference audit (issue 15): can an attacker tell whether a patient trained the model?

A hospital's model is what leaves it (a federated site's update; the global model is a
post-processing of those), so the audit attacks the model the platform's own training code makes
of one hospital's patients: the teacher + LSNet distillation of ``ecs-train``'s pooled run
(``train_stage``; under DP the same patient-level DP-SGD as a federated site, ``PooledDp``).

1. **Canary patients**: ``audit.canaries`` patients of a fresh synthetic cohort, one image each,
   with the *wrong* label (the hardest patients to generalise to, so the most memorised). Each
   target run includes every canary independently with probability 1/2.
2. **Targets**: ``audit.targets`` runs per arm, each on its own hospital (a fresh cohort of the
   ``audit.cohort`` spec, all splits) plus its draw of canaries.
3. **Shadows**: ``audit.shadows`` runs per arm on other fresh cohorts, without canaries: what the
   attacker can build (it knows the recipe and can synthesise data, not the hospital's).
4. **Attack**: offline LiRA on the student and on the teacher (the site releases both):
   :mod:`simulations.centralized.membership_attack`; attack AUC, TPR at 1 % FPR and the one-run
   epsilon lower bound, pooled over the targets of an arm; beside them the accountant's epsilon.

Arms: ``audit.arms`` maps a name to a target epsilon (``null``: no DP). Writes ``audit.json``,
``audit.md``, ``config.yaml`` and ``versions.json`` into the output folder.

    python -m simulations.centralized.membership_audit                        # no_dp and dp_eps8
    python -m simulations.centralized.membership_audit --preset smoke paths.root=/tmp/x   # ~1 min
    python -m simulations.centralized.membership_audit audit.shadows=4 'audit.arms={no_dp: null, dp_eps1: 1.0}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset, TensorDataset

from client.data.preprocess import PreprocessConfig
from client.data.site_datasets import site_us_dataset
from ecs_models.training.data import TransformedImages, combine, dataset_labels, make_loader
from ecs_models.training.distill import DistillationModel, StageConfig, train_stage
from ecs_models.training.runtime import resolve_device, seed_everything
from server.store import versions
from simulations.centralized.local_dp import PooledDp
from simulations.centralized.membership_attack import (
    attack_metrics,
    lira_offline_scores,
    logit_confidence,
    one_run_epsilon_lower_bound,
)
from simulations.centralized.run import distillation_model
from simulations.cli_errors import user_errors
from simulations.cohort.generate import generate_cohort
from simulations.cohort.spec import cohort_spec_from_config

__all__ = ["PRESETS", "audit_config", "run_audit", "audit_markdown", "main"]

EXPERIMENT = "membership_audit"
NETWORKS = ("student", "teacher")
SPLITS = ["train", "val", "test"]  # a hospital's patients: every split of its one center
# smoke: the whole chain in seconds, with the federated smoke experiment's narrow models (numbers meaningless)
TINY_MODELS = ["+model.channels=[8,8,12,12,16,16,24,24,32,32,64]", "+model.transformer_dims=[16,24,32]", "+model.depths=[1,1,1]",
               "+teacher.channels=[8,8,16,16,24,24,32,32,40,40,64]", "+teacher.transformer_dims=[32,32,32]",
               "+teacher.depths=[1,1,1]", "+teacher.expansion=2.0", "+teacher.mlp_ratio=2.0"]
PRESETS = {"default": [], "smoke": ["audit.canaries=16", "audit.hospital_patients=12", "audit.shadows=2", "audit.targets=1",
                                    "training.stage_a.epochs=1", "training.max_steps_per_epoch=2", *TINY_MODELS]}
Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"[membership-audit] {message}", flush=True)


def audit_config(preset: str, overrides: list[str] | None = None) -> DictConfig:
    """``configs/train.yaml`` with ``experiment=membership_audit``, the preset's overrides, then the caller's."""
    from hydra import compose, initialize_config_module

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={EXPERIMENT}", *PRESETS[preset], *(overrides or [])])
    if not cfg.audit.arms or int(cfg.audit.shadows) < 2 or int(cfg.audit.targets) < 1 or int(cfg.audit.canaries) < 4:
        raise ValueError("the audit needs arms, at least 2 shadows, 1 target and 4 canaries "
                         f"(got {dict(cfg.audit.arms or {})}, {cfg.audit.shadows}, {cfg.audit.targets}, {cfg.audit.canaries})")
    return cfg


def _cohort_images(cfg: DictConfig, seed: int, patients: int):  # noqa: ANN202
    """The ultrasound of a fresh one-center cohort of the ``audit.cohort`` spec with ``patients``
    patients (generated once, then reused), every split, as the training data layer reads it."""
    spec_cfg = OmegaConf.to_container(cfg.audit.cohort, resolve=True)
    (center,) = spec_cfg["centers"].values()
    center["n_us"] = int(patients)
    out = Path(cfg.paths.cohorts) / f"{spec_cfg['name']}-{patients}-seed{seed}"
    generate_cohort(cohort_spec_from_config(spec_cfg), out, seed=seed, workers=int(cfg.cohort_workers), log=lambda _m: None)
    return site_us_dataset(out / next(iter(spec_cfg["centers"])), SPLITS,
                           PreprocessConfig(output_size=int(cfg.training.preprocess_size)), cfg.paths.cache)


def _hospital(cfg: DictConfig, seed: int, log: Log):  # noqa: ANN202
    data = _cohort_images(cfg, seed, int(cfg.audit.hospital_patients))
    log(f"  hospital cohort seed {seed}: {len(data)} images of {len(set(data.patient_ids))} patients")
    return data, [f"hospital/{p}" for p in data.patient_ids]


def _canaries(cfg: DictConfig, seed: int, log: Log) -> tuple[TensorDataset, list[str]]:
    """One image of each canary patient ([M, 1, S, S] in [0, 1]) with the other label."""
    data = _cohort_images(cfg, seed, int(cfg.audit.canaries))
    first: dict[str, int] = {}
    for index, patient in enumerate(data.patient_ids):
        first.setdefault(patient, index)
    items = [data[i] for i in first.values()]
    images = torch.stack([image for image, _ in items])
    wrong = torch.tensor([1 - int(label) for _, label in items], dtype=torch.int64)
    log(f"canaries: {len(items)} patients of cohort seed {seed}, one image each, label flipped "
        f"({int(wrong.sum())} now positive)")
    return TensorDataset(images, wrong), [f"canary/{p}" for p in first]


def _train(cfg: DictConfig, data, patients: list[str], seed: int, epsilon: float | None, device: torch.device,  # noqa: ANN001
           log: Log) -> tuple[DistillationModel, dict | None]:
    """One model by the platform's recipe (``cfg.training.stage_a``); DP-SGD at ``epsilon`` unless None."""
    generator = seed_everything(seed)
    model = distillation_model(cfg)
    tr = cfg.training
    stage = StageConfig(**OmegaConf.to_container(tr.stage_a), max_steps_per_epoch=tr.max_steps_per_epoch)
    images = TransformedImages(data, int(tr.img_size), train=True)
    dp = None
    if epsilon is not None:
        arm = cfg.copy()
        arm.privacy.local.target_epsilon, arm.seed = float(epsilon), seed  # the run's seed seeds its noise
        delta = float(cfg.privacy.local.delta or 1.0 / (10 * (int(cfg.audit.hospital_patients) + int(cfg.audit.canaries))))
        dp = PooledDp(arm, patients, delta, batch_size=int(tr.batch_size), stage_epochs=[stage.epochs],
                      max_steps=tr.max_steps_per_epoch)
    loader = make_loader(images, int(tr.batch_size), shuffle=True, generator=generator) if dp is None else dp.loader(images, generator)
    train_stage(model, loader, stage, device=device, labels_for_weights=dataset_labels(data), log=lambda _m: None,
                dp=None if dp is None else dp.stage(0))
    entry = None if dp is None else dp.account.entry()
    log(f"    trained {stage.epochs} epochs on {len(data)} images"
        + ("" if entry is None else f", epsilon {entry['epsilon']:.2f} (z {entry['noise_multiplier']:.2f})"))
    return model, entry


@torch.no_grad()
def _confidences(model: DistillationModel, canaries: TensorDataset, size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Each network's logit confidence in each canary's label [M], mean over the image and its
    vertical flip (training augments with that flip)."""
    views = torch.stack([image for image, _ in TransformedImages(canaries, size, train=False)]).to(device)
    labels = canaries.tensors[1].numpy()
    model.eval()
    out = {}
    for name in NETWORKS:
        net = getattr(model, name)
        if net is not None:
            out[name] = np.mean([logit_confidence(net(v).float().cpu().numpy(), labels)
                                 for v in (views, views.flip(-2))], axis=0)
    return out


def _model_record(cfg: DictConfig, out_dir: Path, key: str, epsilon: float | None, train: Callable[[], dict],
                  log: Log) -> dict:
    """A trained model's record (``confidence`` per network, ``members``, ``privacy``), kept in
    ``out_dir/models/<key>.json`` so that a rerun into the folder with the same configuration and
    epsilon reuses it (adding an arm, a shadow or a target trains only those); another
    configuration trains again."""
    setting = OmegaConf.to_container(cfg, resolve=True)
    setting["audit"] = {k: v for k, v in setting["audit"].items() if k not in ("arms", "shadows", "targets")}
    digest = hashlib.sha256(json.dumps([setting, epsilon], sort_keys=True).encode()).hexdigest()
    path = out_dir / "models" / f"{key}.json"
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("config_digest") == digest:
            log(f"  reusing {path.name} (same configuration)")
            return record
    record = {**train(), "config_digest": digest}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, default=lambda a: np.asarray(a).tolist()) + "\n")
    return record


def _attacks(targets: list[dict], shadows: list[dict], net: str) -> dict:
    """Both attacks on one network, pooled over the targets: offline LiRA and the plain loss attack
    (the target's confidence alone). Each bound is at 97.5 %, so the larger of the two holds at 95 %."""
    members = np.concatenate([np.asarray(t["members"], dtype=bool) for t in targets])
    out = np.stack([np.asarray(s["confidence"][net]) for s in shadows])
    raw = np.concatenate([np.asarray(t["confidence"][net]) for t in targets])
    scores = {"lira_offline": np.concatenate([lira_offline_scores(np.asarray(t["confidence"][net]), out) for t in targets]),
              "loss": raw}
    result: dict = {"wrong_label_fit": {"members": float((raw[members] > 0).mean()),
                                        "non_members": float((raw[~members] > 0).mean())}}
    for attack, values in scores.items():
        result[attack] = {**attack_metrics(values, members),
                          "epsilon_lower_bound": one_run_epsilon_lower_bound(values, members, beta=0.05 / len(scores))}
    result["auc"] = max(result[a]["auc"] for a in scores)
    result["tpr_at_0.01_fpr"] = max(result[a]["tpr_at_0.01_fpr"] for a in scores)
    result["epsilon_lower_bound"] = max(result[a]["epsilon_lower_bound"]["epsilon"] for a in scores)
    return result


def _arm(cfg: DictConfig, out_dir: Path, name: str, epsilon: float | None, canaries: TensorDataset,
         canary_ids: list[str], device: torch.device, log: Log) -> dict:
    seed, size = int(cfg.seed) * 1000, int(cfg.training.img_size)

    def shadow(index: int) -> dict:
        data, patients = _hospital(cfg, seed + 200 + index, log)
        model = _train(cfg, data, patients, seed + 200 + index, epsilon, device, log)[0]
        return {"confidence": _confidences(model, canaries, size, device), "members": None, "privacy": None}

    def target(index: int) -> dict:
        members = np.random.default_rng(seed + 300 + index).random(len(canary_ids)) < 0.5
        data, patients = _hospital(cfg, seed + 100 + index, log)
        chosen = np.flatnonzero(members).tolist()
        model, entry = _train(cfg, combine([data, Subset(canaries, chosen)]), patients + [canary_ids[i] for i in chosen],
                              seed + 100 + index, epsilon, device, log)
        return {"confidence": _confidences(model, canaries, size, device), "members": members, "privacy": entry}

    shadows, targets = [], []
    for s in range(int(cfg.audit.shadows)):
        log(f"{name}: shadow {s + 1}/{cfg.audit.shadows} (fresh cohort, no canaries)")
        shadows.append(_model_record(cfg, out_dir, f"{name}/shadow{s}", epsilon, lambda s=s: shadow(s), log))
    for t in range(int(cfg.audit.targets)):
        log(f"{name}: target {t + 1}/{cfg.audit.targets}")
        targets.append(_model_record(cfg, out_dir, f"{name}/target{t}", epsilon, lambda t=t: target(t), log))
    result: dict = {"target_epsilon": epsilon, "privacy": [t["privacy"] for t in targets], "networks": {}}
    for net in shadows[0]["confidence"]:
        m = result["networks"][net] = _attacks(targets, shadows, net)
        log(f"{name} {net}: attack AUC {m['lira_offline']['auc']:.3f} (LiRA) / {m['loss']['auc']:.3f} (loss), "
            f"TPR at 1 % FPR {m['tpr_at_0.01_fpr']:.3f}, epsilon lower bound {m['epsilon_lower_bound']:.2f}")
    return result


def run_audit(cfg: DictConfig, out_dir: Path, log: Log = _log) -> dict:
    """Train the canaries' cohort, every arm's shadows and targets; write and return the report."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml", resolve=True)
    (out_dir / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n")
    device = resolve_device(cfg.device)
    canaries, canary_ids = _canaries(cfg, int(cfg.seed) * 1000 + 1, log)
    report = {"seed": int(cfg.seed), "canaries": len(canary_ids), "targets": int(cfg.audit.targets),
              "shadows": int(cfg.audit.shadows), "hospital_patients": int(cfg.audit.hospital_patients),
              "img_size": int(cfg.training.img_size), "epochs": int(cfg.training.stage_a.epochs), "arms": {}}
    for name, epsilon in cfg.audit.arms.items():
        report["arms"][name] = _arm(cfg, out_dir, str(name), None if epsilon is None else float(epsilon), canaries, canary_ids,
                                    device, log)
        (out_dir / "audit.json").write_text(json.dumps(report, indent=1, default=float) + "\n")  # each arm as it ends
    report["seconds"] = time.perf_counter() - start
    (out_dir / "audit.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "audit.md").write_text(audit_markdown(report))
    return report


def audit_markdown(report: dict) -> str:
    """The report's table: one row per arm and network."""
    lines = [f"Membership-inference audit: {report['canaries']} canary patients (wrong label) x {report['targets']} target "
             f"run(s), {report['shadows']} shadow runs per arm, {report['hospital_patients']} hospital patients, "
             f"{report['img_size']} px, {report['epochs']} epochs, seed {report['seed']}.", "",
             "| arm | network | accountant epsilon | attack AUC: LiRA / loss | TPR @ 1 % FPR: LiRA / loss | "
             "epsilon lower bound (95 %): LiRA / loss | wrong label fitted: members / non-members |",
             "|---|---|---|---|---|---|---|"]
    for name, arm in report["arms"].items():
        spent = [p["epsilon"] for p in arm["privacy"] if p]
        epsilon = f"{max(spent):.2f}" if spent else "inf (no DP)"
        for net, m in arm["networks"].items():
            lira, loss = m["lira_offline"], m["loss"]
            bounds = " / ".join(f"{a['epsilon_lower_bound']['epsilon']:.2f} ({a['epsilon_lower_bound']['correct']}/"
                                f"{a['epsilon_lower_bound']['guesses']})" for a in (lira, loss))
            lines.append(f"| {name} | {net} | {epsilon} | {lira['auc']:.3f} / {loss['auc']:.3f} | "
                         f"{lira['tpr_at_0.01_fpr']:.3f} / {loss['tpr_at_0.01_fpr']:.3f} | {bounds} | "
                         f"{m['wrong_label_fit']['members']:.2f} / {m['wrong_label_fit']['non_members']:.2f} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulations.centralized.membership_audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: configs/experiment/membership_audit.yaml; smoke: tiny counts, two steps")
    parser.add_argument("--out", type=Path, help="output folder (default: <paths.runs>/train/membership_audit/<preset>)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of ecs-train, e.g. paths.root=/tmp/x audit.shadows=4")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the report."""
    args = _parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with user_errors("membership_audit"):
        cfg = audit_config(args.preset, args.overrides)
        out_dir = args.out or Path(cfg.paths.runs) / "train" / EXPERIMENT / args.preset
        _log(f"preset {args.preset}, arms {dict(cfg.audit.arms)}, torch threads {torch.get_num_threads()} -> {out_dir}")
        report = run_audit(cfg, out_dir)
    print(audit_markdown(report), flush=True)
    _log(f"wrote {out_dir / 'audit.md'} and audit.json ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
