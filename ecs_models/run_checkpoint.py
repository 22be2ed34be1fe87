"""A centralized run's checkpoint exported as a model bundle, so that ``ecs-evaluate`` can take a
checkpoint: ``checkpoint.pt`` (``{"model": DistillationModel state, "metrics": ...}``, written by
``ecs-train``) and the run's resolved ``config.yaml`` next to it give the student, the operating
point and the preprocessing, which :func:`ecs_models.bundle.export_student` (the one writer)
turns into ``<name>.onnx`` + ``operating_point.json`` as the run itself did.

Needs the training install (torch). The clinic tools load this module by name only when given a
checkpoint (:mod:`clinic.checkpoint`), so they still run without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from ecs_models._registry import create_model
from ecs_models.bundle import export_student
from ecs_models.bundle_format import BundleError
from ecs_models.preprocessing import PreprocessConfig

__all__ = ["RUN_CONFIG", "export_checkpoint", "student_kwargs"]

RUN_CONFIG = "config.yaml"  # the run's resolved configuration (simulations.centralized.run writes it)


def student_kwargs(model_cfg: dict[str, Any], img_size: int) -> tuple[str, dict[str, Any]]:
    """(registry name, builder keywords) of a run's ``model`` config; ``img_size`` in pixels.

    An LSNet config without ``selection_region`` is from a run before region selection existed:
    that model selected keys per query (1), which the current default (2) would not compute.
    """
    kwargs = dict(model_cfg)
    name = kwargs.pop("name")
    if name in ("lsnet", "teacher"):
        kwargs["img_size"] = int(img_size)
    if name == "lsnet":
        kwargs.setdefault("selection_region", 1)
    return name, kwargs


def _load(checkpoint: Path) -> tuple[dict, dict]:
    config = checkpoint.parent / RUN_CONFIG
    if not config.is_file():
        raise BundleError(f"{checkpoint}: no {RUN_CONFIG} next to it (the run's configuration names its model)")
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a file it cannot read
        raise BundleError(f"{checkpoint}: not a centralized run's checkpoint ({type(exc).__name__}); a federated "
                          "run's model is exported to <run>/model/ when the run ends") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("model"), dict) and isinstance(saved.get("metrics"), dict)):
        raise BundleError(f"{checkpoint}: not a centralized run's checkpoint (no model state and metrics)")
    return yaml.safe_load(config.read_text()), saved


def export_checkpoint(checkpoint: str | Path, model_dir: Path) -> Path:
    """Export ``checkpoint`` (a centralized run's ``checkpoint.pt``) to ``model_dir`` as the run
    exported it: same student weights, size, operating point and preprocessing; no training
    intensity statistics (the checkpoint does not hold them). Returns ``model_dir``.

    Raises:
        BundleError: no ``config.yaml`` next to it, or not a centralized run's checkpoint (or
            configuration).
    """
    checkpoint = Path(checkpoint)
    cfg, saved = _load(checkpoint)
    try:
        metrics, training = saved["metrics"], cfg["training"]
        size, preprocess_size = int(training["img_size"]), int(training["preprocess_size"])
        name, kwargs = student_kwargs(cfg["model"], size)
        threshold, target = float(metrics["threshold"]), float(metrics["operating_point"]["target_sensitivity"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{checkpoint}: its run's {RUN_CONFIG} or metrics not understood "
                          f"({type(exc).__name__}: {exc}; not an ecs-train run?)") from None
    student = create_model(name, **kwargs)
    try:
        student.load_state_dict({k.removeprefix("student."): v for k, v in saved["model"].items() if k.startswith("student.")})
    except RuntimeError as exc:  # missing or misshapen weights
        detail = " ".join(str(exc).split())[:200]  # one line
        raise BundleError(f"{checkpoint}: its weights do not fit {name} of {RUN_CONFIG} ({detail})") from None
    run_dir = checkpoint.parent
    export_student(student, model_dir, name=name, size=size, threshold=threshold, target_sensitivity=target,
                   val=metrics.get("val"),
                   chosen_on="validation scores of the pooled training centers (centralized; exported from the checkpoint)",
                   preprocess=PreprocessConfig(output_size=preprocess_size),
                   run={"kind": "centralized", "dir": str(run_dir), "name": run_dir.name, "mode": cfg.get("mode"),
                        "experiment": cfg.get("experiment_name"), "seed": cfg.get("seed"),
                        "train_centers": metrics.get("train_centers"), "exported_from": checkpoint.name})
    return model_dir
