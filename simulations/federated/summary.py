"""The summary table of a finished federated run, from its run directory (markdown)."""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["summary_table"]


def _f(value: object) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.3f}"


def summary_table(run_dir: str | Path) -> str:
    """Per-center final metrics, pooled internal-test and held-out rows, phase timings."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rounds = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines() if x.strip()]
    lines = [f"## {metrics['experiment']} ({metrics['strategy']}, seed {metrics['seed']}): selected round "
             f"{metrics['selected_round']}, threshold {metrics['threshold']:.4f}", "",
             "| center | role | n | positives | AUC | sensitivity | specificity |", "|---|---|---|---|---|---|---|"]
    for c in metrics["centers"]:
        if "error" in c:
            lines.append(f"| {c['center']} | {c['role']} | error: {c['error']} | | | | |")
            continue
        lines.append(f"| {c['center']} | {c['role']} | {c['n']} | {c['positives']} | {_f(c['auc'])} | {_f(c['sensitivity'])} | {_f(c['specificity'])} |")
    for key, label in (("internal_test", "**pooled internal test**"), ("held_out", "**pooled held-out**")):
        m = metrics.get(key)
        if m:
            lines.append(f"| {label} | | {m['n']} | {m['positives']} | {_f(m['auc'])} | {_f(m['sensitivity'])} | {_f(m['specificity'])} |")
    lines += ["", "| phase | rounds | seconds | void rounds | failures | rejections |", "|---|---|---|---|---|---|"]
    for phase in ("gan", "stage_a", "stage_b"):
        rs = [r for r in rounds if r["phase"] == phase]
        if rs:
            lines.append(f"| {phase} | {len(rs)} | {sum(r['seconds'] for r in rs):.1f} | {sum(not r['aggregated'] for r in rs)} | "
                         f"{sum(len(r['failed']) for r in rs)} | {sum(len(r['rejected']) for r in rs)} |")
    lines.append(f"\nwall time of the ServerApp: {metrics['seconds']:.1f} s; model: {metrics['onnx']}")
    return "\n".join(lines) + "\n"
