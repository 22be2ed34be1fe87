"""Cohort generation throughput: ultrasound and MRI images per second on one core.

Renders at 256x256 output (the issue's reference size) for every scanner / MR profile, then
the full pipeline (render + tint + burned-in text + DICOM encode + write) at each profile's own
matrix. Single process, so the figures are per core.

    python benchmarks/bench_cohort.py [--n 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from simulations.cohort.anatomy import sample_participant
from simulations.cohort.generate import generate_cohort
from simulations.cohort.mri import MRI_PROFILES, get_mri_profile, mri_grid, render_mri
from simulations.cohort.scanners import SCANNER_PROFILES, get_scanner_profile
from simulations.cohort.spec import CenterSpec, CohortSpec
from simulations.cohort.ultrasound import render_ultrasound


def _participants(n: int) -> list:
    return [sample_participant(np.random.default_rng(i), f"P{i}", label=i % 2) for i in range(n)]


def bench_us_render(n: int, size: int) -> dict[str, float]:
    """Single-frame US renders per second at ``size`` x ``size`` output, per profile."""
    people = _participants(n)
    rates = {}
    for name in SCANNER_PROFILES:
        profile = get_scanner_profile(name, rows=size, cols=size, pixel_size_mm=0.05)
        start = time.perf_counter()
        for i, p in enumerate(people):
            render_ultrasound(p, profile, np.random.default_rng(i), n_frames=1)
        rates[name] = n / (time.perf_counter() - start)
    return rates


def bench_mr_render(n: int, size: int) -> dict[str, float]:
    people = _participants(n)
    rates = {}
    for name in MRI_PROFILES:
        profile = get_mri_profile(name, matrix=size)
        start = time.perf_counter()
        for i, p in enumerate(people):
            rng = np.random.default_rng(i)
            x, y, pixel = mri_grid(profile, rng)
            render_mri(p, x, y, profile, rng, pixel_mm=pixel)
        rates[name] = n / (time.perf_counter() - start)
    return rates


def _one_center_spec(scanner: str, *, n_us: int, n_mri: int, mri: str | None) -> CohortSpec:
    center = CenterSpec(name=scanner, scanner=scanner, n_us=n_us, prevalence=0.5, mri=mri, n_mri=n_mri)
    return CohortSpec(name="bench", centers=(center,), extra_image_rate=0.0)


def bench_us_full(n: int, out: Path) -> dict[str, float]:
    """Frames per second through the generator itself (render + annotate + encode + write), per
    scanner profile at its own matrix."""
    rates = {}
    for name in SCANNER_PROFILES:
        start = time.perf_counter()
        summary = generate_cohort(_one_center_spec(name, n_us=n, n_mri=0, mri=None), out / name, seed=0, log=lambda _m: None)
        rates[name] = summary["centers"][0]["images"] / (time.perf_counter() - start)
    return rates


def bench_mr_full(n: int, out: Path) -> dict[str, float]:
    """MR images per second through the generator (one ultrasound participant per run included)."""
    rates = {}
    for name in MRI_PROFILES:
        start = time.perf_counter()
        summary = generate_cohort(_one_center_spec("clinic_j2k", n_us=1, n_mri=n, mri=name), out / name, seed=0, log=lambda _m: None)
        rates[name] = summary["centers"][0]["mr_patients"] / (time.perf_counter() - start)
    return rates


def _table(title: str, rates: dict[str, float], unit: str) -> None:
    print(f"\n{title}")
    for name, rate in rates.items():
        print(f"  {name:<20} {rate:7.1f} {unit}")
    print(f"  {'mean':<20} {np.mean(list(rates.values())):7.1f} {unit}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="participants per profile (default 40)")
    parser.add_argument("--size", type=int, default=256, help="render size for the per-core figure (default 256)")
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; one process")
    _table(f"US render, {args.size}x{args.size}, single frame", bench_us_render(args.n, args.size), "images/s/core")
    _table(f"MR render, {args.size}x{args.size}", bench_mr_render(args.n, args.size), "images/s/core")
    with tempfile.TemporaryDirectory() as tmp:
        _table("US full pipeline through the generator at each profile's matrix (render+annotate+encode+write)", bench_us_full(args.n // 2, Path(tmp)), "frames/s/core")
        _table("MR full pipeline at each profile's matrix", bench_mr_full(args.n // 2, Path(tmp)), "images/s/core")


if __name__ == "__main__":
    main()
