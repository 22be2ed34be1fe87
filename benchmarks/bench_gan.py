"""SG-CycleGAN vs plain CycleGAN, same budget: synthesis quality and training throughput.

Both are trained with the same steps, batches, data and seed on the training centers of a
cohort (train split US; train split MR as virtual-probe views), then judged on the centers'
paired renders (never trained on) and against held-back real US (val/test split):

    python benchmarks/bench_gan.py                        # quick cohort, cpu preset, a few minutes
    python benchmarks/bench_gan.py --steps 2000 --preset paper --device cuda
    python benchmarks/bench_gan.py --feature-extractor teacher_features.pt   # TorchScript [B,1,S,S] -> [B,D]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from client.cohort import center_roles
from client.data.gan_images import load_center_mri, load_center_us, load_paired_renders
from ecs_models.sg_cyclegan import SG_CYCLEGAN_CFGS, create_sg_cyclegan
from ecs_models.training.gan import GanTrainConfig, GanTrainer, synthesize_us, train_gan
from simulations.centralized.synthesis_metrics import (
    RandomConvFeatures,
    extract_features,
    kid,
    structure_metrics,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, default=REPO_ROOT / "cohorts" / "quick-seed0",
                        help="cohort folder (with cohort.json); default: the quick cohort")
    parser.add_argument("--centers", nargs="*", default=None,
                        help="center names (default: the cohort's training centers)")
    parser.add_argument("--preset", choices=sorted(SG_CYCLEGAN_CFGS), default="cpu")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per model (default 100)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/ecs-gan-cache"),
                        help="data-layer cache of preprocessed frames")
    parser.add_argument("--feature-extractor", type=Path, default=None,
                        help="TorchScript module [B,1,S,S] -> [B,D] or [B,C,H,W] for KID "
                             "(default: a fixed random-init conv net)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def _load(cohort: Path, centers: list[str], size: int, cache_dir: Path) -> dict[str, object]:
    us, mri, us_held, paired = [], [], [], []
    for name in centers:
        center = cohort / name
        us.append(load_center_us(center, image_size=size, cache_dir=cache_dir).images)
        mri.append(load_center_mri(center, image_size=size, cache_dir=cache_dir).images)
        us_held.append(load_center_us(center, image_size=size, cache_dir=cache_dir, splits=("val", "test")).images)
        paired.append(load_paired_renders(center, image_size=size, cache_dir=cache_dir))
    return {
        "us": torch.cat(us), "mri": torch.cat(mri), "us_held": torch.cat(us_held),
        "paired_mri": torch.cat([p.mri for p in paired]), "paired_us": torch.cat([p.us for p in paired]),
        "tissue": np.concatenate([p.tissue for p in paired]),
        "fan": np.concatenate([p.fan for p in paired]),
    }


def _loader(images: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True, drop_last=True,
                      generator=generator)


def _run(vanilla: bool, args: argparse.Namespace, data: dict, device: torch.device, feature_fn) -> dict[str, float]:
    torch.manual_seed(args.seed)
    model = create_sg_cyclegan(args.preset, vanilla=vanilla)
    n_params = sum(p.numel() for p in model.generator_parameters())
    config = GanTrainConfig(total_steps=args.steps, decay_start_step=args.steps // 2, seed=args.seed)
    trainer = GanTrainer(model, config, device=device)
    name = "cyclegan" if vanilla else "sg-cyclegan"
    train = train_gan(trainer, _loader(data["mri"], args.batch_size, args.seed),
                      _loader(data["us"], args.batch_size, args.seed + 1), steps=args.steps,
                      log=lambda msg: print(f"  [{name}] {msg}", flush=True), log_every=max(1, args.steps // 4))
    synthetic_paired = synthesize_us(model, data["paired_mri"])
    out = structure_metrics(synthetic_paired, data["paired_us"], data["tissue"], data["fan"],
                            mri_input=data["paired_mri"])
    synthetic = synthesize_us(model, data["mri"])
    out.update(kid(extract_features(feature_fn, synthetic), extract_features(feature_fn, data["us_held"]),
                   subset_size=min(100, len(synthetic), len(data["us_held"]))))
    out.update(train_images_per_s=train["images_per_s"], final_cycle=train["cycle"],
               generator_params_m=n_params / 1e6, seconds=train["seconds"])
    return out


def main() -> None:
    args = _parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    centers = args.centers or center_roles(args.cohort)[0]
    size = SG_CYCLEGAN_CFGS[args.preset].image_size
    start = time.perf_counter()
    data = _load(args.cohort, centers, size, args.cache_dir)
    print(f"cohort {args.cohort} centers {centers}: {len(data['us'])} US, {len(data['mri'])} MR (train split), "
          f"{len(data['us_held'])} held-back US, {len(data['paired_us'])} paired renders; "
          f"{size}x{size}, loaded in {time.perf_counter() - start:.1f} s")
    if args.feature_extractor is not None:
        feature_fn = torch.jit.load(str(args.feature_extractor), map_location="cpu").eval()
        feature_note = f"KID features: {args.feature_extractor}"
    else:
        feature_fn = RandomConvFeatures(seed=0)
        feature_note = "KID features: fixed random-init conv net (no trained teacher given; not comparable to Inception KID)"
    floor = kid(extract_features(feature_fn, data["mri"]), extract_features(feature_fn, data["us_held"]),
                subset_size=min(100, len(data["mri"]), len(data["us_held"])))["kid"]
    ceiling = kid(extract_features(feature_fn, data["us"]), extract_features(feature_fn, data["us_held"]),
                  subset_size=min(100, len(data["us"]), len(data["us_held"])))["kid"]
    results = {}
    for vanilla in (False, True):
        label = "CycleGAN (vanilla)" if vanilla else "SG-CycleGAN"
        print(f"training {label}: preset {args.preset}, {args.steps} steps, batch {args.batch_size}, "
              f"seed {args.seed}, {device}", flush=True)
        results[label] = _run(vanilla, args, data, device, feature_fn)
    rows = [
        ("SSIM despeckled, in fan (higher better)", "ssim", "{:.3f}"),
        ("Dice hypoechoic (k-means)", "dice_hypoechoic", "{:.3f}"),
        ("Dice uterus (k-means)", "dice_uterus", "{:.3f}"),
        ("KID vs held-back real US (lower better)", "kid", "{:.4f}"),
        ("KID std over subsets", "kid_std", "{:.4f}"),
        ("train images/s (both domains)", "train_images_per_s", "{:.1f}"),
        ("mean cycle L1 during training", "final_cycle", "{:.3f}"),
        ("generator-side params (M)", "generator_params_m", "{:.3f}"),
        ("train seconds", "seconds", "{:.1f}"),
    ]
    labels = list(results)
    print()
    print(f"{'metric':44s}" + "".join(f"{label:>20s}" for label in labels))
    for title, key, fmt in rows:
        print(f"{title:44s}" + "".join(f"{fmt.format(results[label][key]):>20s}" for label in labels))
    first = results[labels[0]]
    print(f"\nreferences on the same {int(first['n_pairs'])} paired renders: SSIM of the MR input itself "
          f"{first['ssim_mri_input']:.3f}; Dice ceilings on the real US render: hypoechoic "
          f"{first['dice_hypoechoic_ceiling']:.3f}, uterus {first['dice_uterus_ceiling']:.3f}")
    print(f"KID references: MR views vs real US {floor:.4f} (no translation); real train US vs held-back US "
          f"{ceiling:.4f}")
    print(feature_note)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                         "kid_mri_vs_us": floor, "kid_us_vs_us": ceiling}, indent=2))


if __name__ == "__main__":
    main()
