"""``timm:<name>``: any timm classifier, built offline (``pretrained=False``).

Wraps ``timm.create_model``; weights come only from a local ``checkpoint_path`` (never the hub).
timm is imported when a ``timm:`` model is built, not when ``ecs_models`` is: it pulls in
torchvision and ``torch._dynamo`` (about 3 s of CPU), which every ClientApp process would pay
per message under the Deployment Runtime (docs/benchmarks.md) although the federation never
builds a timm model.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ecs_models._registry import register_model_family

__all__ = ["timm_model"]


@register_model_family("timm")
def timm_model(
    name: str,
    *,
    in_chans: int = 1,
    num_classes: int = 2,
    checkpoint_path: str | Path | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
) -> nn.Module:
    """timm model ``name`` with ``in_chans`` input channels and ``num_classes`` outputs.

    ``checkpoint_path``: optional local timm-compatible state dict (loaded with
    ``timm.models.load_checkpoint``), never downloaded.
    """
    import timm

    if name not in timm.list_models():
        raise ValueError(f"unknown timm model {name!r}")
    extra = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
    model = timm.create_model(
        name,
        pretrained=False,
        in_chans=in_chans,
        num_classes=num_classes,
        drop_rate=drop_rate,
        **extra,
    )
    if checkpoint_path is not None:
        timm.models.load_checkpoint(model, str(Path(checkpoint_path)))
    return model
