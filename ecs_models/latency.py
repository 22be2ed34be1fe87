"""The exported model's latency, measured where it is exported: ONNX Runtime on one CPU thread,
batch 1 (how ``ecs-screen`` runs it). Recorded in the bundle's ``operating_point.json``
(``latency`` block, :func:`ecs_models.bundle.export_student`) and shown by ``ecs-report``.

The figure is the exporting machine's: a clinic's computer gives its own (benchmarks/
bench_screen.py measures decode and preprocessing too). Imports no torch.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

__all__ = ["cpu_name", "measure_onnx_latency"]

WARMUP_RUNS = 3  # first runs allocate and pick kernels: not timed
TIMED_RUNS = 20


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_onnx_latency(onnx_path: str | Path, shape: tuple[int, ...], *, warmup: int = WARMUP_RUNS,
                         runs: int = TIMED_RUNS) -> dict[str, Any]:
    """Time ``runs`` forward passes of ``onnx_path`` on one random float32 input of ``shape``
    (e.g. ``(1, 1, S, S)``) after ``warmup`` untimed ones; one intra-op and one inter-op thread.

    Returns ``{"p50_ms", "p95_ms"`` (milliseconds per forward pass), ``"runs", "warmup", "threads",
    "batch", "provider", "cpu", "measured_on"}``: ``measured_on`` says the figure is the exporting
    machine's.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = (time.perf_counter() - start) * 1e3
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "runs": runs, "warmup": warmup, "threads": 1,
            "batch": int(shape[0]), "provider": "onnxruntime CPUExecutionProvider", "cpu": cpu_name(),
            "measured_on": "the exporting machine, at export (not the machine that will run the model)"}
