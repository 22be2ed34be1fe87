"""Reply validation before aggregation: nothing non-finite, inconsistent or wildly off is used.

A **training** reply is rejected (logged with its reason, never aggregated) when

* its ArrayRecord is missing, or its keys differ from the global model's;
* any array or metric holds NaN or Inf (the reason says which);
* ``num-examples`` is missing, not positive, or more than the site declared it can train with
  in this phase when it was discovered (``max_examples``: node id -> count), or the
  aggregation weight (``unit-weight`` under uniform weighting) is not positive;
* its update norm ``||w_site - w_global||`` exceeds ``outlier_factor`` times the median update
  norm of the round's finite replies (only with at least ``min_replies_for_outliers`` finite
  replies: with two, a median says nothing about which one is off).

Integer arrays (``num_batches_tracked``) are checked for keys but left out of the norm.

An **evaluation** reply (:func:`evaluate_problem`) is rejected when its score histograms
``hist-neg`` / ``hist-pos`` do not have the agreed number of bins, any count (histogram bins,
``tp`` / ``fp`` / ``tn`` / ``fn``, ``num-examples``) is not a finite non-negative integer, the
histograms do not add up to ``num-examples``, or the confusion matrix disagrees with the
histograms on how many negatives and positives there are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import MetricRecord, RecordDict

from protocol.messages import CONFUSION_KEYS, HISTOGRAM_KEYS, NUM_EXAMPLES

__all__ = ["Rejection", "evaluate_problem", "update_norm", "validate_train_replies"]

EXAMPLES_KEY = NUM_EXAMPLES


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


def _non_finite(values: np.ndarray) -> str | None:
    """``"NaN"``, ``"Inf"`` or ``"NaN and Inf"`` when ``values`` hold them, else None."""
    kinds = [name for name, found in (("NaN", np.isnan(values).any()), ("Inf", np.isinf(values).any())) if found]
    return " and ".join(kinds) or None


def _metric_values(value: object) -> np.ndarray:
    """A metric (scalar or list) as a float64 array."""
    return np.asarray(value if isinstance(value, list) else [value], dtype=np.float64)


def _the_metric_record(content: RecordDict) -> tuple[str | None, MetricRecord | None]:
    if len(content.metric_records) != 1:
        return f"expected one MetricRecord, got {len(content.metric_records)}", None
    return None, next(iter(content.metric_records.values()))


def _metrics_problem(metrics: MetricRecord) -> str | None:
    for key, value in metrics.items():
        kind = _non_finite(_metric_values(value))
        if kind is not None:
            return f"metric {key} holds {kind}"
    return None


def _examples_problem(metrics: MetricRecord, weight_key: str, limit: float | None) -> str | None:
    """``num-examples`` present, positive and within ``limit``; the aggregation weight positive."""
    for key in dict.fromkeys((EXAMPLES_KEY, weight_key)):
        value = metrics.get(key)
        if value is None or isinstance(value, list):
            return f"metric {key!r} missing or not a number"
        if not float(value) > 0:
            return f"metric {key!r} = {float(value):g} is not positive"
    examples = float(metrics[EXAMPLES_KEY])
    if limit is not None and examples > limit:
        return (f"{EXAMPLES_KEY} = {examples:g} exceeds the {limit:g} training examples the site declared "
                "for this phase at discovery")
    return None


def _train_problem(content: RecordDict, reference_keys: set[str] | None, weight_key: str,
                   limit: float | None) -> tuple[str | None, dict[str, np.ndarray]]:
    if len(content.array_records) != 1:
        return f"expected one ArrayRecord, got {len(content.array_records)}", {}
    reason, metrics = _the_metric_record(content)
    if metrics is None:
        return reason, {}
    record = next(iter(content.array_records.values()))
    arrays = {k: v.numpy() for k, v in record.items()}
    if reference_keys is not None and set(arrays) != reference_keys:
        missing, extra = sorted(reference_keys - set(arrays))[:3], sorted(set(arrays) - reference_keys)[:3]
        return f"array keys differ from the global model (missing {missing}, extra {extra})", arrays
    for key, value in arrays.items():
        kind = _non_finite(value) if np.issubdtype(value.dtype, np.floating) else None
        if kind is not None:
            return f"array {key} holds {kind}", arrays
    return _metrics_problem(metrics) or _examples_problem(metrics, weight_key, limit), arrays


def validate_train_replies(
    replies: list[tuple[int, str, RecordDict]],
    reference: dict[str, np.ndarray] | None,
    *,
    weight_key: str = EXAMPLES_KEY,
    max_examples: Mapping[int, float] | None = None,
    outlier_factor: float = 10.0,
    min_replies_for_outliers: int = 3,
) -> tuple[list[int], list[Rejection], dict[int, float]]:
    """Check ``(node_id, center, content)`` replies against the global arrays ``reference``.

    ``max_examples`` maps a node to the most training examples it declared at discovery for
    the phase (a node missing from it is not bounded).

    Returns ``(accepted node ids, rejections, update norm per accepted node)``.
    """
    reference_keys = set(reference) if reference is not None else None
    limits = max_examples or {}
    rejections: list[Rejection] = []
    norms: dict[int, float] = {}
    for node_id, center, content in replies:
        reason, arrays = _train_problem(content, reference_keys, weight_key, limits.get(node_id))
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


def _counts_problem(key: str, values: np.ndarray) -> str | None:
    """``values`` must be finite, integral and non-negative (counts of images)."""
    kind = _non_finite(values)
    if kind is not None:
        return f"{key} holds {kind}"
    if (values < 0).any():
        return f"{key} holds a negative count ({values.min():g})"
    if (values != np.round(values)).any():
        return f"{key} holds a count that is not an integer ({values[values != np.round(values)][0]:g})"
    return None


def evaluate_problem(content: RecordDict, bins: int) -> str | None:
    """Why the evaluation reply ``content`` cannot be used (None: it can); see the module docstring.

    ``bins`` is the histogram length the server asked for (``histogram_bins``).
    """
    reason, metrics = _the_metric_record(content)
    if metrics is None:
        return reason
    missing = [k for k in (*HISTOGRAM_KEYS, *CONFUSION_KEYS, EXAMPLES_KEY) if k not in metrics]
    if missing:
        return f"missing metrics {missing}"
    counts = {key: _metric_values(metrics[key]) for key in (*HISTOGRAM_KEYS, *CONFUSION_KEYS, EXAMPLES_KEY)}
    for key in HISTOGRAM_KEYS:
        if len(counts[key]) != bins:
            return f"{key} has {len(counts[key])} bins, expected {bins}"
    for key in (*CONFUSION_KEYS, EXAMPLES_KEY):
        if len(counts[key]) != 1:
            return f"{key} is a list of {len(counts[key])} values, expected one count"
    for key, values in counts.items():
        problem = _counts_problem(key, values)
        if problem is not None:
            return problem
    negatives, positives = (int(counts[key].sum()) for key in HISTOGRAM_KEYS)
    examples = int(counts[EXAMPLES_KEY][0])
    if negatives + positives != examples:
        return (f"histograms count {negatives} negatives + {positives} positives = {negatives + positives} images "
                f"but {EXAMPLES_KEY} = {examples}")
    tp, fp, tn, fn = (int(counts[key][0]) for key in CONFUSION_KEYS)
    if (tp + fn, tn + fp) != (positives, negatives):
        return (f"confusion matrix counts {tp + fn} positives and {tn + fp} negatives "
                f"but the histograms {positives} and {negatives}")
    return None
