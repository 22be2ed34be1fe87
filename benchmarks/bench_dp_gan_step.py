"""Time of one patient-level DP-SGD SG-CycleGAN step against the non-private step (issue 15).

Non-private: :class:`~ecs_models.training.gan.GanTrainer` on ``batch`` MRI and ``batch`` US images
(generator update, then discriminator update, replay buffers). DP-SGD: what a site runs under
``privacy=local`` (:class:`~ecs_models.training.gan_dp.DpGanTrainer`): the same ``2 x batch``
images as one mixed batch of patients, Opacus's per-example gradients over every GAN parameter,
the joint clip, the noise and the accountant's step. Same model preset, same random images.
Setups are interleaved round by round so that a busy machine slows both alike; printed: each
round's ratio and the fastest round of each setup, with the load average.

    python benchmarks/bench_dp_gan_step.py                    # CPU recipe: cpu preset, 128 px, 4 + 4
    python benchmarks/bench_dp_gan_step.py --preset paper --size 256 --batch 4 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ecs_models.sg_cyclegan import create_sg_cyclegan  # noqa: E402
from ecs_models.training.dp_sgd import DpSgd, PrivacyAccount  # noqa: E402
from ecs_models.training.gan import gan_trainer  # noqa: E402
from ecs_models.training.gan_dp import DpGanTrainer  # noqa: E402
from ecs_models.training.runtime import resolve_device  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help="SG-CycleGAN preset (cpu | paper)")
    parser.add_argument("--size", type=int, default=128, help="square image size in pixels (multiple of 8)")
    parser.add_argument("--batch", type=int, default=4, help="images of each modality per step (DP: 2 x batch patients)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and setup")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser.parse_args()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    mri = [torch.rand(args.batch, 1, args.size, args.size) * 2 - 1 for _ in range(args.steps)]
    us = [torch.rand(args.batch, 1, args.size, args.size) * 2 - 1 for _ in range(args.steps)]
    is_us = torch.cat([torch.zeros(args.batch, dtype=torch.bool), torch.ones(args.batch, dtype=torch.bool)])
    plain = gan_trainer(create_sg_cyclegan(args.preset, image_size=args.size), total_steps=1000, lr=2e-4, seed=0,
                        device=device)
    account = PrivacyAccount("rdp", 1e-5, 1.0, noise_multiplier=1.0)
    private = DpGanTrainer(create_sg_cyclegan(args.preset, image_size=args.size),
                           DpSgd(account, sample_rate=0.1, expected_batch_size=2 * args.batch, seed=0),
                           total_steps=1000, lr=2e-4, device=device)

    def run(name: str, steps: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for m, u in zip(mri[:steps], us[:steps], strict=True):
            if name == "non-private":
                plain.train_step(m, u)
            else:
                private.train_step(torch.cat([m, u]), is_us)
        _sync(device)
        return (time.perf_counter() - start) / steps

    for name in ("non-private", "DP-SGD"):  # warm-up
        run(name, 1)
    seconds: dict[str, list[float]] = {"non-private": [], "DP-SGD": []}
    for index in range(args.rounds):
        for name in seconds:
            seconds[name].append(run(name, args.steps))
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.3f} s/step" for n, s in seconds.items())
              + f", ratio {seconds['DP-SGD'][-1] / seconds['non-private'][-1]:.2f}x", flush=True)
    private.close()
    best = {name: min(s) for name, s in seconds.items()}
    ratios = [d / n for d, n in zip(seconds["DP-SGD"], seconds["non-private"], strict=True)]
    print(f"{device.type} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; SG-CycleGAN {args.preset} preset, "
          f"{args.size}x{args.size}, {args.batch} MRI + {args.batch} US per step, fastest of {args.rounds} rounds x "
          f"{args.steps} steps")
    print(f"non-private GAN step: {best['non-private']:.3f} s")
    print(f"DP-SGD GAN step:      {best['DP-SGD']:.3f} s")
    print(f"DP-SGD / non-private: {best['DP-SGD'] / best['non-private']:.2f}x fastest rounds, "
          f"{statistics.median(ratios):.2f}x median round ratio")


if __name__ == "__main__":
    main()
