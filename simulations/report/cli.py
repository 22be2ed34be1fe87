"""``ecs-report RUN_DIR [--out FILE]``: the self-contained HTML report of a run.

Works on the folder of one ``ecs-train`` or ``ecs-simulate`` run, of an ``ecs-simulate
experiment=compare`` comparison and of an ``ecs-train`` ablation. A folder that is not a finished
run, or an unreadable file in it, ends with ``ecs-report: <problem>`` and exit code 1, without a
traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from simulations.report.build import REPORT_NAME, write_report
from simulations.report.run_files import ReportError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecs-report",
        description="Write a self-contained HTML report (no network resources, images embedded) of a finished run: "
                    "configuration and versions, cohort per center, per-round curves, ROC curves with patient-bootstrap "
                    "bands on the held-out centers, the per-center table, comparison tables, the privacy record, model "
                    "cost, images, saliency and the model against a simulated sonographer.",
        epilog="Examples:\n  ecs-report runs/federated/quick/20260101-120000\n"
               "  ecs-report runs/federated/compare/manual --out compare.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder (ecs-train, ecs-simulate or a comparison)")
    parser.add_argument("--out", metavar="FILE", help=f"where to write the HTML (default: RUN_DIR/{REPORT_NAME})")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``ecs-report``)."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        path = write_report(args.run_dir, args.out, log=lambda m: print(m, file=sys.stderr, flush=True))
    except ReportError as exc:
        sys.exit(f"ecs-report: {exc}")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # a run file with other content than its writer gives it
        sys.exit(f"ecs-report: {args.run_dir}: a run file does not hold what ecs-train / ecs-simulate write "
                 f"({type(exc).__name__}: {exc})")
    except OSError as exc:  # the output cannot be written, a file vanished while reading
        sys.exit(f"ecs-report: {exc.filename or ''}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        sys.exit("ecs-report: interrupted")
    print(f"{path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
