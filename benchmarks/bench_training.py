"""Training throughput (images/s) of teacher + student distillation against the student alone.

Both run the library's own training loop (``train_stage``: forward, the teacher's backward that
also yields the distillation targets, the student's backward, clipping, Adam) on random
[B, 1, S, S] batches, interleaved round by round so that a busy machine slows both alike;
figures are medians over rounds.

    python benchmarks/bench_training.py                          # CPU recipe: 128 px, batch 8
    python benchmarks/bench_training.py --size 320 --batch 32 --device cuda   # the paper's input
    python benchmarks/bench_training.py --size 320 --peak-memory   # one distillation step's peak memory

On CUDA the peak memory of each setup is printed too (``max_memory_allocated``); on CPU,
``--peak-memory`` runs one distillation step alone in this process and prints its peak resident
set size above the models' (``ru_maxrss``, which only grows, hence one setup per process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ecs_models import create_model  # noqa: E402
from ecs_models.training.distill import DistillationModel, StageConfig, train_stage  # noqa: E402
from ecs_models.training.runtime import resolve_device  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="square input size in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=8, help="images per optimiser step")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per round and setup")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per setup first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peak-memory", action="store_true",
                        help="CPU: one distillation step only; print its peak resident memory (MiB)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def build(name: str, size: int, device: torch.device) -> DistillationModel:
    """'distillation': LSNet + the wide teacher (+ projectors); 'student': LSNet alone."""
    student = create_model("lsnet", img_size=size, in_chans=1)
    teacher = create_model("teacher", img_size=size, in_chans=1) if name == "distillation" else None
    return DistillationModel(student, teacher).to(device)


def timed_steps(model: DistillationModel, batches: list, device: torch.device) -> float:
    """Seconds for one ``train_stage`` epoch over ``batches`` (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_stage(model, batches, StageConfig(epochs=1, lr=1e-4, warmup_fraction=0.0), device=device, log=lambda _m: None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    batches = [(torch.randn(args.batch, 1, args.size, args.size), torch.randint(0, 2, (args.batch,)))
               for _ in range(args.steps)]
    if args.peak_memory:
        model = build("distillation", args.size, device)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        timed_steps(model, batches[:1], device)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"one distillation step, {args.size}x{args.size}, batch {args.batch}: peak resident "
              f"{peak:.0f} MiB, {peak - before:.0f} MiB above the built models")
        return
    models = {name: build(name, args.size, device) for name in ("distillation", "student")}
    for model in models.values():
        timed_steps(model, batches[: args.warmup], device)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    peak_mib: dict[str, float] = {}
    for round_index in range(args.rounds):
        for name, model in models.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds[name].append(timed_steps(model, batches, device))
            if device.type == "cuda":
                peak_mib[name] = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{name} {args.steps * args.batch / s[-1]:.1f} images/s" for name, s in seconds.items()), flush=True)
    rates = {name: args.steps * args.batch / statistics.median(s) for name, s in seconds.items()}
    print(f"{device.type} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.size}x{args.size}, batch {args.batch}, "
          f"median of {args.rounds} rounds x {args.steps} steps")
    print(f"teacher + student (distillation): {rates['distillation']:.1f} images/s")
    print(f"student alone:                    {rates['student']:.1f} images/s")
    for name, mib in peak_mib.items():
        print(f"peak CUDA memory, {name}: {mib:.0f} MiB")
    print(f"distillation / student-alone time per image: {rates['student'] / rates['distillation']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "images_per_s": rates,
                                               "peak_cuda_mib": peak_mib}, indent=2))


if __name__ == "__main__":
    main()
