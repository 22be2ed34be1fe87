"""Per-frame annotation removal time, with and without the caliper-shape stage, in one run.

    python benchmarks/bench_annotations.py [--repeat N] [--rows 600] [--cols 800]

Frames: caliper twins (simulations.cohort.caliper_twins) of a lossy grayscale scanner
(portable_ybr_cine stored as MONOCHROME2 JPEG) and a lossless one (premium_mono, JPEG-LS), at
``rows x cols`` pixels, with calipers, decoded as the pipeline does. Removal = detect_annotations
+ inpaint_background on the whole frame. "without shapes" runs the same code with
client.data.caliper_marks.detect_caliper_marks replaced by an empty mask (the detector before it
was added); "with shapes" is the detector as it is. CPU time per frame (time.process_time),
median of ``--repeat`` interleaved calls.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np

import client.data.annotations as annotations
from client.data.caliper_marks import detect_caliper_marks
from client.data.decode import decode_dicom
from simulations.cohort.annotations import CALIPER_GREEN
from simulations.cohort.caliper_twins import photometric_variants, write_caliper_twins
from simulations.cohort.scanners import SCANNER_PROFILES


def _no_shapes(gray: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.zeros(np.shape(gray), dtype=bool)


def _removal_seconds(frame: np.ndarray, shapes: bool) -> float:
    start = time.process_time()
    if shapes:
        mask = annotations.detect_annotations(frame)
    else:
        with mock.patch.object(annotations, "detect_caliper_marks", _no_shapes):
            mask = annotations.detect_annotations(frame)
    annotations.inpaint_background(frame, mask)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="calls per frame and variant (default 5)")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--cols", type=int, default=800)
    args = parser.parse_args(argv)
    cases = {"portable_ybr_cine MONOCHROME2 (JPEG, lossy)": ("portable_ybr_cine", "MONOCHROME2"),
             "premium_mono MONOCHROME2 (JPEG-LS, lossless)": ("premium_mono", "MONOCHROME2")}
    print(f"{platform.platform()}, Python {platform.python_version()}, numpy {np.__version__}; "
          f"{args.rows}x{args.cols} frames, CPU ms per frame, median of {args.repeat}")
    print("| frame | without shapes | with shapes | of which the shape stage |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-annotations-") as tmp:
        for title, (name, photometric) in cases.items():
            profile = replace(photometric_variants(SCANNER_PROFILES[name])[photometric], rows=args.rows, cols=args.cols)
            twins = write_caliper_twins(Path(tmp) / name, profile, seed=3, caliper_color=CALIPER_GREEN)
            frame = decode_dicom(twins.with_calipers).frames[0]
            background = annotations.local_background(frame)
            times: dict[str, list[float]] = {"without": [], "with": [], "stage": []}
            for _ in range(args.repeat):
                times["without"].append(_removal_seconds(frame, shapes=False))
                times["with"].append(_removal_seconds(frame, shapes=True))
                start = time.process_time()
                detect_caliper_marks(frame, background)
                times["stage"].append(time.process_time() - start)
            ms = {key: 1000 * float(np.median(values)) for key, values in times.items()}
            print(f"| {title} | {ms['without']:.0f} | {ms['with']:.0f} | {ms['stage']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
