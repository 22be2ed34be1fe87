"""CPU latency at batch 1, one thread: LSNet@320 vs timm MobileViT-XXS@256, torch and onnxruntime.

Both models are measured in the same run, interleaved (one call of each per round), so a busy
machine slows both alike; figures are medians, and the ratio model/baseline is what to compare
across runs (``--repeats`` measures it several times; the load average is printed with it).
Complexity figures use ecs_models.complexity: 1 multiply-add = 1 FLOP (GMACs), conv + linear +
attention products, norms excluded. The ONNX files are written by ``ecs_models.export.export_onnx``,
the function ``ecs-train`` and ``ecs-simulate`` export the student with.

    python benchmarks/bench_latency.py                 # torch + onnxruntime, 50 rounds
    python benchmarks/bench_latency.py --repeats 3     # the ratios measured 3 times
    python benchmarks/bench_latency.py --profile       # plus where the model's time goes

Issue 17 targets (onnxruntime, 1 thread, batch 1): floor ratio <= 1.0 (``--floor``), goal
ratio <= 0.71 (the FLOP ratio, ``--goal``) and under 10 ms (``--goal-ms``); torch eager <= 1.0.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import re
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
from ecs_models.latency import cpu_name  # noqa: E402


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
        "--repeats", type=int, default=1, help="measure the interleaved rounds this many times"
    )
    parser.add_argument(
        "--goal", type=float, default=0.71, help="target latency ratio model/baseline"
    )
    parser.add_argument(
        "--floor", type=float, default=1.0, help="latency ratio model/baseline to stay under"
    )
    parser.add_argument(
        "--goal-ms", type=float, default=10.0, help="target onnxruntime latency of the model"
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime measurement")
    parser.add_argument(
        "--profile", action="store_true", help="print the costliest ops of the model"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of the model under test, e.g. selection_region=1 "
                        "(LSNet with per-query selection); repeatable")
    parser.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of the reference model; repeatable")
    return parser.parse_args()


def _overrides(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings -> create_model keywords (values as Python literals where they parse)."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bench_latency: --set {item!r} is not KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _label(name: str, overrides: dict[str, object]) -> str:
    return name + ("[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]" if overrides else "")


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


def _ort_category(node: str, op: str) -> str:
    """Where an LSNet/MobileViT node's time goes, from its exported name."""
    if op == "TopK":
        return "top-k selection (TopK)"
    if "/generator/" in node:
        return "gradient generator (X, X X^T)"
    if re.search(r"/attn/(q|k|v|proj|qkv)/", node):
        return "attention q/k/v/proj linears"
    if "/attn/" in node:
        return "attention core (gathers, products, softmax)"
    if "/ffn/" in node or "/mlp/" in node:
        return "feed-forward (incl. its fold/unfold)"
    if "vit_blocks" in node and "/norm" in node:
        return "layer norms"
    if "vit_blocks" in node and not re.search(r"conv_(kxk|1x1|proj|fusion)", node):
        return "block unfold/fold, index arithmetic, residuals"
    return "convolution backbone (stem, MV2, block convs, head)"


def ort_profile(path: Path, x: np.ndarray, rows: int = 8, runs: int = 20) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"image": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    per_category: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            ms = event["dur"] / runs / 1e3
            op = event["args"]["op_name"]
            per_op[op] += ms
            per_category[_ort_category(event["name"].removesuffix("_kernel_time"), op)] += ms
    total = sum(per_op.values())
    lines = [f"  kernel time {total:.2f} ms per run (profiling on; {runs} runs)", "  by op type:"]
    lines += [f"    {op:<22s}{ms:7.2f} ms  {ms / total:5.1%}" for op, ms in per_op.most_common(rows)]
    lines.append("  by part of the model (node names):")
    lines += [f"    {c:<52s}{ms:7.2f} ms  {ms / total:5.1%}" for c, ms in per_category.most_common()]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    options = (_overrides(args.set), _overrides(args.baseline_set))
    names = (args.model, args.baseline)
    args.model, args.baseline = (_label(n, o) for n, o in zip(names, options, strict=True))
    if args.model == args.baseline:
        raise SystemExit("bench_latency: the model and the baseline are the same; change one with --set")
    specs = {args.model: args.size, args.baseline: args.baseline_size}
    models = {
        label: create_model(name, in_chans=args.in_chans, **opts).eval()
        for label, name, opts in zip(specs, names, options, strict=True)
    }
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

    load = {"before": _load()}
    torch_runs = [
        interleaved_medians({n: torch_call(n) for n in models}, args.rounds, args.warmup)
        for _ in range(args.repeats)
    ]
    for name in models:
        results[name]["torch_ms"] = statistics.median(r[name] for r in torch_runs)

    ort_runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_onnx:
            paths = {
                n: export_onnx(m, Path(tmp) / f"{n.replace(':', '_')}.onnx", tuple(inputs[n].shape))
                for n, m in models.items()
            }
            sessions = {n: ort_session(p) for n, p in paths.items()}
            feeds = {n: {"image": inputs[n].numpy()} for n in models}
            ort_runs = [
                interleaved_medians(
                    {n: (lambda n=n: sessions[n].run(None, feeds[n])) for n in models},
                    args.rounds,
                    args.warmup,
                )
                for _ in range(args.repeats)
            ]
            for name in models:
                results[name]["ort_ms"] = statistics.median(r[name] for r in ort_runs)
        load["after"] = _load()
        if args.profile:
            print(f"torch profile of {args.model}@{args.size} (5 calls):")
            print(torch_profile(models[args.model], inputs[args.model]))
            if not args.no_onnx:
                print(f"onnxruntime profile of {args.model}@{args.size}, 1 thread:")
                print(ort_profile(paths[args.model], inputs[args.model].numpy()))

    import onnxruntime

    print(
        f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; load average (1/5/15 min) "
        f"{load['before']} before, {load['after']} after"
    )
    print(
        f"CPU, batch 1, 1 thread, in_chans {args.in_chans}; median of {args.rounds} interleaved "
        f"calls{f', {args.repeats} repeats' if args.repeats > 1 else ''}"
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
    per_repeat = {"torch": [r[args.model] / r[args.baseline] for r in torch_runs]}
    if ort_runs:
        per_repeat["ort"] = [r[args.model] / r[args.baseline] for r in ort_runs]
    ratios = {runtime: statistics.median(values) for runtime, values in per_repeat.items()}
    flop_ratio = model["gmacs"] / base["gmacs"]
    for runtime, ratio in ratios.items():
        each = ", ".join(f"{v:.2f}" for v in per_repeat[runtime])
        floor = "meets" if ratio <= args.floor else "misses"
        goal = "meets" if ratio <= args.goal else "misses"
        print(
            f"ratio {args.model}/{args.baseline} ({runtime}): {ratio:.2f} (repeats: {each}); "
            f"{floor} the floor <= {args.floor}, {goal} the goal <= {args.goal} "
            f"(FLOP ratio {flop_ratio:.2f})"
        )
    if "ort_ms" in model:
        verdict = "meets" if model["ort_ms"] < args.goal_ms else "misses"
        print(f"{args.model} onnxruntime {model['ort_ms']:.2f} ms: {verdict} the goal < {args.goal_ms} ms")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"results": results, "ratios": ratios, "per_repeat": per_repeat, "load": load},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
