"""Registry: every name builds, None overrides are dropped, unknown keys fail loudly, timm offline."""

from __future__ import annotations

import os

import pytest
import torch

from ecs_models import create_model, is_model, list_models, register_model
from ecs_models.mobilevit import MobileViT


@pytest.mark.parametrize("name", list_models())
def test_every_registered_name_builds(name: str) -> None:
    model = create_model(name)
    assert isinstance(model, torch.nn.Module)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_builtin_names_are_registered() -> None:
    assert {"teacher", "lsnet"} <= set(list_models())
    assert is_model("timm:mobilevit_xxs") and not is_model("nope")


def test_none_overrides_are_dropped() -> None:
    model = create_model("lsnet", num_classes=None, norm=None, in_chans=None)
    assert isinstance(model, MobileViT)
    assert model.cfg.num_classes == 2 and model.cfg.norm == "batch" and model.cfg.in_chans == 1


def test_overrides_apply_and_lists_become_tuples() -> None:
    model = create_model("lsnet", num_classes=3, depths=[1, 1, 1], norm="group")
    assert model.cfg.depths == (1, 1, 1)
    assert model.classifier.out_features == 3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", ["lsnet", "teacher", "timm:mobilenetv2_050"])
def test_unknown_key_fails_naming_it(name: str) -> None:
    with pytest.raises(TypeError, match="num_clases"):
        create_model(name, num_clases=3)


def test_unknown_names_fail() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        create_model("lsnet_v9")
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm:not_a_model")


def test_invalid_value_fails() -> None:
    with pytest.raises(ValueError, match="attention"):
        create_model("lsnet", attention="sparse")


def test_timm_models_build_offline() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model = create_model("timm:mobilevit_xxs", num_classes=2, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 2)


def test_checkpoint_path_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_model("lsnet", depths=[1, 1, 1])
    path = tmp_path / "lsnet.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    torch.manual_seed(1)
    loaded = create_model("lsnet", depths=[1, 1, 1], checkpoint_path=str(path))
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model(name="lsnet")
        def other_lsnet() -> torch.nn.Module:  # pragma: no cover - never called
            return torch.nn.Identity()
