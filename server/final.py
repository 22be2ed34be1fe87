"""The end of a run: the selected model evaluated by every training site on its internal test
split and by every held-out center on all its images (operating point from the pooled
validation histograms of the selected round, sensitivity first), then exported as centralized
runs export it (:func:`ecs_models.bundle.export_student`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, MessageType, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from ecs_models.build import build_classifier
from ecs_models.bundle import export_student
from ecs_models.evaluation import TARGET_SENSITIVITY
from ecs_models.preprocessing import PreprocessConfig
from ecs_models.training.binned_metrics import binned_metrics, binned_operating_point
from ecs_models.training.private_histograms import noise_spread
from protocol.messages import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    METRICS_RECORD,
    NUM_EXAMPLES,
    Evaluate,
    EvaluateReply,
    MessageError,
    NormStateQuery,
)
from server import local_dp
from server.context import Arrays, RunContext, fmt, to_numpy, to_record
from server.sites import send
from strategies.validation import evaluate_problem
from strategies.wrapper import center_metrics, pool_evaluations, privacy_report

__all__ = ["validation_operating_point", "final_evaluation", "export", "print_final"]


def fedbn_norms(ctx: RunContext, arrays: Arrays) -> Arrays:
    """FedBN: the sites' norm states, example-weighted, for held-out centers and export."""
    assert ctx.sites is not None
    query = RecordDict({CONFIG_RECORD: ConfigRecord(NormStateQuery(**ctx.run_fields()).to_record())})
    replies = send(ctx.grid, ctx.sites.train, MessageType.QUERY, lambda _n: query, ctx.timeout)
    valid = [r.content for r in replies if not r.has_error()]
    if not valid:
        raise RuntimeError("FedBN: no site returned its normalization state")
    return {**arrays, **to_numpy(aggregate_arrayrecords(valid, NUM_EXAMPLES))}


def validation_operating_point(best: dict, target_sensitivity: float = TARGET_SENSITIVITY) -> dict:
    """The operating point of the selected round, from its pooled validation histograms
    (``best["val_histograms"]``): the threshold and the validation metrics *at it*
    (:func:`~ecs_models.training.binned_metrics.binned_operating_point`). Not the round's own
    ``best["val"]``, which is at the per-round threshold. Without histograms: threshold 0.5, no
    validation figures."""
    hist = best.get("val_histograms")
    if not hist:
        return {"threshold": 0.5, "target_sensitivity": target_sensitivity, "val": None}
    return binned_operating_point(np.asarray(hist["neg"]), np.asarray(hist["pos"]), target_sensitivity)


def final_evaluation(ctx: RunContext) -> dict:
    """Evaluate the selected round's model everywhere; per-center lines and the pooled metrics
    of the training sites' test splits and of the held-out centers (``final_evaluation.jsonl``)."""
    sites = ctx.sites
    assert sites is not None
    state = ctx.state
    best = state["best"] or {"arrays": state["model_arrays"], "val_histograms": None, "global_round": state["global_round"]}
    target = float(state.get("selector", {}).get("target_sensitivity", TARGET_SENSITIVITY))
    op = validation_operating_point(best, target)
    threshold = op["threshold"]
    arrays = fedbn_norms(ctx, best["arrays"]) if ctx.spec.fedbn else best["arrays"]
    record = to_record(arrays)

    def content(node: int) -> RecordDict:
        request = Evaluate(**ctx.run_fields(), split="test" if node in sites.train else "all", threshold=threshold)
        return RecordDict({ARRAYS_RECORD: record, CONFIG_RECORD: ConfigRecord(request.to_record())})

    replies = send(ctx.grid, sites.train + sites.held_out, MessageType.EVALUATE, content, ctx.timeout)
    lines, accepted, histograms = [], {"train": [], "held_out": []}, {}
    for reply in sorted(replies, key=lambda r: sites.centers.get(r.metadata.src_node_id, "")):
        node = reply.metadata.src_node_id
        center, role = sites.centers[node], "train" if node in sites.train else "held_out"
        if reply.has_error():
            lines.append({"center": center, "role": role, "error": reply.error.reason})
            continue
        declined = _keep_privacy_entry(ctx, center, reply.content)
        if declined:
            lines.append({"center": center, "role": role, "error": declined})
            continue
        problem = evaluate_problem(reply.content, ctx.histogram_bins)
        if problem is not None:
            ctx.log(f"[ecs] rejected the final evaluation of {center}: {problem}")
            lines.append({"center": center, "role": role, "error": f"rejected: {problem}"})
            continue
        m = EvaluateReply.from_record(reply.content[METRICS_RECORD])
        lines.append({"center": center, "role": role, "split": "test" if role == "train" else "all", **center_metrics(m, threshold)})
        histograms[center] = {"role": role, "neg": _nonzero(m.hist_neg), "pos": _nonzero(m.hist_pos)}
        accepted[role].append(m)
    summary = {}
    for role, replies in accepted.items():
        if replies:
            neg, pos, confusion = pool_evaluations(replies)
            summary[role] = binned_metrics(neg, pos, threshold, confusion)
            centers = [line["center"] for line in lines if line["role"] == role and "error" not in line]
            if std := local_dp.evaluation_noise_std(ctx.cfg, ctx.privacy.ledger, centers):  # how much the noise moves them
                summary[role]["noise"] = noise_spread(neg, pos, std, threshold, seed=int(ctx.cfg.seed))
    ctx.store.write_jsonl("final_evaluation.jsonl", lines)
    # the score histograms the sites sent (the run report's ROC curves): {bin index: count}, bins of
    # ecs_models.training.binned_metrics.bin_edges(bins)
    ctx.store.write_json("final_histograms.json", {"bins": ctx.histogram_bins, "centers": histograms})
    return {"threshold": threshold, "selected_round": best.get("global_round"), "centers": lines,
            "internal_test": summary.get("train"), "held_out": summary.get("held_out"), "full_arrays": arrays,
            "target_sensitivity": target, "val": op["val"]}


def _keep_privacy_entry(ctx: RunContext, center: str, content: RecordDict) -> str | None:
    """Local DP: the reply's ledger entry into the run's ledger (the final release is accounted
    there too); the reason when the site declined the release, else None."""
    try:
        privacy = privacy_report(content)
    except MessageError as exc:
        return f"rejected: privacy record: {exc}"
    if privacy is None:
        return None
    declined = {center: privacy.reason} if privacy.declined else {}
    local_dp.record_entries(ctx.privacy.ledger, {center: json.loads(privacy.ledger)}, declined, ctx.log)
    return privacy.reason or None


def _nonzero(counts: list[int]) -> dict[str, int]:
    return {str(i): int(c) for i, c in enumerate(counts) if c}


def export(ctx: RunContext, arrays: Arrays, threshold: float, val: dict | None,
           target_sensitivity: float = TARGET_SENSITIVITY) -> dict:
    """The selected student as ONNX + operating point (as ``ecs-train`` writes them); ``val``:
    the validation metrics at ``threshold`` (:func:`validation_operating_point`)."""
    classifier = build_classifier(ctx.models)
    state = classifier.state_dict()
    state.update({k: torch.as_tensor(v) for k, v in arrays.items()})
    classifier.load_state_dict(state)
    onnx_path, diff = export_student(
        classifier.student, Path(str(ctx.cfg.run_dir)) / "model", name=ctx.models.student["name"],
        size=int(ctx.cfg.training.img_size), threshold=threshold, target_sensitivity=target_sensitivity,
        val=val, chosen_on="pooled validation score histograms of the training sites (federated)",
        # the sites preprocess with PreprocessConfig(output_size=preprocess_size) (client/task.py); the
        # server never sees images, so the bundle carries no training intensity statistics
        preprocess=PreprocessConfig(output_size=int(ctx.cfg.training.preprocess_size)),
        run={"kind": "federated", "dir": str(ctx.cfg.run_dir), "name": Path(str(ctx.cfg.run_dir)).name,
             "experiment": ctx.cfg.get("experiment_name"), "seed": int(ctx.cfg.seed), "run_key": ctx.run_key})
    return {"onnx": str(onnx_path), "onnx_max_abs_diff": diff}


def print_final(ctx: RunContext, final: dict) -> None:
    """The final evaluation as a table: one line per center, then the two pooled lines."""
    log = ctx.log
    log(f"[ecs] final evaluation (selected round {final['selected_round']}, threshold {final['threshold']:.4f}):")
    log(f"[ecs]   {'center':<12} {'role':<9} {'n':>5} {'pos':>4}  {'AUC':>5}  {'sens':>5}  {'spec':>5}")
    for line in final["centers"]:
        if "error" in line:
            log(f"[ecs]   {line['center']:<12} {line['role']:<9} error: {line['error']}")
            continue
        log(f"[ecs]   {line['center']:<12} {line['role']:<9} {line['n']:>5} {line['positives']:>4}  {fmt(line['auc'])}"
            f"  {fmt(line['sensitivity'])}  {fmt(line['specificity'])}")
    for role, label in (("internal_test", "pooled internal test"), ("held_out", "pooled held-out")):
        m = final.get(role)
        if m:
            log(f"[ecs]   {label:<22} {m['n']:>5} {m['positives']:>4}  {fmt(m['auc'])}  {fmt(m['sensitivity'])}  {fmt(m['specificity'])}")
