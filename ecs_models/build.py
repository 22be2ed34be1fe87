"""Models from the plain-dict model spec that travels to the sites (``protocol.ModelSpec``): the
classifier (student + optional teacher), the SG-CycleGAN, the generator's part of its state, and
a content hash of named arrays. Used by the coordinator, the sites and centralized runs alike."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from ecs_models._registry import create_model
from ecs_models.training.distill import DistillationModel

__all__ = ["build_classifier", "build_gan", "generator_keys", "state_sha256"]


def state_sha256(state: Mapping[str, np.ndarray | torch.Tensor]) -> str:
    """Content hash of named arrays (sorted keys, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        digest.update(f"{key}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()



def build_classifier(spec: Mapping | object) -> DistillationModel:
    """``DistillationModel`` from a model spec: ``protocol.messages.ModelSpec`` or a mapping
    ``{"student": {"name", ...}, "teacher": {...} | None}``."""
    student_cfg = dict(spec["student"] if isinstance(spec, Mapping) else spec.student)
    teacher_cfg = spec.get("teacher") if isinstance(spec, Mapping) else spec.teacher
    student = create_model(student_cfg.pop("name"), **student_cfg)
    teacher = None
    if teacher_cfg:
        teacher_cfg = dict(teacher_cfg)
        teacher = create_model(teacher_cfg.pop("name"), **teacher_cfg)
    return DistillationModel(student, teacher)


def build_gan(spec: Mapping) -> torch.nn.Module:
    """SG-CycleGAN from ``{"name", "preset", "image_size"}``."""
    import ecs_models.sg_cyclegan  # noqa: F401  (registers sg_cyclegan / cyclegan_vanilla)

    cfg = dict(spec)
    return create_model(cfg.pop("name"), **cfg)


def generator_keys(state_keys: list[str]) -> list[str]:
    """Keys the MRI -> US translation needs (MAFE + that branch): what synthesis is sent."""
    return [k for k in state_keys if k.startswith(("mafe.", "branch_mri_to_us."))]
