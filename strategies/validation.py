"""Reply validation before aggregation: nothing non-finite or wildly off is averaged.

A training reply is rejected (logged with its reason, never aggregated) when

* its ArrayRecord is missing, or its keys differ from the global model's;
* any array or metric holds NaN / Inf, or ``num-examples`` is not a positive number;
* its update norm ``||w_site - w_global||`` exceeds ``outlier_factor`` times the median update
  norm of the round's finite replies (only with at least ``min_replies_for_outliers`` finite
  replies: with two, a median says nothing about which one is off).

Integer arrays (``num_batches_tracked``) are checked for keys but left out of the norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import RecordDict

__all__ = ["Rejection", "update_norm", "validate_train_replies"]


@dataclass(frozen=True)
class Rejection:
    """One rejected reply: the node, its center name (if known) and why."""

    node_id: int
    center: str
    reason: str


def update_norm(arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None) -> float:
    """L2 norm of ``arrays - reference`` over floating-point arrays (of ``arrays`` when no reference)."""
    total = 0.0
    for key, value in arrays.items():
        if not np.issubdtype(value.dtype, np.floating):
            continue
        diff = value.astype(np.float64)
        if reference is not None and key in reference:
            diff = diff - reference[key].astype(np.float64)
        total += float(np.sum(diff * diff))
    return math.sqrt(total)


def _problem(content: RecordDict, reference_keys: set[str] | None, weight_key: str) -> tuple[str | None, dict[str, np.ndarray]]:
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}", {}
    if len(content.metric_records) != 1:
        return f"expected one MetricRecord, got {len(content.metric_records)}", {}
    record = next(iter(content.array_records.values()))
    arrays = {k: v.numpy() for k, v in record.items()}
    if reference_keys is not None and set(arrays) != reference_keys:
        missing, extra = sorted(reference_keys - set(arrays))[:3], sorted(set(arrays) - reference_keys)[:3]
        return f"array keys differ from the global model (missing {missing}, extra {extra})", arrays
    for key, value in arrays.items():
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return f"non-finite values in {key}", arrays
    metrics = next(iter(content.metric_records.values()))
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if any(not math.isfinite(float(v)) for v in values):
            return f"non-finite metric {key}", arrays
    weight = metrics.get(weight_key)
    if weight is None or isinstance(weight, list) or not float(weight) > 0:
        return f"metric {weight_key!r} missing or not positive", arrays
    return None, arrays


def validate_train_replies(
    replies: list[tuple[int, str, RecordDict]],
    reference: dict[str, np.ndarray] | None,
    *,
    weight_key: str = "num-examples",
    outlier_factor: float = 10.0,
    min_replies_for_outliers: int = 3,
) -> tuple[list[int], list[Rejection], dict[int, float]]:
    """Check ``(node_id, center, content)`` replies against the global arrays ``reference``.

    Returns ``(accepted node ids, rejections, update norm per accepted node)``.
    """
    reference_keys = set(reference) if reference is not None else None
    rejections: list[Rejection] = []
    norms: dict[int, float] = {}
    for node_id, center, content in replies:
        reason, arrays = _problem(content, reference_keys, weight_key)
        if reason is not None:
            rejections.append(Rejection(node_id, center, reason))
        else:
            norms[node_id] = update_norm(arrays, reference)
    if outlier_factor > 0 and len(norms) >= min_replies_for_outliers:
        median = float(np.median(list(norms.values())))
        centers = {node: center for node, center, _ in replies}
        for node_id, norm in list(norms.items()):
            if norm > outlier_factor * max(median, 1e-12):
                rejections.append(Rejection(node_id, centers[node_id],
                                            f"update norm {norm:.3g} > {outlier_factor:g} x round median {median:.3g}"))
                del norms[node_id]
    return list(norms), rejections, norms
