"""Time of one patient-level DP-SGD step against the non-private step, same run (issue 15).

``--network distillation`` (default): the library's own loop (``train_stage``: teacher
forward/backward, student forward/backward, Adam) on the same random [B, 1, S, S] batches with
the same GroupNorm models (what ``privacy=local`` trains); the DP setup adds Opacus's per-example
gradient hooks on the whole ``DistillationModel``, the per-example joint clip, the noise and the
accountant's step (``ecs_models.training.dp_sgd.DpSgd``).

``--network gan``: the SG-CycleGAN. Non-private: ``GanTrainer`` on B/2 MRI and B/2 US images
(generator update, discriminator update, replay buffers). DP-SGD: what a site's GAN round runs
under ``privacy=local`` (``ecs_models.training.gan_dp.DpGanTrainer``): the same B images as one
mixed batch of patients, per-example gradients over every GAN parameter, one joint clip, noise.

Setups are interleaved round by round so that a busy machine slows both alike; printed: each
round's ratio, and the fastest round of each setup (the least disturbed on a shared machine)
with the load average.

    python benchmarks/bench_dp_step.py                        # CPU recipe: 128 px, batch 8
    python benchmarks/bench_dp_step.py --network gan          # SG-CycleGAN cpu preset, 4 MRI + 4 US
    python benchmarks/bench_dp_step.py --size 320 --batch 32 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ecs_models import create_model  # noqa: E402
from ecs_models.sg_cyclegan import create_sg_cyclegan  # noqa: E402
from ecs_models.training.distill import DistillationModel, StageConfig, train_stage  # noqa: E402
from ecs_models.training.dp_sgd import DpSgd, PrivacyAccount  # noqa: E402
from ecs_models.training.gan import gan_trainer  # noqa: E402
from ecs_models.training.gan_dp import DpGanTrainer  # noqa: E402
from ecs_models.training.runtime import resolve_device  # noqa: E402

Setup = Callable[[int], float]  # run(steps) -> seconds per step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", choices=("distillation", "gan"), default="distillation",
                        help="teacher + LSNet distillation, or the SG-CycleGAN")
    parser.add_argument("--size", type=int, default=128, help="square input size in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=8, help="images (one per sampled patient) per step")
    parser.add_argument("--preset", default="cpu", help="SG-CycleGAN preset (cpu | paper), --network gan")
    parser.add_argument("--steps", type=int, default=4, help="timed optimiser steps per round and setup")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def distillation_setups(args: argparse.Namespace, device: torch.device, account: PrivacyAccount) -> dict[str, Setup]:
    """``train_stage`` over the first ``steps`` batches, without and with DP-SGD."""
    batches = [(torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 2, (args.batch,)))
               for _ in range(args.steps)]

    def setup(private: bool) -> Setup:
        model = DistillationModel(create_model("lsnet", img_size=args.size, norm="group"),
                                  create_model("teacher", img_size=args.size, norm="group")).to(device)

        def run(steps: int) -> float:
            dp = DpSgd(account, sample_rate=0.1, expected_batch_size=args.batch, seed=0) if private else None
            _sync(device)
            start = time.perf_counter()
            train_stage(model, batches[:steps], StageConfig(epochs=1, lr=1e-4, warmup_fraction=0.0), device=device,
                        log=lambda _m: None, dp=dp)
            _sync(device)
            return (time.perf_counter() - start) / steps
        return run

    return {"non-private": setup(False), "DP-SGD": setup(True)}


def gan_setups(args: argparse.Namespace, device: torch.device, account: PrivacyAccount) -> dict[str, Setup]:
    """``GanTrainer.train_step`` on B/2 + B/2 images and ``DpGanTrainer.train_step`` on the same B."""
    half = args.batch // 2
    images = [torch.rand(2 * half, 1, args.size, args.size) * 2 - 1 for _ in range(args.steps)]
    is_us = torch.arange(2 * half) >= half
    plain = gan_trainer(create_sg_cyclegan(args.preset, image_size=args.size), total_steps=1000, lr=2e-4, seed=0,
                        device=device)
    private = DpGanTrainer(create_sg_cyclegan(args.preset, image_size=args.size),
                           DpSgd(account, sample_rate=0.1, expected_batch_size=2 * half, seed=0),
                           total_steps=1000, lr=2e-4, device=device)

    def setup(step: Callable[[torch.Tensor], object]) -> Setup:
        def run(steps: int) -> float:
            _sync(device)
            start = time.perf_counter()
            for batch in images[:steps]:
                step(batch)
            _sync(device)
            return (time.perf_counter() - start) / steps
        return run

    return {"non-private": setup(lambda b: plain.train_step(b[:half], b[half:])),
            "DP-SGD": setup(lambda b: private.train_step(b, is_us))}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    account = PrivacyAccount("rdp", 1e-5, 1.0, noise_multiplier=1.0)
    setups = (gan_setups if args.network == "gan" else distillation_setups)(args, device, account)
    for run in setups.values():  # warm-up
        run(1)
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    for index in range(args.rounds):
        for name, run in setups.items():
            seconds[name].append(run(args.steps))
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.3f} s/step" for n, s in seconds.items())
              + f", ratio {seconds['DP-SGD'][-1] / seconds['non-private'][-1]:.2f}x", flush=True)
    best = {name: min(s) for name, s in seconds.items()}
    ratios = [d / n for d, n in zip(seconds["DP-SGD"], seconds["non-private"], strict=True)]
    what = (f"SG-CycleGAN {args.preset} preset, {args.batch // 2} MRI + {args.batch // 2} US" if args.network == "gan"
            else f"batch {args.batch}, GroupNorm teacher + LSNet")
    print(f"{device.type} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; {args.size}x{args.size}, "
          f"{what}, fastest of {args.rounds} rounds x {args.steps} steps")
    print(f"non-private {args.network} step: {best['non-private']:.3f} s")
    print(f"DP-SGD {args.network} step:      {best['DP-SGD']:.3f} s")
    goal = " (goal <= 2.5x)" if args.network == "distillation" else ""
    print(f"DP-SGD / non-private: {best['DP-SGD'] / best['non-private']:.2f}x fastest rounds, "
          f"{statistics.median(ratios):.2f}x median round ratio{goal}")


if __name__ == "__main__":
    main()
