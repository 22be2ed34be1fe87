"""Validate a received model on a hospital's own labelled DICOM folder (``ecs-evaluate``).

The folder is read as ``ecs-data check`` reads it (:func:`client.data.site.scan_site`: the label
file format of :mod:`client.data.labels`, its refusals, quarantine of files that do not decode),
with the bundle's preprocessing recipe; every labelled ultrasound file is then screened as
``ecs-screen`` screens it (:func:`clinic.screen.screen_file`: same preprocessing, same domain
check). Metrics come from :mod:`ecs_models.evaluation` at the bundle's fixed operating point, with
patient-level bootstrap intervals: per center when the folder holds several, and pooled. MR rows
are not read (the model reads ultrasound); refused files are listed and left out of the metrics.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.data.cache import PreprocessedCache
from client.data.site import label_sources, scan_site
from clinic.model import ScreeningModel
from clinic.screen import ScreenResult, screen_file
from ecs_models.evaluation import METRICS, evaluate_groups

__all__ = ["ScoredFile", "evaluate_site", "score_site", "write_scores"]

POOLED = "pooled"


@dataclass(frozen=True)
class ScoredFile:
    """One labelled ultrasound file of the site and what the model made of it."""

    center: str
    patient_id: str
    label: int
    result: ScreenResult


def score_site(model: ScreeningModel, data_dir: Path, labels_csv: Path | None,
               progress: Callable[[int, int, str], None] | None = None) -> list[ScoredFile]:
    """Screen every labelled US file of the site (files that fail are kept, refused).

    Raises:
        ValueError: label-file problems (as ``ecs-data check`` reports them), an unusable
            folder, or a folder without labels.
    """
    if not label_sources(data_dir, labels_csv):
        raise ValueError(f"{data_dir}: no label file (manifest.csv, or give --labels CSV): "
                         "ecs-evaluate needs the true labels; ecs-screen scores unlabelled images")
    with tempfile.TemporaryDirectory(prefix="ecs-evaluate-") as cache_dir:
        cache = PreprocessedCache(cache_dir)  # the scan decodes once; scoring reads it back
        report = scan_site(data_dir, labels_csv, model.preprocess, cache_dir=cache_dir, progress=progress,
                           modality="US")  # MR rows are not decoded
        if report.is_fatal and not report.files:
            raise ValueError("; ".join(report.fatal_errors))
        scored = []
        for f in report.files:
            if f.label is None:
                continue  # a file labelled US whose header says otherwise is screened, hence refused
            path = Path(f.path) if Path(f.path).is_absolute() else data_dir / f.path
            result = screen_file(model, path, f.path, cache) if f.status == "ok" else \
                ScreenResult(f.path, None, None, [f"not usable: {f.reason}"])
            scored.append(ScoredFile(f.center, f.patient_id, int(f.label), result))
    return scored


def _flat(m: dict) -> dict:
    out = {k: m["ci"][k] for k in ("auc", "sensitivity", "specificity", *METRICS)}
    out.update({k: m[k] for k in ("n", "positives", "tp", "fp", "tn", "fn", "n_patients", "ece", "ci_level")})
    return out


def evaluate_site(scored: list[ScoredFile], threshold: float, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Metrics at ``threshold`` with patient-bootstrap intervals, pooled at the top level.

    Returns:
        ``{auc, sensitivity, specificity, ppv, npv, f1, pr_auc: {value, ci_low, ci_high}, n_images,
        n_patients, n_positive, n_refused, ece, threshold, by_center (several centers only)}``.
    """
    kept = [s for s in scored if s.result.probability is not None]
    if not kept:
        raise ValueError("no file could be scored (see the refused files)")
    groups: dict[str, tuple[list, list, list]] = {}
    for s in kept:
        labels, scores, patients = groups.setdefault(s.center or "site", ([], [], []))
        labels.append(s.label)
        scores.append(s.result.probability)
        patients.append(s.patient_id)
    arrays = {c: (np.array(lab), np.array(sc), pat) for c, (lab, sc, pat) in groups.items()}
    evaluated = evaluate_groups(arrays, threshold, pooled=POOLED, resamples=resamples, seed=seed)
    pooled = _flat(evaluated[POOLED])
    document = {**pooled, "n_images": pooled.pop("n"), "n_positive": pooled.pop("positives"),
                "n_refused": len(scored) - len(kept), "threshold": threshold, "resamples": resamples, "seed": seed}
    if len(groups) > 1:
        document["by_center"] = {c: _flat(m) for c, m in evaluated.items() if c != POOLED}
    return document


def write_scores(path: Path, scored: list[ScoredFile], threshold: float) -> Path:
    """Per-file CSV: file, center, patient_id, label, probability, decision, threshold, warnings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "center", "patient_id", "label", "probability", "decision", "threshold", "warnings"])
        for s in scored:
            r = s.result
            writer.writerow([r.file, s.center, s.patient_id, s.label,
                             "" if r.probability is None else f"{r.probability:.6f}", r.decision or "refused",
                             f"{threshold:.6f}", " | ".join(r.warnings)])
    return path
