"""A run's checkpoint given where a bundle is expected: exported to a bundle by the training
stack's exporter (:func:`ecs_models.run_checkpoint.export_checkpoint`, which calls the one bundle
writer, :func:`ecs_models.bundle.export_student`), then read like any bundle.

That exporter needs torch, which the clinic install does not have: it is imported by name, and
only when a checkpoint is given, so the clinic tools never import torch otherwise (the
import-linter contract on ``clinic`` holds for every import this package states). Without torch,
a checkpoint is refused with the install command.
"""

from __future__ import annotations

import importlib
from importlib.util import find_spec
from pathlib import Path

from ecs_models.bundle_format import OPERATING_POINT_FILE, BundleError

__all__ = ["CHECKPOINT_FILE", "checkpoint_of", "export_checkpoint"]

CHECKPOINT_FILE = "checkpoint.pt"
EXPORTER = "ecs_models.run_checkpoint"  # imports torch


def checkpoint_of(model: Path) -> Path | None:
    """The checkpoint ``model`` names: a ``.pt`` file, or a run folder with ``checkpoint.pt`` and
    no exported bundle (``model/`` or its own ``operating_point.json``); else None."""
    if model.suffix == ".pt":
        return model
    if model.is_dir() and not (model / OPERATING_POINT_FILE).is_file() \
            and not (model / "model" / OPERATING_POINT_FILE).is_file() and (model / CHECKPOINT_FILE).is_file():
        return model / CHECKPOINT_FILE
    return None


def export_checkpoint(checkpoint: Path, model_dir: Path) -> Path:
    """Export ``checkpoint`` to the bundle folder ``model_dir``; returns ``model_dir``.

    Raises:
        FileNotFoundError: no such file.
        BundleError: no training stack (torch) in this install, or an unusable checkpoint.
    """
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if find_spec("torch") is None:
        raise BundleError(f'{checkpoint}: a PyTorch checkpoint needs the training stack: pip install ".[train]" '
                          "(or evaluate the run's exported bundle, <run>/model/)")
    return importlib.import_module(EXPORTER).export_checkpoint(checkpoint, model_dir)
