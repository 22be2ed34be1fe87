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
from simulations.cohort.annotations import apply_tint, burn_in_annotations, screen_text_lines
from simulations.cohort.dicom_writer import (
    UltrasoundRegion,
    make_identity,
    write_mri,
    write_ultrasound,
)
from simulations.cohort.mri import MRI_PROFILES, get_mri_profile, mri_grid, render_mri
from simulations.cohort.scanners import SCANNER_PROFILES, get_scanner_profile
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


def bench_us_full(n: int, out: Path) -> dict[str, float]:
    """Frames per second through render + annotate + encode + write at the profile's matrix."""
    people = _participants(n)
    rates = {}
    for name, profile in SCANNER_PROFILES.items():
        frames_done = 0
        start = time.perf_counter()
        for i, p in enumerate(people):
            rng = np.random.default_rng(i)
            render = render_ultrasound(p, profile, rng)
            g = render.geometry
            ident = make_identity(center="bench", patient_id=p.participant_id, index=0, modality="US", seed=0)
            text = screen_text_lines(profile, institution=ident.institution_name, patient_id=p.participant_id,
                                     study_date=ident.study_date, study_time=ident.study_time)
            rgb = np.stack([
                burn_in_annotations(apply_tint(f, profile.tint), layout=profile.annotation_layout, text_lines=text,
                                    calipers=[], caliper_label=None, depth_mm=profile.depth_mm, fan_bbox=g.bbox,
                                    rng=np.random.default_rng(0), pixel_size_mm=g.pixel_mm)
                for f in render.frames
            ])
            region = UltrasoundRegion.from_fan(g.bbox, (g.apex_col, g.apex_row), g.pixel_mm, profile.center_frequency_mhz)
            write_ultrasound(out / f"{name}_{i}.dcm", rgb, profile=profile, identity=ident, region=region)
            frames_done += len(rgb)
        rates[name] = frames_done / (time.perf_counter() - start)
    return rates


def bench_mr_full(n: int, out: Path) -> dict[str, float]:
    people = _participants(n)
    rates = {}
    for name, profile in MRI_PROFILES.items():
        start = time.perf_counter()
        for i, p in enumerate(people):
            rng = np.random.default_rng(i)
            x, y, pixel = mri_grid(profile, rng)
            image = render_mri(p, x, y, profile, rng, pixel_mm=pixel)
            ident = make_identity(center="bench", patient_id=p.participant_id, index=0, modality="MR", seed=0)
            write_mri(out / f"{name}_{i}.dcm", image, identity=ident, pixel_spacing_mm=(pixel, pixel),
                      slice_thickness_mm=profile.slice_thickness_mm, repetition_time_ms=profile.repetition_time_ms,
                      echo_time_ms=profile.echo_time_ms, field_strength_t=profile.field_strength_t,
                      manufacturer=profile.manufacturer, model=profile.model)
        rates[name] = n / (time.perf_counter() - start)
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
        _table("US full pipeline at each profile's matrix (render+annotate+encode+write)", bench_us_full(args.n // 2, Path(tmp)), "frames/s/core")
        _table("MR full pipeline at each profile's matrix", bench_mr_full(args.n // 2, Path(tmp)), "images/s/core")


if __name__ == "__main__":
    main()
