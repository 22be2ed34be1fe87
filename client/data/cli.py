"""``ecs-data``: check a site's DICOM folder before joining the federation.

    ecs-data check DIR [--labels CSV] [--json] [--cache-dir D] [--frame-policy P]

Exit status: 0 when usable (quarantined files are warnings), 2 on fatal problems (label file
error, folder missing, no usable file), 1 on a usage error. With ``--json`` exactly one JSON
document goes to stdout; progress always goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from client.data.preprocess import PreprocessConfig
from client.data.site import SiteReport, scan_site

__all__ = ["main"]

EXIT_OK = 0
EXIT_FATAL = 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecs-data",
        description="Inspect a hospital's ultrasound / MR DICOM folder for the ECS federation.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="decode every file, report modality/label/center counts, quarantine and PHI",
        description="Decode and preprocess every DICOM file of a site and report what is usable.",
    )
    check.add_argument("data_dir", metavar="DIR", help="the site's DICOM folder")
    check.add_argument("--labels", metavar="CSV", default=None,
                       help="label file (default: DIR/manifest.csv or DIR/*/manifest.csv)")
    check.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    check.add_argument("--cache-dir", metavar="D", default=None,
                       help="also fill the preprocessed-frame cache here for training")
    check.add_argument("--frame-policy", choices=("middle", "all", "stride"), default="middle",
                       help="frames checked per multi-frame file (default: middle)")
    check.add_argument("--frame-stride", type=int, default=1, metavar="K",
                       help="every K-th frame with --frame-policy stride")
    check.add_argument("--output-size", type=int, default=256, metavar="S",
                       help="square output side in pixels (default 256)")
    check.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def _progress_printer(stream: TextIO) -> object:
    def report(done: int, total: int, path: str) -> None:
        step = max(1, total // 20)
        if total >= 10 and (done % step == 0 or done == total):
            print(f"[{done}/{total}] {path}", file=stream, flush=True)

    return report


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-"


def _print_human(report: SiteReport, out: TextIO) -> None:
    summary = report.summary()
    print(f"Site folder: {report.data_dir}", file=out)
    if report.label_files:
        print(f"Label file(s): {', '.join(report.label_files)}", file=out)
    for error in report.fatal_errors:
        print(f"FATAL: {error}", file=out)
    print(f"Files: {summary['files']}  usable: {summary['ok']}  "
          f"quarantined: {summary['quarantined']}  frames: {summary['frames']}", file=out)
    print(f"  by modality:    {_format_counts(summary['by_modality'])}", file=out)
    print(f"  by label:       {_format_counts(summary['by_label'])}", file=out)
    print(f"  by center:      {_format_counts(summary['by_center'])}", file=out)
    print(f"  by photometric: {_format_counts(summary['by_photometric'])}", file=out)
    print(f"  spacing known:  {summary['spacing_known']}/{summary['ok']}", file=out)
    if report.files:
        print("\nFile                                      status  mod  frames  size       "
              "spacing(mm)    photometric", file=out)
    for f in report.files:
        if f.status == "ok":
            spacing = "unknown" if not f.spacing_mm else f"{f.spacing_mm[0]:.4f}x{f.spacing_mm[1]:.4f}"
            size = f"{f.rows}x{f.cols}"
            print(f"{f.path[-42:]:42s} ok      {f.modality or '?':4s} {f.frames}/{f.n_frames_total:<5} "
                  f"{size:10s} {spacing:14s} {f.photometric}", file=out)
    if report.quarantined:
        print("\nQuarantined (left out of training):", file=out)
        for path, reason in report.quarantined:
            print(f"  {path}: {reason}", file=out)
    phi = report.phi_summary()
    if phi:
        print("\nPHI found in headers (tag: files) -- de-identify before sharing images:", file=out)
        for tag, count in phi.items():
            print(f"  {tag}: {count}", file=out)


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = PreprocessConfig(frame_policy=args.frame_policy, frame_stride=args.frame_stride,
                               output_size=args.output_size)
    except ValueError as exc:
        print(f"ecs-data: error: {exc}", file=sys.stderr)
        return 1
    progress = None if args.quiet else _progress_printer(sys.stderr)
    report = scan_site(args.data_dir, args.labels, cfg, cache_dir=args.cache_dir,
                       progress=progress)  # type: ignore[arg-type]
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_human(report, sys.stdout)
    for path, reason in report.quarantined:
        if args.json:
            print(f"warning: quarantined {path}: {reason}", file=sys.stderr)
    return EXIT_FATAL if report.is_fatal else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ecs-data``; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
