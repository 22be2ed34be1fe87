"""``ecs-screen MODEL INPUT [--json] [--heatmap DIR]``: screen ultrasound DICOM with a model bundle.

Examples::

    ecs-screen runs/train/main/model scan.dcm              # one file: a readable verdict
    ecs-screen runs/train/main/model clinic_folder/ > out.csv    # a folder: CSV on stdout
    ecs-screen model/ scan.dcm --json --heatmap heatmaps/  # JSON list; PNG overlays

The probability is the model's P(myometrial invasion); the decision is "positive" (refer) at
or above the bundle's operating point, else "negative". It is a screening flag, not a diagnosis.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from clinic.cli import json_safe, progress_printer, user_errors
from clinic.heatmap import occlusion_map, write_overlay
from clinic.model import ScreeningModel
from clinic.screen import ScreenResult, screen_all, to_csv

DESCRIPTION = ("Screen transvaginal ultrasound DICOM with a model bundle: per image the probability of myometrial invasion, the decision at the bundle's operating point and warnings when the image is outside the model's domain. One file prints a verdict; a folder prints a CSV.")
PROG = "ecs-screen"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     epilog="A decision is a screening flag for referral, not a diagnosis.")
    parser.add_argument("model", type=Path, help="the model bundle: its folder, <name>.onnx or operating_point.json")
    parser.add_argument("input", type=Path, help="a DICOM file or a folder of them (searched recursively)")
    parser.add_argument("--json", action="store_true", help="print one JSON list: file, probability, decision, warnings")
    parser.add_argument("--heatmap", type=Path, metavar="DIR",
                        help="write <file>.png occlusion-sensitivity overlays (red: what raised the probability)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _heatmaps(model: ScreeningModel, results: list[ScreenResult], folder: Path, quiet: bool) -> None:
    for result in results:
        if result.prepared is None or result.probability is None:
            continue
        for index, frame in enumerate(result.prepared.inputs):
            suffix = f"_frame{index}" if len(result.prepared.inputs) > 1 else ""
            name = result.file.replace("/", "__").replace("\\", "__") + suffix + ".png"
            path = write_overlay(folder / name, frame, occlusion_map(model, frame))
            if not quiet:
                print(f"[{PROG}] heatmap {path}", file=sys.stderr, flush=True)


def _print_one(result: ScreenResult, threshold: float) -> None:
    if result.probability is None:
        print(f"{result.file}: not screened")
    else:
        print(f"{result.file}: probability of myometrial invasion {result.probability:.3f} -> {result.decision} "
              f"(operating point {threshold:.3f}; a screening flag, not a diagnosis)")
    for warning in result.warnings:
        print(f"  warning: {warning}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ecs-screen``; returns 0 (files that cannot be screened are reported, not errors)."""
    args = _parser().parse_args(argv)
    with user_errors(PROG):
        if not args.input.exists():
            raise FileNotFoundError(f"input not found: {args.input}")
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
        model = ScreeningModel(args.model, threads=args.threads)
        folder = args.input.is_dir()
        results = screen_all(model, args.input, progress_printer(PROG, args.quiet or not folder))
        if folder and not results:
            raise FileNotFoundError(f"no files in {args.input}")
        if args.heatmap is not None:
            _heatmaps(model, results, args.heatmap, args.quiet)
        if args.json:
            print(json.dumps(json_safe([r.to_dict() for r in results]), indent=2))
        elif folder:
            sys.stdout.write(to_csv(results, model.threshold))
        else:
            _print_one(results[0], model.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
