"""A tiny classifier for export and clinic tests: a 3x3 convolution, seconds to export to ONNX.
Registered as ``tiny_classifier`` so that a run's config can name it (checkpoint tests)."""

from __future__ import annotations

import torch

from ecs_models import register_model


class TinyClassifier(torch.nn.Module):
    """Input ``[N, 1, S, S]``, logits ``[N, 2]``; the same weights every time (seed 0)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


@register_model
def tiny_classifier() -> TinyClassifier:
    return TinyClassifier()
