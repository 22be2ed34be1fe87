"""SG-CycleGAN model: shapes, gradient reversal, DANN schedule, init, variants, registry."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TINY_GAN

from ecs_models._registry import create_model
from ecs_models.sg_cyclegan import (
    SG_CYCLEGAN_CFGS,
    DynamicConv,
    GradientReversal,
    SGCycleGAN,
    SGCycleGANCfg,
    create_sg_cyclegan,
    dann_lambda,
    grad_reverse,
)


@pytest.fixture(scope="module")
def tiny_model() -> SGCycleGAN:
    torch.manual_seed(0)
    return create_sg_cyclegan("cpu", **TINY_GAN)


def test_mafe_gives_32_channel_full_resolution_features(tiny_model: SGCycleGAN) -> None:
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    features = tiny_model.features(x)
    assert features.shape == (3, 32, 32, 32)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("vanilla", [False, True])
def test_generators_map_images_to_images_in_range(vanilla: bool) -> None:
    torch.manual_seed(0)
    model = create_sg_cyclegan("cpu", vanilla=vanilla, **TINY_GAN)
    x = torch.randn(2, 1, 32, 32) * 3  # outside [-1, 1] on purpose: tanh still bounds the output
    for out in (model.mri_to_us(x), model.us_to_mri(x), model(x)):
        assert out.shape == (2, 1, 32, 32)
        assert out.abs().max() <= 1.0


def test_patch_discriminator_outputs_a_score_map(tiny_model: SGCycleGAN) -> None:
    scores = tiny_model.disc_us(torch.zeros(2, 1, 32, 32))
    # two stride-2 4x4 convs (32 -> 16 -> 8), then two stride-1 4x4 convs with padding 1 (8 -> 7 -> 6)
    assert scores.shape == (2, 1, 6, 6)
    assert create_sg_cyclegan("paper").disc_mri(torch.zeros(1, 1, 256, 256)).shape == (1, 1, 30, 30)


def test_domain_classifier_gives_one_logit_per_image(tiny_model: SGCycleGAN) -> None:
    assert tiny_model.domain_classifier is not None
    assert tiny_model.domain_classifier(torch.rand(5, 32, 32, 32), 0.3).shape == (5,)


def test_dynamic_conv_mixes_kernels_per_pixel() -> None:
    torch.manual_seed(0)
    layer = DynamicConv(6, 5, num_kernels=3)
    x = torch.randn(2, 6, 8, 8)
    weights = layer.routing(x)
    assert weights.shape == (2, 3, 8, 8)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 8, 8))
    assert weights.std(dim=(2, 3)).min() > 0  # the mixture varies over space
    assert layer(x).shape == (2, 5, 8, 8)


def test_gradient_reversal_is_identity_forward_and_negates_backward() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = grad_reverse(x, 0.7)
    torch.testing.assert_close(y, x)
    upstream = torch.randn(4, 3)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -0.7 * upstream)
    layer = GradientReversal(0.25)
    x2 = torch.randn(2, requires_grad=True)
    layer(x2).sum().backward()
    torch.testing.assert_close(x2.grad, torch.full((2,), -0.25))


def test_dann_schedule_values() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-2.5)) - 1)  # 0.8483
    assert dann_lambda(0.5) == pytest.approx(0.84828, abs=1e-5)
    assert dann_lambda(1.0) == pytest.approx(0.98661, abs=1e-5)
    assert dann_lambda(2.0) == dann_lambda(1.0)  # progress is clamped to [0, 1]


def test_weights_are_initialised_normal_002() -> None:
    torch.manual_seed(0)
    model = create_sg_cyclegan("cpu")
    weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.Conv2d)])
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)


def test_vanilla_has_no_shared_extractor_or_domain_classifier() -> None:
    model = create_sg_cyclegan("cpu", vanilla=True, **TINY_GAN)
    assert model.mafe is None and model.domain_classifier is None
    x = torch.rand(1, 1, 32, 32)
    assert model.features(x) is x


def test_presets_and_overrides() -> None:
    assert SG_CYCLEGAN_CFGS["paper"].image_size == 256 and SG_CYCLEGAN_CFGS["paper"].n_res_blocks == 7
    assert SG_CYCLEGAN_CFGS["cpu"].image_size == 128 and SG_CYCLEGAN_CFGS["cpu"].n_res_blocks <= 3
    assert SG_CYCLEGAN_CFGS["paper"].mafe_channels == 32 and SG_CYCLEGAN_CFGS["paper"].n_down == 3
    model = create_sg_cyclegan("cpu", n_res_blocks=None, gen_width=8)  # None keeps the preset's value
    assert model.cfg.n_res_blocks == SG_CYCLEGAN_CFGS["cpu"].n_res_blocks and model.cfg.gen_width == 8
    assert len(model.branch_mri_to_us.res_blocks) == model.cfg.n_res_blocks
    with pytest.raises(TypeError, match="n_resblocks"):
        create_sg_cyclegan("cpu", n_resblocks=2)
    with pytest.raises(ValueError, match="divisible"):
        SGCycleGANCfg(image_size=100)


def test_registry_builds_both_variants(tmp_path) -> None:
    model = create_model("sg_cyclegan", preset="cpu", **TINY_GAN)
    vanilla = create_model("cyclegan_vanilla", preset="cpu", **TINY_GAN)
    assert isinstance(model, SGCycleGAN) and not model.vanilla and vanilla.vanilla
    torch.save(model.state_dict(), tmp_path / "gan.pt")
    loaded = create_model("sg_cyclegan", preset="cpu", checkpoint_path=str(tmp_path / "gan.pt"), **TINY_GAN)
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
