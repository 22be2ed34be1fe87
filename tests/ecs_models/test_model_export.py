"""ONNX export (TopK + Gather for LSNet) and onnxruntime parity."""

from __future__ import annotations

import pytest
import torch

from ecs_models import create_model
from ecs_models.export import check_onnx_parity, export_onnx


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("lsnet", {}),
        ("lsnet", {"topk_ratio": 0.25, "norm": "group"}),
        ("teacher", {"depths": [1, 1, 1]}),
        ("timm:mobilevit_xxs", {}),
    ],
)
def test_onnx_matches_torch(name: str, overrides: dict, tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    model.train()
    path = export_onnx(model, tmp_path / "model.onnx", (2, 1, 64, 64))
    assert model.training  # mode restored
    diff = check_onnx_parity(model, path, torch.randn(2, 1, 64, 64), atol=1e-4)
    assert diff <= 1e-4


@pytest.mark.slow
def test_lsnet_exports_with_the_dynamo_exporter(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("lsnet", depths=[1, 1, 1])
    path = export_onnx(model, tmp_path / "lsnet.onnx", (1, 1, 64, 64), opset=18, dynamo=True)
    assert check_onnx_parity(model, path, torch.randn(1, 1, 64, 64), atol=1e-4) <= 1e-4


def test_parity_tolerance_follows_the_logit_scale_and_still_catches_a_stale_file(tmp_path) -> None:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.mul_(1e3)  # logits in the hundreds: float32 rounding alone is ~1e-5 x that
    path = export_onnx(model, tmp_path / "big.onnx", (1, 1, 8, 8))
    x = torch.randn(1, 1, 8, 8)
    check_onnx_parity(model, path, x, atol=1e-4)
    with torch.no_grad():
        model[1].bias.add_(1.0)  # the file no longer matches the model
    with pytest.raises(AssertionError, match="logit scale"):
        check_onnx_parity(model, path, x, atol=1e-4)
