"""CPU latency at batch 1, one thread: LSNet@320 vs timm MobileViT-XXS@256, torch and onnxruntime.

Both models are measured in the same run, interleaved (one call of each per round), so a busy
machine slows both alike; figures are medians. Complexity figures use ecs_models.complexity:
1 multiply-add = 1 FLOP (GMACs), conv + linear + attention products, norms excluded.

    python benchmarks/bench_latency.py                 # torch + onnxruntime, 50 rounds
    python benchmarks/bench_latency.py --profile       # plus the top ops of each LSNet run
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ecs_models import create_model  # noqa: E402
from ecs_models.complexity import count_macs, count_parameters  # noqa: E402
from ecs_models.export import export_onnx  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="lsnet", help="model under test (registry name)")
    parser.add_argument("--size", type=int, default=320, help="its square input size (pixels)")
    parser.add_argument("--baseline", default="timm:mobilevit_xxs", help="reference model")
    parser.add_argument("--baseline-size", type=int, default=256, help="its input size (pixels)")
    parser.add_argument("--in-chans", type=int, default=1, help="input channels of both models")
    parser.add_argument("--rounds", type=int, default=50, help="timed calls per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls per model first")
    parser.add_argument(
        "--goal", type=float, default=0.6, help="target latency ratio model/baseline"
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime measurement")
    parser.add_argument(
        "--profile", action="store_true", help="print the costliest ops of the model"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    return parser.parse_args()


def interleaved_medians(
    calls: dict[str, Callable[[], object]], rounds: int, warmup: int
) -> dict[str, float]:
    """Median wall time in ms of each call, measured round-robin."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_profile(model: torch.nn.Module, x: torch.Tensor, rows: int = 8) -> str:
    from torch.profiler import profile

    with torch.inference_mode(), profile() as prof:
        for _ in range(5):
            model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def ort_profile(path: Path, x: np.ndarray, rows: int = 8) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(10):
        session.run(None, {"image": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 10 / 1e3
    total = sum(per_op.values())
    return "\n".join(
        f"  {op:<22s}{ms:7.2f} ms  {ms / total:5.1%}" for op, ms in per_op.most_common(rows)
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    specs = {args.model: args.size, args.baseline: args.baseline_size}
    models = {name: create_model(name, in_chans=args.in_chans).eval() for name in specs}
    inputs = {name: torch.randn(1, args.in_chans, s, s) for name, s in specs.items()}
    results: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        size = tuple(inputs[name].shape)
        results[name] = {
            "size": specs[name],
            "params_m": count_parameters(model) / 1e6,
            "gmacs": count_macs(model, size) / 1e9,
        }

    def torch_call(name: str) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return models[name](inputs[name])

        return call

    torch_ms = interleaved_medians({n: torch_call(n) for n in models}, args.rounds, args.warmup)
    for name, ms in torch_ms.items():
        results[name]["torch_ms"] = ms

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_onnx:
            paths = {
                n: export_onnx(m, Path(tmp) / f"{n.replace(':', '_')}.onnx", tuple(inputs[n].shape))
                for n, m in models.items()
            }
            sessions = {n: ort_session(p) for n, p in paths.items()}
            feeds = {n: {"image": inputs[n].numpy()} for n in models}
            ort_ms = interleaved_medians(
                {n: (lambda n=n: sessions[n].run(None, feeds[n])) for n in models},
                args.rounds,
                args.warmup,
            )
            for name, ms in ort_ms.items():
                results[name]["ort_ms"] = ms
        if args.profile:
            print(f"torch profile of {args.model}@{args.size} (5 calls):")
            print(torch_profile(models[args.model], inputs[args.model]))
            if not args.no_onnx:
                print(f"onnxruntime kernel time per op, {args.model}@{args.size}:")
                print(ort_profile(paths[args.model], inputs[args.model].numpy()))

    print(
        f"CPU, batch 1, 1 thread, in_chans {args.in_chans}; median of {args.rounds} interleaved calls"
    )
    print("GMACs: 1 multiply-add = 1 FLOP; conv + linear + attention products, norms excluded")
    header = (
        f"{'model':<22s}{'input':>7s}{'params M':>10s}{'GMACs':>8s}{'torch ms':>10s}{'ort ms':>9s}"
    )
    print(header)
    for name, r in results.items():
        ort_text = f"{r['ort_ms']:9.2f}" if "ort_ms" in r else f"{'-':>9s}"
        print(
            f"{name:<22s}{r['size']:>7d}{r['params_m']:10.3f}{r['gmacs']:8.3f}{r['torch_ms']:10.2f}{ort_text}"
        )
    model, base = results[args.model], results[args.baseline]
    ratios = {"torch": model["torch_ms"] / base["torch_ms"]}
    if "ort_ms" in model:
        ratios["ort"] = model["ort_ms"] / base["ort_ms"]
    for runtime, ratio in ratios.items():
        verdict = "meets" if ratio <= args.goal else "misses"
        print(
            f"ratio {args.model}/{args.baseline} ({runtime}): {ratio:.2f} ({verdict} the goal <= {args.goal})"
        )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
