"""Time of one patient-level DP-SGD distillation step against the non-private step (issue 15).

Both run the library's own loop (``train_stage``: teacher forward/backward, student
forward/backward, Adam) on the same random [B, 1, S, S] batches with the same GroupNorm models
(what ``privacy=local`` trains); the DP setup adds Opacus's per-example gradient hooks on the
whole ``DistillationModel``, the per-example joint clip, the noise and the accountant's step
(``ecs_models.training.dp_sgd.DpSgd``). Setups are interleaved round by round so that a busy
machine slows both alike; printed: each round's ratio, and the fastest round of each setup
(the least disturbed on a shared machine) with the load average.

    python benchmarks/bench_dp_step.py                        # CPU recipe: 128 px, batch 8
    python benchmarks/bench_dp_step.py --size 320 --batch 32 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ecs_models import create_model  # noqa: E402
from ecs_models.training.distill import DistillationModel, StageConfig, train_stage  # noqa: E402
from ecs_models.training.dp_sgd import DpSgd, PrivacyAccount  # noqa: E402
from ecs_models.training.runtime import resolve_device  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="square input size in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=8, help="images (one per sampled patient) per step")
    parser.add_argument("--steps", type=int, default=4, help="timed optimiser steps per round and setup")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser.parse_args()


def timed(model: DistillationModel, batches: list, device: torch.device, dp: DpSgd | None) -> float:
    """Seconds per optimiser step of one ``train_stage`` epoch over ``batches``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_stage(model, batches, StageConfig(epochs=1, lr=1e-4, warmup_fraction=0.0), device=device, log=lambda _m: None, dp=dp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    batches = [(torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 2, (args.batch,)))
               for _ in range(args.steps)]
    models = {name: DistillationModel(create_model("lsnet", img_size=args.size, norm="group"),
                                      create_model("teacher", img_size=args.size, norm="group")).to(device)
              for name in ("non-private", "DP-SGD")}
    account = PrivacyAccount("rdp", 1e-5, 1.0, noise_multiplier=1.0)

    def dp_for(name: str) -> DpSgd | None:
        return DpSgd(account, sample_rate=0.1, expected_batch_size=args.batch, seed=0) if name == "DP-SGD" else None

    for name, model in models.items():  # warm-up
        timed(model, batches[:1], device, dp_for(name))
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for index in range(args.rounds):
        for name, model in models.items():
            seconds[name].append(timed(model, batches, device, dp_for(name)))
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.3f} s/step" for n, s in seconds.items())
              + f", ratio {seconds['DP-SGD'][-1] / seconds['non-private'][-1]:.2f}x", flush=True)
    best = {name: min(s) for name, s in seconds.items()}
    ratios = [d / n for d, n in zip(seconds["DP-SGD"], seconds["non-private"], strict=True)]
    print(f"{device.type} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; {args.size}x{args.size}, "
          f"batch {args.batch}, GroupNorm teacher + LSNet, fastest of {args.rounds} rounds x {args.steps} steps")
    print(f"non-private distillation step: {best['non-private']:.3f} s")
    print(f"DP-SGD distillation step:      {best['DP-SGD']:.3f} s")
    print(f"DP-SGD / non-private: {best['DP-SGD'] / best['non-private']:.2f}x fastest rounds, "
          f"{statistics.median(ratios):.2f}x median round ratio (goal <= 2.5x)")


if __name__ == "__main__":
    main()
