"""Models of the screening platform: registry, MobileViT teacher / LSNet student, timm wrappers.

``create_model(name, **cfg)`` builds any registered model: ``teacher``, ``lsnet``, the
``timm:<name>`` family and the SG-CycleGAN models, whose modules register themselves on the first
lookup (:mod:`ecs_models._registry`). Importing this package does not import torch: the clinic
tools (``clinic``) use its torch-free modules (:mod:`ecs_models.evaluation`,
:mod:`ecs_models.inputs`, :mod:`ecs_models.bundle_format`) without the training stack.
"""

from __future__ import annotations

import importlib
from typing import Any

from ecs_models._registry import (
    create_model,
    is_model,
    list_models,
    register_model,
    register_model_family,
)

__all__ = [
    "ClassifierOutput",
    "MobileViT",
    "MobileViTConfig",
    "create_model",
    "is_model",
    "list_models",
    "register_model",
    "register_model_family",
]

_LAZY = {"ClassifierOutput": "ecs_models.mobilevit", "MobileViT": "ecs_models.mobilevit",
         "MobileViTConfig": "ecs_models.mobilevit"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # torch only when a model class is asked for
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
