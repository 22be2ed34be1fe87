"""The numpy evaluation resize equals torchvision's antialiased Resize that training used before it
moved to numpy, so moving it changed no model's inputs beyond float rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from ecs_models.inputs import intensity_summary, model_input, resize_bilinear


@pytest.mark.parametrize(("height", "width", "size"), [(160, 160, 128), (64, 64, 128), (100, 77, 32), (256, 256, 320)])
def test_resize_matches_torchvision_antialiased_bilinear(height: int, width: int, size: int) -> None:
    image = np.random.default_rng(0).random((1, height, width), dtype=np.float32)
    expected = v2.Resize((size, size), antialias=True)(torch.from_numpy(image)).numpy()
    # float32 weights in torch: ~1e-7 when shrinking, ~1e-5 when enlarging (centres near 300 px)
    np.testing.assert_allclose(resize_bilinear(image, size), expected, atol=2e-5, rtol=0)


def test_model_input_is_clipped_resized_and_mapped_to_minus_one_one() -> None:
    image = np.array([[[-0.5, 0.25], [0.75, 2.0]]], dtype=np.float32)
    np.testing.assert_array_equal(model_input(image, 2), [[[-1.0, -0.5], [0.5, 1.0]]])
    assert model_input(np.zeros((3, 40, 40)), 16).shape == (3, 16, 16)


def test_intensity_summary_counts_lit_pixels_only() -> None:
    frames = np.zeros((4, 8, 8), dtype=np.float32)
    frames[:, :4] = np.array([0.2, 0.4, 0.6, 0.8])[:, None, None]  # half of each frame black
    summary = intensity_summary(frames)
    assert summary["n_images"] == 4 and summary["mean"][1] == pytest.approx(0.5)
    assert summary["std"] == [0.0, 0.0, 0.0]
