"""The comparison's table and plot from its per-run rows (``results.json`` of ``experiment=compare``).

* ``table.csv``: one row per arm, mean and std over seeds of the held-out AUC (two ways: over all
  held-out images together, and the mean of the held-out centers' own AUCs, which is how FLamby
  averages its test centers), sensitivity and specificity, and of the internal-test AUC, runs
  finished / failed, the first error;
* ``runs.csv``: one row per arm x seed (what the means are made of);
* ``table.md``: the same table in markdown, error rows, and the comparison the issue asks for
  (best federated arm vs pooled and vs the best single center); with privacy, each run's epsilon
  (largest training site's, and the server's) and every arm against the ``no_dp`` arm;
* ``compare.png``: held-out AUC per arm, one dot per seed, mean +- std;
* ``privacy_utility.png`` (when arms ran under DP): held-out AUC, sensitivity and specificity
  against each arm's epsilon (log scale; patient-level and hospital-level DP as two series, mean
  +- std over seeds), the ``no_dp`` arm as a dashed line.

Standard deviations are over seeds with ``ddof=0``, as in ``ecs-train``'s tables.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

__all__ = ["summarise_arms", "write_report", "plot_compare", "plot_privacy_utility", "METRICS"]

METRICS = ("held_out_auc", "held_out_center_auc", "held_out_sensitivity", "held_out_specificity", "internal_test_auc")
PRIVACY = ("epsilon_patient", "epsilon_hospital")  # from each run's privacy.json; shown when an arm has one
RUN_FIELDS = ("arm", "kind", "seed", "status", "reused", *METRICS, *PRIVACY, "threshold", "wall_seconds", "run_dir", "error")


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(arr) == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=0))


def summarise_arms(results: list[dict], arm_order: list[str]) -> list[dict]:
    """One summary row per arm (in ``arm_order``): means, stds, counts, first error."""
    rows = []
    for arm in arm_order:
        runs = [r for r in results if r["arm"] == arm]
        ok = [r for r in runs if r["status"] == "ok"]
        errors = [r for r in runs if r["status"] != "ok"]
        row = {"arm": arm, "kind": runs[0]["kind"] if runs else "", "runs_ok": len(ok), "runs_failed": len(errors),
               "seeds": " ".join(str(r["seed"]) for r in ok)}
        for key in (*METRICS, *PRIVACY):
            row[f"{key}_mean"], row[f"{key}_std"] = _stats([r.get(key) for r in ok])
        walls = [r["wall_seconds"] for r in ok if r.get("wall_seconds") is not None]
        row["wall_seconds_mean"] = float(np.mean(walls)) if walls else float("nan")
        row["error"] = errors[0].get("error", "") if errors else ""
        rows.append(row)
    return rows


def _cell(row: dict, key: str) -> str:
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if row["runs_ok"] > 1 else f"{mean:.3f}"


def _verdict(rows: list[dict], metric: str = "held_out_auc", label: str = "held-out AUC") -> list[str]:
    """Best federated arm vs pooled and vs the best single center (the issue's acceptance), by ``metric``."""
    key = f"{metric}_mean"

    def best(kind_filter) -> dict | None:  # noqa: ANN001
        candidates = [r for r in rows if kind_filter(r) and not math.isnan(r[key])]
        return max(candidates, key=lambda r: r[key]) if candidates else None

    fed = best(lambda r: r["kind"] == "federated")
    pooled = best(lambda r: r["arm"] == "pooled")
    local = best(lambda r: r["arm"].startswith("local_"))
    if fed is None:
        return []
    lines = [f"Best federated arm by mean {label}: **{fed['arm']}** ({fed[key]:.3f})."]
    if pooled is not None:
        gap = fed[key] - pooled[key]
        lines.append(f"- vs pooled ({pooled[key]:.3f}): {gap:+.3f} (goal: within 0.02 — "
                     f"{'met' if gap >= -0.02 else 'not met'})")
    if local is not None:
        gap = fed[key] - local[key]
        lines.append(f"- vs the best single center, {local['arm']} ({local[key]:.3f}): {gap:+.3f} "
                     f"(goal: at least +0.03 — {'met' if gap >= 0.03 else 'not met'})")
    plain = next((r for r in rows if r["arm"] == "no_dp" and not math.isnan(r[key])), None)
    for row in rows:  # experiment=privacy_sweep: what each privacy setting costs against the same run without
        if plain is not None and row is not plain and not math.isnan(row[key]):
            lines.append(f"- {row['arm']} vs no_dp: {row[key] - plain[key]:+.3f}{_epsilon_text(row)}")
    return lines


def _epsilon_text(row: dict) -> str:
    parts = [f"{label} epsilon {row[f'{key}_mean']:.2f}" for key, label in zip(PRIVACY, ("patient", "hospital"), strict=True)
             if not math.isnan(row[f"{key}_mean"])]
    return f" ({', '.join(parts)})" if parts else ""


def plot_compare(results: list[dict], arm_order: list[str], path: Path, title: str) -> Path:
    """Held-out AUC per arm: one dot per seed, mean +- std bar; dashed line at the pooled mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(arm_order) + 1.5), 4.2))
    colors = {"centralized": "tab:blue", "federated": "tab:orange"}
    values_seen: list[float] = []
    missing: list[tuple[int, str]] = []
    for x, arm in enumerate(arm_order):
        runs = [r for r in results if r["arm"] == arm]
        kind = runs[0]["kind"] if runs else "centralized"
        values = [r["held_out_auc"] for r in runs if r["status"] == "ok" and not math.isnan(r.get("held_out_auc", math.nan))]
        if not values:
            missing.append((x, "error" if runs else "n/a"))
            continue
        values_seen += values
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(x + jitter, values, s=22, color=colors.get(kind, "gray"), alpha=0.7, zorder=3)
        ax.errorbar(x, np.mean(values), yerr=np.std(values), fmt="_", markersize=18, capsize=6, color="black", zorder=4)
        if arm == "pooled":
            ax.axhline(np.mean(values), color=colors["centralized"], linestyle="--", linewidth=1, zorder=1)
    ax.set_xticks(range(len(arm_order)), arm_order, rotation=30, ha="right")
    ax.set_ylabel("held-out AUC")
    low, high = max(0.0, min(values_seen, default=0.0) - 0.05), min(1.0, max(values_seen, default=1.0) + 0.05)
    ax.set_ylim(*((low, high) if high > low else (0.0, 1.0)))
    for x, label in missing:
        ax.text(x, sum(ax.get_ylim()) / 2, label, ha="center", va="center", color="tab:red", rotation=90)
    ax.set_title(title, fontsize=10)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=k) for k, c in colors.items()]
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_privacy_utility(rows: list[dict], path: Path, title: str) -> Path | None:
    """Held-out AUC, sensitivity and specificity against epsilon, from :func:`summarise_arms`'s
    rows; None (nothing written) when no arm has an epsilon."""
    series = {"patient-level DP (local)": "epsilon_patient", "hospital-level DP (central)": "epsilon_hospital"}
    points = {name: [r for r in rows if r["runs_ok"] and not math.isnan(r[f"{key}_mean"])] for name, key in series.items()}
    if not any(points.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plain = next((r for r in rows if r["arm"] == "no_dp" and r["runs_ok"]), None)
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.8), sharex=True)
    for ax, metric in zip(axes, ("held_out_auc", "held_out_sensitivity", "held_out_specificity"), strict=True):
        for (name, key), color in zip(series.items(), ("tab:orange", "tab:purple"), strict=True):
            chosen = sorted(points[name], key=lambda r: r[f"{key}_mean"])
            if chosen:
                ax.errorbar([r[f"{key}_mean"] for r in chosen], [r[f"{metric}_mean"] for r in chosen],
                            yerr=[r[f"{metric}_std"] for r in chosen], marker="o", capsize=4, color=color, label=name)
        if plain is not None:
            ax.axhline(plain[f"{metric}_mean"], color="tab:blue", linestyle="--", linewidth=1, label="no DP")
        ax.set_xscale("log")
        ticks = sorted({r[f"{key}_mean"] for name, key in series.items() for r in points[name]})
        ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks], minor=False)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("epsilon (largest training site's / the server's)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_report(results: list[dict], arm_order: list[str], out_dir: Path, meta: dict) -> str:
    """Write table.csv, runs.csv, table.md and compare.png into ``out_dir``; return the markdown."""
    out_dir = Path(out_dir)
    rows = summarise_arms(results, arm_order)
    fields = ["arm", "kind", "runs_ok", "runs_failed", "seeds"] + [f"{k}_{s}" for k in (*METRICS, *PRIVACY) for s in ("mean", "std")]
    _write_csv(out_dir / "table.csv", rows, [*fields, "wall_seconds_mean", "error"])
    _write_csv(out_dir / "runs.csv", results, list(RUN_FIELDS))
    seeds = meta.get("seeds", [])
    held_out = ", ".join(meta.get("held_out_centers", []))
    private = any(not math.isnan(row[f"{k}_mean"]) for row in rows for k in PRIVACY)
    lines = [f"## experiment=compare on `{meta.get('experiment')}`: seeds {seeds}, held-out centers {held_out}", "",
             "| arm | kind | runs | held-out AUC (all images) | held-out AUC (mean of centers) | held-out sensitivity "
             "| held-out specificity | internal-test AUC | s per run |" + (" epsilon (patient / hospital) |" if private else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if private else "")]
    for row in rows:
        runs = f"{row['runs_ok']}/{row['runs_ok'] + row['runs_failed']}"
        if row["runs_ok"] == 0:
            lines.append(f"| {row['arm']} | {row['kind']} | {runs} | error: {row['error'][:160]} | | | | | |")
            continue
        wall = "n/a" if math.isnan(row["wall_seconds_mean"]) else f"{row['wall_seconds_mean']:.0f}"
        cells = " | ".join(_cell(row, k) for k in METRICS)
        epsilon = f" {' / '.join(_cell(row, k) for k in PRIVACY)} |" if private else ""
        lines.append(f"| {row['arm']} | {row['kind']} | {runs} | {cells} | {wall} |{epsilon}")
    errors = [r for r in results if r["status"] != "ok"]
    if errors:
        lines += ["", "Failed runs (error rows):"] + [f"- {r['arm']} seed {r['seed']}: {r.get('error', '')[:300]}" for r in errors]
    for metric, label in (("held_out_auc", "held-out AUC (all images)"), ("held_out_center_auc", "held-out AUC (mean of centers)")):
        verdict = _verdict(rows, metric, label)
        if verdict:
            lines += ["", *verdict]
    budget = meta.get("budget", {})
    if budget:
        lines += ["", f"Budget: federated {budget.get('rounds')} rounds, each {budget.get('local')} per site; centralized "
                      f"arms {budget.get('centralized_epochs')} epochs and {budget.get('centralized_gan_steps')} GAN steps "
                      "(total local epochs = rounds x local epochs). Mean ± std over seeds (ddof=0); federated "
                      "held-out figures from score histograms (1,000 bins; 10 under local DP); internal test = test splits of all training centers."]
    markdown = "\n".join(lines) + "\n"
    (out_dir / "table.md").write_text(markdown)
    plot_compare(results, arm_order, out_dir / "compare.png",
                 f"held-out AUC ({held_out}), {meta.get('experiment')}, seeds {seeds}")
    plot_privacy_utility(rows, out_dir / "privacy_utility.png", f"privacy against utility ({held_out}), seeds {seeds}")
    return markdown
