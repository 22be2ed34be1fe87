"""The report's sections from the run's own files: configuration and versions, cohort, rounds,
per-center results, comparison tables, privacy, model cost and images. Each function returns
``(anchor, title, body HTML)``; a section says what is missing rather than disappearing."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import yaml

from ecs_models.bundle_format import BundleError, read_bundle
from simulations.report.figures import image_uri, roc_figure, round_curves, tile_grid
from simulations.report.html import esc, figure, markdown, note, num, table
from simulations.report.run_files import RunFiles

__all__ = ["configuration", "cohort", "rounds", "per_center", "histogram_roc", "comparison", "privacy", "cost", "images"]

Section = tuple[str, str, str]
KEY_CONFIG = ("experiment_name", "seed", "mode", "strategy", "rounds", "local", "training", "model", "privacy",
              "distillation", "synthesis", "cohort_dir", "held_out_centers")


def configuration(run: RunFiles) -> Section:
    cfg = run.config
    rows = [(k, json.dumps(cfg[k], default=str)[:300]) for k in KEY_CONFIG if k in cfg]
    if run.compare:  # the comparison's own record: its .hydra config is unresolved
        rows = [(k, json.dumps(v, default=str)[:300]) for k, v in run.compare.items() if k != "cohort_dir"]
    versions = run.versions or {}
    body = table(["setting", "value"], rows) if rows else note("No resolved configuration in this folder.")
    if versions:
        body += "<h3>Versions (recorded by the run)</h3>" + table(["component", "version"], sorted(versions.items()))
    else:
        body += note(f"This run recorded no versions.json; the report was built with Python {platform.python_version()}, "
                     f"numpy {np.__version__}.")
    if cfg:
        body += f"<details><summary>Full resolved configuration</summary><pre>{esc(yaml.safe_dump(cfg, sort_keys=False))}</pre></details>"
    return "config", "Configuration and versions", body


def cohort(run: RunFiles) -> Section:
    if run.cohort is None:
        return "cohort", "Cohort", note("The run's cohort folder is not reachable from here (moved or deleted): "
                                        "sizes, prevalence and scanners cannot be shown.", "warn")
    rows = []
    for c in run.cohort.get("centers", []):
        n, pos = c.get("us_patients", 0), c.get("us_positives", 0)
        rows.append((c["name"], c.get("role", ""), c.get("us_files", ""), n, pos, num(pos / n if n else None),
                     c.get("scanner") or "", c.get("mr_patients", 0), c.get("mri") or "none"))
    head = ["center", "role", "US files", "US patients", "positives", "prevalence", "scanner", "MR patients", "MRI"]
    text = (f"Cohort {esc(run.cohort.get('name', ''))} (seed {esc(run.cohort.get('seed', ''))}, fingerprint "
            f"{esc(str(run.cohort.get('fingerprint', ''))[:12])}) in {esc(run.cohort_dir)}. Prevalence: patients with "
            "any myometrial invasion among ultrasound patients.")
    return "cohort", "Cohort per center", f"<p>{text}</p>" + table(head, rows)


def rounds(run: RunFiles) -> Section:
    if run.kind != "federated":
        history = (run.metrics or {}).get("history") or []
        rows = [(h.get("stage"), h.get("epoch"), num(h.get("val_auc")), num(h.get("val_sensitivity")),
                 num(h.get("val_specificity"))) for h in history]
        body = (table(["stage", "epoch", "val AUC", "val sensitivity", "val specificity"], rows) if rows
                else note("No training history recorded."))
        return "rounds", "Training curve (pooled validation, per epoch)", body
    uri = round_curves(run.rounds)
    phases = {}
    for r in run.rounds:
        p = phases.setdefault(r["phase"], [0, 0.0, 0, 0])
        p[0] += 1
        p[1] += r.get("seconds", 0.0)
        p[2] += len(r.get("failed") or {})
        p[3] += not r.get("aggregated", True)
    body = figure(uri, "Validation AUC, sensitivity (at each round's threshold) and specificity per center and "
                  "pooled (black), after each global round; dotted: the selected round.", "per-round validation curves")
    body += table(["phase", "rounds", "seconds", "failures", "void rounds"],
                  [(k, v[0], num(v[1], 1), v[2], v[3]) for k, v in phases.items()])
    return "rounds", "Per-round curves per center", body


def _center_rows(run: RunFiles) -> list[tuple[str, str, dict]]:
    m = run.metrics or {}
    if run.kind == "federated":
        out = [(c["center"], c["role"], c) for c in m.get("centers", [])]
        out += [(label, "pooled", m[key]) for key, label in (("internal_test", "pooled internal test"),
                                                                ("held_out", "pooled held-out")) if m.get(key)]
        return out
    out = []
    for key, role in (("internal_test", "train (test split)"), ("held_out", "held_out")):
        for center, metrics in (m.get(key) or {}).items():
            name = f"pooled {'internal test' if key == 'internal_test' else 'held-out'}" if center == "pooled" else center
            out.append((name, "pooled" if center == "pooled" else role, metrics))
    return out


def per_center(run: RunFiles, intervals: dict[str, dict] | None) -> Section:
    """The run's own figures per center at its operating point; ``intervals`` (center -> the
    report's :func:`ecs_models.evaluation.evaluate` of the bundle's raw scores) adds 95 % CIs."""
    metrics = ("auc", "sensitivity", "specificity", "ppv", "npv", "f1")
    rows = []
    for name, role, m in _center_rows(run):
        if "error" in m:
            rows.append((name, role, f"error: {m['error']}", *[""] * (len(metrics) + 1)))
            continue
        rows.append((name, role, m.get("n"), m.get("positives"), *[num(m.get(k)) for k in metrics]))
    thr = (run.metrics or {}).get("threshold")
    body = (f"<p>At the operating point chosen on validation data only: threshold {num(thr, 4)} "
            f"(rule: {esc(((run.metrics or {}).get('operating_point') or {}).get('rule', 'sensitivity-first'))}).</p>")
    body += table(["center", "role", "n images", "positives", "AUC", "sensitivity", "specificity", "PPV", "NPV", "F1"], rows)
    if intervals:
        def cell(e: dict, k: str) -> str:
            ci = e["ci"][k]
            return f"{num(ci['value'])} [{num(ci['ci_low'])}, {num(ci['ci_high'])}]"
        rows = [(c, e["n"], e["n_patients"], e["positives"], cell(e, "auc"), cell(e, "sensitivity"), cell(e, "specificity"),
                 num(e["ece"])) for c, e in intervals.items()]
        body += "<h3>Held-out centers, exported model rescored, 95 % patient-bootstrap intervals</h3>"
        body += table(["center", "images", "patients", "positives", "AUC", "sensitivity", "specificity", "ECE"], rows)
    return "centers", "Results per center", body


def _cases(neg: dict[str, int], pos: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histogram counts ``{bin index: count}`` as cases: labels [N], scores [N] (the bin index: ROC
    curves need only the order), ids [N] (one per case: no patient ids leave a site)."""
    bins = [(int(i), int(c), 0) for i, c in neg.items()] + [(int(i), int(c), 1) for i, c in pos.items()]
    labels = np.concatenate([np.full(c, y) for _, c, y in bins]) if bins else np.zeros(0, int)
    scores = np.concatenate([np.full(c, float(i)) for i, c, _ in bins]) if bins else np.zeros(0)
    return labels.astype(int), scores, np.arange(len(labels))


def histogram_roc(run: RunFiles, seed: int, resamples: int) -> Section | None:
    """ROC curves of every center from the score histograms the sites sent (``final_histograms.json``)."""
    if run.kind != "federated":
        return None
    title = "ROC curves from the sites' own histograms"
    if not run.histograms:
        return "roc-hist", title, note("This run kept no final score histograms (final_histograms.json: runs since issue 16).")
    groups = {f"{c} ({h['role']})": _cases(h["neg"], h["pos"]) for c, h in run.histograms["centers"].items()}
    uri = roc_figure(groups, {}, resamples=resamples, seed=seed)
    caption = (f"What the federation itself measured: each site's {run.histograms['bins']}-bin score histograms of the final "
               "model (training centers: their internal test split; held-out centers: every file). Bands: 95 % bootstrap "
               "over cases, not patients (histograms carry no patient ids).")
    return "roc-hist", title, figure(uri, caption, "ROC curves from histograms")


def comparison(run: RunFiles) -> Section | None:
    if run.kind not in ("comparison", "ablation"):
        return None
    body = markdown(run.table_md) if run.table_md else note("No table.md in this folder.")
    if (run.dir / "compare.png").is_file():
        from PIL import Image

        body += figure(image_uri(Image.open(run.dir / "compare.png")), "Held-out AUC per arm, one dot per seed.", "comparison plot")
    if run.kind == "comparison" and isinstance(run.results, list):
        rows = []
        for r in run.results:
            folder = Path(str(r.get("run_dir", "")))
            report = folder / "report.html"
            where = f'<a href="{esc(report.as_uri())}">{esc(folder.name)}</a>' if report.is_file() else esc(str(folder))
            rows.append((r.get("arm"), r.get("kind"), r.get("seed"), r.get("status"), num(r.get("held_out_auc")),
                         num(r.get("held_out_sensitivity")), num(r.get("held_out_specificity")), num(r.get("threshold"), 4), where))
        body += "<h3>Runs (arm x seed)</h3>" + table(
            ["arm", "kind", "seed", "status", "held-out AUC", "sensitivity", "specificity", "threshold", "run folder"], rows)
        body += note("Each arm's folder is a run of its own: `ecs-report <folder>` writes its full report "
                     "(ROC bands, the simulated sonographer, saliency).")
    title = "Comparison (FLamby protocol)" if run.kind == "comparison" else "Ablation table"
    return "comparison", title, body


def _arm_privacy(run: RunFiles) -> list[tuple[str, str]]:
    """(arm/seed, what its privacy.json records) for a comparison's or an ablation's runs."""
    out = []
    runs = run.results if isinstance(run.results, list) else [
        {"arm": f.parent.name, "seed": f.name.removeprefix("seed"), "run_dir": f} for f in sorted(run.dir.glob("*/seed*")) if f.is_dir()]
    for r in runs:
        path = Path(str(r.get("run_dir", ""))) / "privacy.json"
        if not path.is_file():
            out.append((f"{r.get('arm')} seed {r.get('seed')}", "no privacy record"))
            continue
        record = json.loads(path.read_text())
        names = [f"site {k}" for k in record.get("sites") or {}] + (["central"] if record.get("central") else [])
        out.append((f"{r.get('arm')} seed {r.get('seed')}",
                    "no privacy mechanism" if not names else "epsilon recorded for " + ", ".join(names)))
    return out


def privacy(run: RunFiles) -> Section:
    if run.kind in ("comparison", "ablation") and run.privacy is None:
        arms = _arm_privacy(run)
        return "privacy", "Privacy", (table(["run", "privacy record"], arms) if arms else note("No runs recorded."))
    if run.privacy is None:
        return "privacy", "Privacy", note("No privacy record (privacy.json) in this run: no privacy mechanism is "
                                          "recorded, so treat it as having none.", "warn")
    p = run.privacy
    entries = [(f"site {k}", v) for k, v in (p.get("sites") or {}).items()] + ([("central", p["central"])] if p.get("central") else [])
    if not entries:
        body = note("No privacy mechanism: no clipping, no noise, no accountant in this run.", "warn")
    else:
        rows = [(name, e.get("mechanism", ""), e.get("accountant", ""), num(e.get("epsilon"), 4), _recomputed(e),
                 num(e.get("delta"), 6), num(e.get("clipping_norm"), 4), _events(e.get("events") or [])) for name, e in entries]
        body = table(["entry", "mechanism", "accountant", "epsilon", "epsilon recomputed (dp-accounting)", "delta",
                      "clipping norm", "releases"], rows)
    body += f"<p>Unit: {esc(p.get('unit', 'n/a'))}; delta: {esc(p.get('delta'))}.</p>"
    if run.privacy_md:
        body += f"<details><summary>privacy.md (the run's statement)</summary>{markdown(run.privacy_md)}</details>"
    return "privacy", "Privacy", body


def _recomputed(entry: dict) -> str:
    """The entry's epsilon recomputed from its events alone (server.privacy_ledger), or why not."""
    from server.privacy_ledger import epsilon_from_events

    try:
        return num(epsilon_from_events(entry["events"], float(entry["delta"]), entry["accountant"]), 4)
    except Exception as exc:  # an entry this install cannot recompute: say so in the cell
        return f"not recomputed ({type(exc).__name__})"


def _events(events: list[dict]) -> str:
    return "; ".join(f"{int(e.get('count', 0))} x {e.get('kind')} (z = {num(e.get('noise_multiplier'), 3)}"
                     + (f", q = {num(e['sample_rate'], 4)})" if "sample_rate" in e else ")") for e in events) or "none yet"


def cost(run: RunFiles, size: int | None) -> Section:
    m = run.metrics or {}
    c = m.get("complexity") or _counted(run)
    rows = []
    if c:
        rows.append(("student, as trained", c.get("input_shape", size), num(c.get("params", 0) / 1e6, 3), num(c.get("gmacs"), 4)))
    if (m.get("teacher") or {}).get("complexity"):
        t = m["teacher"]["complexity"]
        rows.append(("teacher", t.get("input_shape", size), num(t.get("params", 0) / 1e6, 3), num(t.get("gmacs"), 4)))
    missing = ("A comparison's arms are runs of their own: their reports show each model's cost."
               if run.kind in ("comparison", "ablation") else
               "This run did not record its model's parameter and multiply-add counts (federated runs do not yet); "
               "ecs_models.complexity.complexity_report counts them for any model.")
    body = table(["model", "input", "params (M)", "GMACs"], rows) if rows else note(missing)
    onnx = run.bundle_dir / "lsnet.onnx" if run.bundle_dir else None
    if onnx is not None and onnx.is_file():
        body += f"<p>Exported ONNX model: {onnx.stat().st_size / 1e6:.2f} MB, input {esc(size)} px.</p>"
    body += _latency(run)
    return "cost", "Model cost", body


def _latency(run: RunFiles) -> str:
    """The exported model's latency recorded at export (bundle ``latency``), or "not measured"."""
    try:
        lat = read_bundle(run.bundle_dir).latency if run.bundle_dir is not None else None
    except BundleError:
        lat = None
    more = ("Decode and preprocessing included, and other models: docs/benchmarks.md "
            "(benchmarks/bench_screen.py, bench_latency.py).")
    if lat is None:
        return note("Latency: not measured (no exported model, or one exported before latency was recorded). " + more)
    return (f"<p>Measured latency of the exported model: p50 {num(lat['p50_ms'], 2)} ms, p95 {num(lat['p95_ms'], 2)} ms "
            f"per image (ONNX Runtime, {esc(lat.get('threads', 1))} thread, batch {esc(lat.get('batch', 1))}, "
            f"{esc(lat.get('runs'))} timed runs) on {esc(lat.get('cpu', 'an unrecorded CPU'))}.</p>"
            + note(f"Measured on {lat.get('measured_on', 'the exporting machine')}; model forward pass only. " + more))


def _counted(run: RunFiles) -> dict | None:
    """Parameters and MACs of the run's student counted now from its configuration
    (:func:`ecs_models.complexity.complexity_report`), for runs that did not record them."""
    model, training = dict(run.config.get("model") or {}), run.config.get("training") or {}
    if run.kind != "federated" or "name" not in model or "img_size" not in training:
        return None
    from ecs_models import create_model
    from ecs_models.complexity import complexity_report

    name, size = model.pop("name"), int(training["img_size"])
    if name in ("lsnet", "teacher"):
        model["img_size"] = size
    try:
        return {**complexity_report(create_model(name, **model), (1, 1, size, size)), "input_shape": size}
    except Exception:  # a model this install cannot build: say nothing rather than fail the report
        return None


def images(run: RunFiles) -> Section:
    """Real MRI and real ultrasound of a training center (the contact sheet), synthetic ultrasound
    when the run kept it (``synthetic.npz``)."""
    parts, missing = [], []
    center_dir = _center_with_mri(run)
    if center_dir is not None:
        from simulations.cohort.contact_sheet import center_contact_sheet

        sheet = center_contact_sheet(center_dir, per_class=3)
        parts.append(figure(image_uri(sheet), f"Real ultrasound (top rows) and real T2 MRI (bottom rows) of center "
                            f"{center_dir.name}, negatives and positives, as the data layer decodes them.", "real images"))
    else:
        missing.append("real MRI and ultrasound (cohort not reachable or no center with MRI)")
    synthetic = run.dir / "synthetic.npz"
    if synthetic.is_file():
        with np.load(synthetic) as data:
            tiles = [(img, f"synthetic US, label {int(y)}") for img, y in zip(data["images"][:8], data["labels"][:8], strict=True)]
        parts.append(figure(tile_grid(tiles, columns=8), "SG-CycleGAN ultrasound synthesized from the training centers' "
                            "MRI (what stage A trained on).", "synthetic ultrasound"))
    else:
        missing.append("synthetic ultrasound (federated runs and runs without synthesis keep none)")
    if missing:
        parts.append(note("Not shown: " + "; ".join(missing) + "."))
    return "images", "Images: real MRI, synthetic ultrasound, real ultrasound", "".join(parts)


def _center_with_mri(run: RunFiles) -> Path | None:
    if run.cohort is None or run.cohort_dir is None:
        return None
    for c in run.cohort.get("centers", []):
        if c.get("role") == "train" and c.get("mr_patients", 0) > 0 and (run.cohort_dir / c["name"] / "manifest.csv").is_file():
            return run.cohort_dir / c["name"]
    return None
