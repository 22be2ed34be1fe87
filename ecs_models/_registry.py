"""Model registry: ``@register_model`` builders behind ``create_model(name, **cfg)``.

Builders are plain functions whose keyword arguments are the model's configuration. Keyword
overrides whose value is ``None`` are dropped (an empty Hydra value never overwrites a model's
default); unknown keys raise ``TypeError`` naming them. Names of the form ``<prefix>:<name>``
(e.g. ``timm:mobilevit_xxs``) route to a family builder registered with
``register_model_family(prefix)``, called as ``builder(name, **cfg)``.

The built-in model modules (:data:`BUILTIN_MODULES`) register themselves when first looked up,
not when ``ecs_models`` is imported: the torch-free modules of the package (evaluation, model
inputs, the bundle format) serve the clinic tools, which run without torch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

__all__ = ["register_model", "register_model_family", "create_model", "list_models", "is_model"]

ModelBuilder = TypeVar("ModelBuilder", bound=Callable[..., Any])
BUILTIN_MODULES = ("ecs_models.mobilevit", "ecs_models.sg_cyclegan", "ecs_models.timm_models")

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}


def _load_builtin() -> None:
    """Import the built-in model modules (each registers its models; repeated calls are free)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def register_model(fn: ModelBuilder | None = None, *, name: str | None = None):
    """Register a builder under ``name`` (default: the function's name).

    Use as ``@register_model`` or ``@register_model(name="x")``. Registering a name twice with a
    different function raises ``ValueError`` (re-importing the same module is harmless).
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        key = name or builder.__name__
        existing = _MODELS.get(key)
        if existing is not None and existing.__qualname__ != builder.__qualname__:
            raise ValueError(f"model {key!r} is already registered by {existing.__module__}")
        _MODELS[key] = builder
        return builder

    return decorator(fn) if fn is not None else decorator


def register_model_family(prefix: str):
    """Register ``builder(name, **cfg)`` for every model name ``'<prefix>:<name>'``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        _FAMILIES[prefix] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted (family routes such as ``timm:<name>`` are not listed)."""
    _load_builtin()
    return sorted(_MODELS)


def is_model(name: str) -> bool:
    """Whether ``create_model(name)`` can resolve ``name`` (a family prefix counts)."""
    _load_builtin()
    prefix, sep, _ = name.partition(":")
    return name in _MODELS or (bool(sep) and prefix in _FAMILIES)


def _check_keys(name: str, builder: Callable[..., nn.Module], cfg: dict[str, object]) -> None:
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return  # the builder validates its own **overrides
    accepted = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    unknown = sorted(set(cfg) - accepted)
    if unknown:
        raise TypeError(
            f"unknown config key(s) {unknown} for model {name!r}; valid: {sorted(accepted)}"
        )


def create_model(name: str, **cfg: object) -> nn.Module:
    """Build the model registered as ``name`` with keyword overrides ``cfg``.

    ``None`` values are dropped; unknown keys raise ``TypeError``; unknown names ``ValueError``.
    """
    _load_builtin()
    overrides = {k: v for k, v in cfg.items() if v is not None}
    if name in _MODELS:
        builder = _MODELS[name]
        _check_keys(name, builder, overrides)
        return builder(**overrides)
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _FAMILIES:
        builder = _FAMILIES[prefix]
        _check_keys(name, builder, overrides)
        return builder(rest, **overrides)
    raise ValueError(
        f"unknown model {name!r}; registered: {list_models()}, families: {sorted(f + ':<name>' for f in _FAMILIES)}"
    )
