"""The exported model bundle a run leaves in ``<run_dir>/model/``: the student as ONNX
(``<name>.onnx``, checked against PyTorch with onnxruntime) and ``operating_point.json`` (the
threshold chosen on validation data and what it means). Written alike by centralized and
federated runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from ecs_models.evaluation import operating_point_record
from ecs_models.export import check_onnx_parity, export_onnx

__all__ = ["export_student"]


def export_student(student: torch.nn.Module, model_dir: Path, *, name: str, size: int, threshold: float,
                   target_sensitivity: float, val: dict | None, chosen_on: str) -> tuple[Path, float]:
    """Write ``model_dir/<name>.onnx`` (input ``[1, 1, size, size]`` in [-1, 1]) and
    ``operating_point.json``; returns (the ONNX path, onnxruntime's largest absolute difference
    from PyTorch on one random input). ``val``: the validation metrics *at* ``threshold`` (their
    ``threshold`` must be it: figures of another threshold are refused), recorded with the rule
    (sensitivity-first) and ``target_sensitivity``."""
    record = operating_point_record(threshold, target_sensitivity, val or {})  # refused before any work
    model_dir.mkdir(parents=True, exist_ok=True)
    stem = "lsnet" if name == "lsnet" else name.replace(":", "_")
    student = copy.deepcopy(student).cpu().eval()
    onnx_path = export_onnx(student, model_dir / f"{stem}.onnx", (1, 1, size, size))
    example = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))  # static batch 1
    diff = check_onnx_parity(student, onnx_path, example)
    operating_point = {
        **record,
        "score": "softmax probability of class 1 (myometrial invasion)",
        "input": {"shape": [1, 1, size, size], "range": [-1.0, 1.0], "preprocessing": "client.data PreprocessConfig, resized"},
        "chosen_on": chosen_on, "onnx_max_abs_diff": diff,
    }
    (model_dir / "operating_point.json").write_text(json.dumps(operating_point, indent=2) + "\n")
    return onnx_path, diff
