"""The report's figures, each returned as a ``data:image/png;base64,...`` URI (the HTML embeds
everything; nothing is fetched). Plots are matplotlib (Agg backend); image grids are PIL."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ecs_models.evaluation import patient_resamples, roc_points

__all__ = ["png_uri", "image_uri", "round_curves", "roc_figure", "tile_grid", "FPR_GRID"]

FPR_GRID = np.linspace(0.0, 1.0, 101)  # false-positive rates at which bootstrap ROC bands are drawn


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_uri(image: Image.Image) -> str:
    """A PIL image as an embedded PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return png_uri(buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_uri(fig) -> str:  # noqa: ANN001
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return png_uri(buffer.getvalue())


def round_curves(rounds: list[dict], keys: Sequence[str] = ("auc", "sensitivity", "specificity")) -> str | None:
    """Per-round validation ``keys`` of every center (rounds.jsonl ``val``; global round on x),
    one panel per key, phases shaded; None when no round has validation figures."""
    centers = sorted({c for r in rounds for c in (r.get("val") or {})})
    if not centers:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.7 * len(keys), 3.1), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for center in [*centers, "pooled"]:
            pts = [(r["global_round"], (r.get("val_pooled") if center == "pooled" else r["val"].get(center) or {}).get(key))
                   for r in rounds if r.get("val")]
            pts = [(x, y) for x, y in pts if y is not None and not math.isnan(y)]
            if pts:
                style = {"color": "black", "linewidth": 2} if center == "pooled" else {"alpha": 0.8}
                ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=center, **style)
        for r in rounds:
            if r.get("selected"):
                ax.axvline(r["global_round"], color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"validation {key}", fontsize=10)
        ax.set_xlabel("global round")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _figure_uri(fig)


def _band(labels: np.ndarray, scores: np.ndarray, patients: Sequence, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2.5 / 97.5 % of TPR at :data:`FPR_GRID` over patient-bootstrap draws (draws with one class dropped)."""
    curves = []
    for idx in patient_resamples(patients, resamples, seed):
        y = labels[idx]
        if 0 < y.sum() < len(y):
            p = roc_points(y, scores[idx])
            curves.append(np.interp(FPR_GRID, p["fpr"], p["tpr"]))
    if not curves:
        return np.full_like(FPR_GRID, np.nan), np.full_like(FPR_GRID, np.nan)
    return np.percentile(curves, 2.5, axis=0), np.percentile(curves, 97.5, axis=0)


def roc_figure(groups: dict[str, tuple[np.ndarray, np.ndarray, Sequence]], points: dict[str, tuple[float, float]],
               *, resamples: int = 500, seed: int = 0) -> str | None:
    """ROC curves of ``groups`` (name -> labels [N], scores [N], patients [N]) with 95 %
    patient-bootstrap bands, and ``points`` (label -> (1 - specificity, sensitivity)), e.g. the
    model's operating point and the simulated sonographer. None when no group has both classes."""
    usable = {k: g for k, g in groups.items() if 0 < np.sum(g[0]) < len(g[0])}
    if not usable:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    for name, (labels, scores, patients) in usable.items():
        p = roc_points(labels, scores)
        low, high = _band(np.asarray(labels), np.asarray(scores), patients, resamples, seed)
        (line,) = ax.plot(p["fpr"], p["tpr"], drawstyle="steps-post", label=f"{name} (n={len(labels)})")
        ax.fill_between(FPR_GRID, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    for (label, (x, y)), marker in zip(points.items(), "o^sD", strict=False):
        ax.plot([x], [y], marker=marker, color="black", linestyle="", markersize=7, label=label)
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _figure_uri(fig)


def tile_grid(tiles: list[tuple[np.ndarray, str]], tile: int = 160, columns: int = 4) -> str | None:
    """Images (uint8 [H, W] or [H, W, 3]) with captions in a grid, as one PNG; None for none."""
    if not tiles:
        return None
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (tile * min(columns, len(tiles)), (tile + 16) * rows), (30, 30, 30))
    for k, (array, caption) in enumerate(tiles):
        img = Image.fromarray(array).convert("RGB")
        scale = min(tile / img.width, tile / img.height)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
        x, y = (k % columns) * tile, (k // columns) * (tile + 16)
        sheet.paste(img, (x + (tile - img.width) // 2, y + 16 + (tile - img.height) // 2))
        ImageDraw.Draw(sheet).text((x + 2, y + 2), caption[:26], fill=(255, 255, 255))
    return image_uri(sheet)
