"""The exported model bundle a run leaves in ``<run_dir>/model/``: the student as ONNX
(``<name>.onnx``, checked against PyTorch with onnxruntime) and ``operating_point.json`` (the
threshold chosen on validation data, what it means, and the complete input recipe: see
:mod:`ecs_models.bundle_format`, which also reads it back without torch). Written alike by
centralized and federated runs; this is the one writer."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ecs_models.bundle_format import OPERATING_POINT_FILE, bundle_document
from ecs_models.evaluation import operating_point_record
from ecs_models.export import check_onnx_parity, export_onnx
from ecs_models.latency import measure_onnx_latency
from ecs_models.preprocessing import PIPELINE_VERSION, PreprocessConfig

__all__ = ["export_student"]


def _package_version() -> str:
    try:
        return metadata.version("ecs-fl")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def export_student(student: torch.nn.Module, model_dir: Path, *, name: str, size: int, threshold: float,
                   target_sensitivity: float, val: dict | None, chosen_on: str, preprocess: PreprocessConfig,
                   run: Mapping[str, Any], intensity: Mapping[str, Any] | None = None) -> tuple[Path, float]:
    """Write ``model_dir/<name>.onnx`` (input ``[1, 1, size, size]`` in [-1, 1]) and
    ``operating_point.json``; returns (the ONNX path, onnxruntime's largest absolute difference
    from PyTorch on one random input). ``val``: the validation metrics *at* ``threshold`` (their
    ``threshold`` must be it: figures of another threshold are refused), recorded with the rule
    (sensitivity-first) and ``target_sensitivity``. ``preprocess``: the data layer's settings the
    model was trained on (every field is recorded, with :data:`PIPELINE_VERSION`; frames of
    ``preprocess.output_size`` px are resized to ``size`` px by ``ecs_models.inputs.model_input``);
    ``run``: where the model came from (kind, dir, experiment, ...); ``intensity``: training
    intensity statistics (``ecs_models.inputs.intensity_summary``) or None when not known.
    The ONNX model's latency on this machine (:func:`ecs_models.latency.measure_onnx_latency`:
    one thread, batch 1, p50 / p95 in ms) is recorded as ``latency``."""
    record = operating_point_record(threshold, target_sensitivity, val or {})  # refused before any work
    model_dir.mkdir(parents=True, exist_ok=True)
    stem = "lsnet" if name == "lsnet" else name.replace(":", "_")
    student = copy.deepcopy(student).cpu().eval()
    onnx_path = export_onnx(student, model_dir / f"{stem}.onnx", (1, 1, size, size))
    example = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))  # static batch 1
    diff = check_onnx_parity(student, onnx_path, example)
    latency = measure_onnx_latency(onnx_path, (1, 1, size, size))
    document = bundle_document(
        name=name, onnx_file=onnx_path.name, onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        package_version=_package_version(), size=size, preprocess=asdict(preprocess),
        pipeline_version=PIPELINE_VERSION, run=run, operating_point=record, intensity=intensity,
        extra={"chosen_on": chosen_on, "onnx_max_abs_diff": diff, "latency": latency})
    (model_dir / OPERATING_POINT_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return onnx_path, diff
