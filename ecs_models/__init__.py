"""Models of the screening platform: registry, MobileViT teacher / LSNet student, timm wrappers.

``create_model(name, **cfg)`` builds any registered model; importing this package registers
``teacher``, ``lsnet``, the ``timm:<name>`` family and the SG-CycleGAN models.
"""

from __future__ import annotations

from ecs_models._registry import (
    create_model,
    is_model,
    list_models,
    register_model,
    register_model_family,
)

# Model modules register themselves on import (keep these explicit imports, after _registry).
from ecs_models import mobilevit, sg_cyclegan, timm_models  # noqa: F401  isort: skip
from ecs_models.mobilevit import ClassifierOutput, MobileViT, MobileViTConfig  # isort: skip

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
