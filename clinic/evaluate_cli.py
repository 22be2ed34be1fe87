"""``ecs-evaluate MODEL DATA_DIR [--labels CSV] [--json]``: validate a model bundle on a hospital's
own labelled DICOM folder, without training and without Flower.

Examples::

    ecs-evaluate received/model /data/tvus                   # DATA_DIR/manifest.csv holds the labels
    ecs-evaluate received/model /data/tvus --labels labels.csv --json > validation.json

MODEL is the bundle (its folder, ``<name>.onnx`` or ``operating_point.json``), a run folder
holding ``model/``, or a centralized run's ``checkpoint.pt`` (or its folder without ``model/``):
with the training install, exported to a temporary bundle by the run's exporter and evaluated
like one; the clinic install refuses it with the install command. Metrics are at the bundle's
operating point (chosen on the training run's validation data, not on this folder), with 95 %
patient-level bootstrap intervals; per-file scores go to ``--scores`` (CSV).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from clinic.checkpoint import checkpoint_of, export_checkpoint
from clinic.cli import json_safe, progress_printer, user_errors
from clinic.evaluate import evaluate_site, score_site, write_scores
from clinic.model import ScreeningModel

DESCRIPTION = ("Validate a model bundle on a labelled DICOM folder: AUC, sensitivity, specificity, PPV, NPV, F1 and PR-AUC at the bundle's operating point, with patient-level bootstrap intervals, and per-file scores.")
PROG = "ecs-evaluate"
SHOWN = ("auc", "sensitivity", "specificity", "ppv", "npv", "f1", "pr_auc")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("model", type=Path, help="model bundle (folder, .onnx, operating_point.json), a run folder or its checkpoint.pt")
    parser.add_argument("data_dir", type=Path, help="the site's DICOM folder")
    parser.add_argument("--labels", type=Path, metavar="CSV",
                        help="label file (client.data.labels format); default DATA_DIR/manifest.csv or DATA_DIR/<center>/manifest.csv")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--scores", type=Path, default=Path("ecs-evaluate-scores.csv"), metavar="CSV",
                        help="per-file scores (default ./ecs-evaluate-scores.csv)")
    parser.add_argument("--resamples", type=int, default=2000, help="patient bootstrap draws (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _bundle_path(model: Path, scratch: ExitStack) -> Path:
    """The bundle to load; a checkpoint is exported to a temporary bundle that ``scratch`` removes."""
    checkpoint = checkpoint_of(model)
    if checkpoint is not None:
        folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="ecs-evaluate-")))
        return export_checkpoint(checkpoint, folder / "model")
    if model.is_dir() and (model / "model" / "operating_point.json").is_file():
        return model / "model"  # a run folder
    return model


def _num(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"  # NaN: undefined (no negatives called, ...)


def _table(doc: dict) -> str:
    lines = [f"{doc['n_images']} images of {doc['n_patients']} patients ({doc['n_positive']} positive), "
             f"{doc['n_refused']} refused; operating point {doc['threshold']:.4f}"]
    for name in SHOWN:
        m = doc[name]
        lines.append(f"  {name:<12} {_num(m['value'])}  ({100 * doc['ci_level']:.0f} % CI {_num(m['ci_low'])}-{_num(m['ci_high'])})")
    for center, m in doc.get("by_center", {}).items():
        lines.append(f"  {center}: n={m['n']} AUC {_num(m['auc']['value'])} sens {_num(m['sensitivity']['value'])} "
                     f"spec {_num(m['specificity']['value'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ecs-evaluate``; returns 0."""
    args = _parser().parse_args(argv)
    with user_errors(PROG), ExitStack() as scratch:
        if not args.data_dir.is_dir():
            raise NotADirectoryError(f"data folder not found: {args.data_dir}")
        if args.resamples < 1:
            raise ValueError("--resamples must be >= 1")
        model = ScreeningModel(_bundle_path(args.model, scratch))
        scored = score_site(model, args.data_dir, args.labels, progress_printer(PROG, args.quiet))
        doc = evaluate_site(scored, model.threshold, resamples=args.resamples, seed=args.seed)
        doc["scores_csv"] = str(write_scores(args.scores, scored, model.threshold))
        doc["model"] = {"onnx": str(model.spec.onnx_path), **model.spec.document.get("model", {}),
                        "run": model.spec.document.get("run")}
        if checkpoint_of(args.model) is not None:  # the bundle was temporary: name what was evaluated
            doc["model"]["checkpoint"] = str(checkpoint_of(args.model))
        doc["refused"] = [{"file": s.result.file, "reason": " | ".join(s.result.warnings)}
                          for s in scored if s.result.probability is None]
        if args.json:
            print(json.dumps(json_safe(doc), indent=2, allow_nan=False))
        else:
            print(_table(doc))
            print(f"per-file scores: {doc['scores_csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
