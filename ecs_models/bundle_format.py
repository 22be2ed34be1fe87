"""The model bundle's description, ``operating_point.json``: written by
:func:`ecs_models.bundle.export_student` (the one writer), read back without torch by
:func:`read_bundle` for ``ecs-evaluate`` and ``ecs-screen``.

The document states everything needed to feed the model what it was evaluated on::

    format                 BUNDLE_FORMAT
    model                  {name, onnx (file name), onnx_sha256, package, package_version}
    run                    {kind, dir, experiment, ...}: the run the model came from
    rule, target_sensitivity, threshold, val_sensitivity, val_specificity, ...: the operating point
    score                  what the model's output probability is
    input.shape            [1, 1, size, size] (NCHW, float32)
    input.range            [-1, 1]: 2 * pixel - 1 (ecs_models.inputs.model_input)
    input.resize           {from (PreprocessConfig.output_size), to (size), method}
    input.preprocess       every PreprocessConfig field and the pipeline version of client.data
    input.intensity        training intensity statistics (ecs_models.inputs.intensity_summary) or null
    latency                {p50_ms, p95_ms, runs, threads, batch, cpu, measured_on}: ONNX Runtime on the
                           exporting machine (ecs_models.latency); absent in bundles exported before it

This module imports neither torch nor the data layer: the preprocess block is plain values that
the caller turns back into a ``client.data.preprocess.PreprocessConfig``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecs_models.inputs import INPUT_RANGE, RESIZE_METHOD

__all__ = ["BUNDLE_FORMAT", "BundleError", "BundleSpec", "bundle_document", "read_bundle"]

BUNDLE_FORMAT = 2  # 1: "preprocessing": "client.data PreprocessConfig, resized" (not reproducible)
OPERATING_POINT_FILE = "operating_point.json"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class BundleSpec:
    """A bundle read back: the ONNX file, the operating point and the exact input recipe.

    ``preprocess``: PreprocessConfig fields (``pipeline_version`` removed, kept apart);
    ``size``: the model's input side in pixels; ``intensity``: see :mod:`ecs_models.inputs`;
    ``latency``: the exporting machine's measurement (ms, see :mod:`ecs_models.latency`) or None
    for bundles exported before it was recorded.
    """

    onnx_path: Path
    name: str
    threshold: float
    size: int
    preprocess: dict[str, Any]
    pipeline_version: int
    intensity: dict[str, Any] | None
    document: dict[str, Any]
    latency: dict[str, Any] | None = None


def bundle_document(*, name: str, onnx_file: str, onnx_sha256: str, package_version: str, size: int,
                    preprocess: Mapping[str, Any], pipeline_version: int, run: Mapping[str, Any],
                    operating_point: Mapping[str, Any], intensity: Mapping[str, Any] | None,
                    extra: Mapping[str, Any]) -> dict[str, Any]:
    """The ``operating_point.json`` document (see the module docstring); ``size`` in pixels."""
    return {
        "format": BUNDLE_FORMAT,
        "model": {"name": name, "onnx": onnx_file, "onnx_sha256": onnx_sha256, "package": "ecs-fl",
                  "package_version": package_version},
        "run": dict(run),
        **operating_point,
        "score": "softmax probability of class 1 (myometrial invasion)",
        "input": {
            "shape": [1, 1, size, size], "range": list(INPUT_RANGE),
            "resize": {"from": preprocess.get("output_size"), "to": size, "method": RESIZE_METHOD},
            "preprocess": {**preprocess, "pipeline_version": pipeline_version},
            "intensity": dict(intensity) if intensity is not None else None,
        },
        **extra,
    }


def _load(model: Path) -> tuple[Path, dict[str, Any]]:
    folder = model if model.is_dir() else model.parent
    path = folder / OPERATING_POINT_FILE
    if not path.is_file():
        raise BundleError(f"{folder}: no {OPERATING_POINT_FILE} (a model bundle is <name>.onnx + {OPERATING_POINT_FILE})")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from None
    if not isinstance(document, dict):
        raise BundleError(f"{path}: not a JSON object")
    return path, document


def read_bundle(model: str | Path) -> BundleSpec:
    """Read a bundle: ``model`` is its folder, its ONNX file or its ``operating_point.json``.

    Raises:
        BundleError: no or unreadable ``operating_point.json``, a format before
            :data:`BUNDLE_FORMAT` (its preprocessing is not stated), a missing ONNX file, or one
            whose sha256 is not the recorded one.
    """
    model = Path(model)
    path, doc = _load(model)
    if doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: bundle format {doc.get('format', 1)}, this version reads {BUNDLE_FORMAT}; "
                          "re-export the model (older bundles do not state their preprocessing)")
    try:
        spec_input, onnx_name = doc["input"], doc["model"]["onnx"]
        preprocess = dict(spec_input["preprocess"])
        pipeline_version = int(preprocess.pop("pipeline_version"))
        size, threshold = int(spec_input["shape"][-1]), float(doc["threshold"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BundleError(f"{path}: incomplete bundle description ({type(exc).__name__}: {exc})") from None
    onnx_path = model if model.suffix == ".onnx" else path.parent / onnx_name
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: model file not found")
    recorded = doc["model"].get("onnx_sha256")
    if recorded and hashlib.sha256(onnx_path.read_bytes()).hexdigest() != recorded:
        raise BundleError(f"{onnx_path}: not the model {path.name} describes (sha256 differs): a damaged copy, "
                          "or files of two bundles mixed")
    return BundleSpec(onnx_path, str(doc["model"].get("name", onnx_path.stem)), threshold, size, preprocess,
                      pipeline_version, spec_input.get("intensity"), doc, _latency(doc.get("latency")))


def _latency(block: Any) -> dict[str, Any] | None:
    """The recorded latency when it has its two figures; older bundles have none (not an error)."""
    if isinstance(block, dict) and all(isinstance(block.get(k), int | float) for k in ("p50_ms", "p95_ms")):
        return block
    return None
