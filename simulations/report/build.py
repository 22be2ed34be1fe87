"""Build a run's report: one self-contained HTML file (inline CSS, figures as embedded PNGs, no
script and no network resource), from the run directory alone plus, where still reachable, its
cohort (images, rescoring the exported model on the held-out centers).

:func:`write_report` is what ``ecs-report`` runs; :func:`report_after_run` is what ``ecs-train``
and ``ecs-simulate`` call at the end of a run: a report that fails is logged and never changes
the run or its exit code.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ecs_models.bundle_format import BundleError, read_bundle
from ecs_models.evaluation import evaluate
from ecs_models.sonographer import TVUS_DEEP_MI, simulated_reading
from simulations.report import sections
from simulations.report.figures import roc_figure, tile_grid
from simulations.report.html import figure, note, num, page, table
from simulations.report.run_files import ReportError, RunFiles, load_run
from simulations.report.scoring import BundleScorer, CenterScores, saliency_tiles, score_centers

__all__ = ["build_report", "write_report", "report_after_run", "REPORT_NAME"]

REPORT_NAME = "report.html"
RESAMPLES = 400  # patient-bootstrap draws for the report's intervals and ROC bands
MAX_FILES = 400  # files rescored per held-out center at most (the report must stay quick)


def _held_out(run: RunFiles) -> list[str]:
    m = run.metrics or {}
    centers = m.get("held_out_centers") or run.config.get("held_out_centers")
    if not centers and run.cohort:
        centers = [c["name"] for c in run.cohort.get("centers", []) if c.get("role") == "held_out"]
    return list(centers or [])


def _scored(run: RunFiles, log: Callable[[str], None]) -> tuple[BundleScorer | None, dict[str, CenterScores], str]:
    """The bundle rescored on the held-out centers, or why not."""
    if run.kind not in ("federated", "centralized"):
        return None, {}, "a comparison's arms are reported one by one (ecs-report <arm>/seed<s>)"
    if run.bundle_dir is None:
        return None, {}, "the run exported no model (model/operating_point.json missing)"
    if run.cohort_dir is None:
        return None, {}, "the run's cohort is not reachable from here"
    cache = (run.config.get("paths") or {}).get("cache")
    try:
        scorer = BundleScorer(run.bundle_dir, Path(cache) if cache else None)
        return scorer, score_centers(scorer, run.cohort_dir, _held_out(run), MAX_FILES), ""
    except Exception as exc:  # a bundle of another pipeline version, an unreadable file: say so, keep the rest
        log(f"[ecs-report] rescoring the exported model failed: {type(exc).__name__}: {exc}")
        return None, {}, f"rescoring the exported model failed ({type(exc).__name__}: {str(exc)[:200]})"


def _pooled(scored: dict[str, CenterScores]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    labels = np.concatenate([s.labels for s in scored.values()])
    scores = np.concatenate([s.scores for s in scored.values()])
    return labels, scores, [f"{c}/{p}" for c, s in scored.items() for p in s.patients]


def _reader_section(pooled: tuple[np.ndarray, np.ndarray, list[str]], model: dict, threshold: float, seed: int) -> tuple[str, dict]:
    """Model at its operating point (``model``: :func:`evaluate` of ``pooled`` at ``threshold``)
    against the simulated sonographer on the same held-out patients: body HTML and ROC points."""
    labels, _, patients = pooled
    calls = simulated_reading(labels, patients, TVUS_DEEP_MI, seed=seed).astype(float)
    reader = evaluate(labels, calls, patients, 0.5, resamples=RESAMPLES, seed=seed)

    def cells(e: dict) -> list[str]:
        return [f"{num(e['ci'][k]['value'])} [{num(e['ci'][k]['ci_low'])}, {num(e['ci'][k]['ci_high'])}]"
                for k in ("sensitivity", "specificity", "ppv", "npv")]

    rows = [(f"model (exported), threshold {num(threshold, 4)}", *cells(model)),
            ('<span class="sim">simulated sonographer</span>', *cells(reader))]
    body = (f"<p>Pooled held-out centers: {len(labels)} images of {model['n_patients']} patients, {int(labels.sum())} "
            f"positive images. 95 % patient-bootstrap intervals ({RESAMPLES} draws).</p>"
            + table(["reader", "sensitivity", "specificity", "PPV", "NPV"], rows)
            + note(f"The sonographer is SIMULATED, not a person: each patient is called once with the published accuracy "
                   f"of {TVUS_DEEP_MI.name} (sensitivity {TVUS_DEEP_MI.sensitivity}, specificity {TVUS_DEEP_MI.specificity}; "
                   f"{TVUS_DEEP_MI.source}). Those figures are for deep invasion; here the label is any invasion. "
                   f"Seed {seed}; ecs_models/sonographer.py."))
    points = {"model at operating point": (1 - model["specificity"], model["sensitivity"]),
              "simulated sonographer": (1 - reader["specificity"], reader["sensitivity"])}
    return body, points


def _scored_sections(run: RunFiles, log: Callable[[str], None]) -> tuple[list[tuple[str, str, str]], dict[str, dict]]:
    scorer, scored, why = _scored(run, log)
    threshold = float((run.metrics or {}).get("threshold", 0.5))
    seed = int(run.config.get("seed", 0) or 0)
    if not scored:
        missing = note(f"Not available: {why or 'no held-out center with ultrasound files'}.")
        return [("roc", "ROC curves of the held-out centers", missing),
                ("reader", "Model against a simulated sonographer", missing),
                ("saliency", "Where the model looked (occlusion saliency)", missing)], {}
    groups = {c: (s.labels, s.scores, s.patients) for c, s in scored.items()}
    pooled = _pooled(scored)
    if len(groups) > 1:
        groups["pooled held-out"] = pooled
    intervals = {c: evaluate(*g, threshold, resamples=RESAMPLES, seed=seed) for c, g in groups.items()}
    reader_body, points = _reader_section(pooled, intervals[list(groups)[-1]], threshold, seed)
    capped = [f"{c}: {len(s.labels)} of {s.total} files" for c, s in scored.items() if len(s.labels) < s.total]
    if capped:
        reader_body += note(f"Rescored the first {MAX_FILES} files of each held-out center only ({'; '.join(capped)}).", "warn")
    roc = figure(roc_figure(groups, points, resamples=RESAMPLES, seed=seed),
                 "The exported model rescored on every ultrasound file of each held-out center (the run's bundle and "
                 "preprocessing); shaded: 95 % patient-bootstrap band of sensitivity at each 1 - specificity. Points: the "
                 "model at its validation-chosen threshold and the simulated sonographer (pooled).", "ROC curves")
    tiles = saliency_tiles(scorer, scored, cases=4) if scorer is not None else []
    saliency = figure(tile_grid(tiles), "Occlusion saliency (red: hiding the region lowers P(invasion)) on held-out "
                      "cases: the highest-scored positives, then the highest-scored negatives.", "saliency maps")
    return [("roc", "ROC curves of the held-out centers", roc), ("reader", "Model against a simulated sonographer", reader_body),
            ("saliency", "Where the model looked (occlusion saliency)", saliency)], intervals


def _model_size(run: RunFiles) -> int | None:
    """The exported model's input side in pixels, None without a readable bundle."""
    try:
        return read_bundle(run.bundle_dir).size if run.bundle_dir is not None else None
    except BundleError:
        return None


def build_report(run_dir: str | Path, log: Callable[[str], None] = print) -> str:
    """The report's HTML for ``run_dir``.

    Raises:
        ReportError: not a (finished) run directory, or an unreadable file in it.
    """
    run = load_run(run_dir)
    scored_sections, intervals = _scored_sections(run, log) if run.kind in ("federated", "centralized") else ([], {})
    size = _model_size(run)
    parts = [sections.configuration(run), sections.cohort(run)]
    if run.kind in ("federated", "centralized"):
        hist = sections.histogram_roc(run, int(run.config.get("seed", 0) or 0), RESAMPLES)
        parts += [sections.rounds(run), sections.per_center(run, intervals), *([hist] if hist else []), *scored_sections]
    comparison = sections.comparison(run)
    if comparison is not None:
        parts.append(comparison)
    parts += [sections.privacy(run), sections.cost(run, size), sections.images(run)]
    m = run.metrics or {}
    title = f"ecs-fl {run.kind} run: {run.config.get('experiment_name') or m.get('experiment') or run.name}"
    how = (f"strategy {m['strategy']}" if m.get("strategy") else f"mode {run.config['mode']}" if run.config.get("mode")
           else f"{len((run.compare or {}).get('arms', []))} arms" if run.compare else run.kind)
    subtitle = f"{run.dir} · {how} · seed {run.config.get('seed', 'n/a')} · report built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    return page(title, subtitle, parts)


def write_report(run_dir: str | Path, out: str | Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``); return its path."""
    html = build_report(run_dir, log)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def report_after_run(run_dir: str | Path, log: Callable[[str], None] = print) -> Path | None:
    """End of ``ecs-train`` / ``ecs-simulate``: write ``report.html`` and print its path; on any
    failure log the error (with its traceback in ``report_error.txt``) and return None."""
    start = time.perf_counter()
    try:
        path = write_report(run_dir, log=log)
    except Exception as exc:  # the run is done and kept whatever the report does
        detail = "" if isinstance(exc, ReportError) else traceback.format_exc()
        try:
            (Path(run_dir) / "report_error.txt").write_text(f"{type(exc).__name__}: {exc}\n{detail}")
        except OSError:
            pass
        log(f"[ecs-report] no report for {run_dir}: {type(exc).__name__}: {exc} (the run itself is complete)")
        return None
    log(f"[ecs-report] report: {path} ({time.perf_counter() - start:.1f} s)")
    return path
