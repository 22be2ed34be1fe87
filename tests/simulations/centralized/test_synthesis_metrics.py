"""Synthesis metrics (SSIM, Dice, KID, structure report) and the GAN data helpers on a tiny cohort."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from client.data.decode import DecodedImage
from client.data.gan_images import (
    VirtualProbe,
    load_center_mri,
    load_center_us,
    load_paired_renders,
)
from client.data.preprocess import PreprocessConfig, preprocess
from simulations.centralized.synthesis_metrics import (
    RandomConvFeatures,
    dice,
    extract_features,
    intensity_clusters,
    kid,
    ssim,
    structure_metrics,
)


def test_ssim_is_one_for_identical_images_and_lower_otherwise() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((40, 40))
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, mask) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, rng.random((40, 40))) < 0.2
    assert ssim(image, 0.5 * image + 0.25) < 1.0


def test_dice_values() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:6, 2:6] = True
    assert dice(mask, mask) == 1.0
    assert dice(mask, ~mask) == 0.0
    assert dice(np.zeros_like(mask), np.zeros_like(mask)) == 1.0
    half = mask.copy()
    half[2:4] = False
    assert dice(half, mask) == pytest.approx(2 * 8 / (8 + 16))


def test_intensity_clusters_order_dark_to_bright() -> None:
    image = np.concatenate([np.full((4, 10), 0.1), np.full((4, 10), 0.5), np.full((4, 10), 0.9)])
    mask = np.ones_like(image, bool)
    mask[0, 0] = False
    labels = intensity_clusters(image, mask)
    assert labels[0, 0] == -1 and (labels[1:4] == 0).all() and (labels[4:8] == 1).all() and (labels[8:] == 2).all()


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    same = kid(a, b, subsets=20, subset_size=100)
    shifted = kid(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same["kid"]) < 0.02
    assert shifted["kid"] > 0.2 and shifted["kid"] > 10 * abs(same["kid"])
    assert kid(a, a.clone(), subsets=5)["kid"] == pytest.approx(kid(a, a, subsets=5)["kid"])
    with pytest.raises(ValueError):
        kid(a[:1], b)


def test_kid_on_random_conv_features_separates_image_distributions() -> None:
    extractor = RandomConvFeatures(seed=0, width=8)
    g = torch.Generator().manual_seed(1)
    dark = torch.rand(60, 1, 32, 32, generator=g) * 0.5 - 1
    dark2 = torch.rand(60, 1, 32, 32, generator=g) * 0.5 - 1
    bright = torch.rand(60, 1, 32, 32, generator=g) * 0.5 + 0.5
    fa, fb, fc = (extract_features(extractor, x, batch_size=16) for x in (dark, dark2, bright))
    assert fa.shape == (60, 32)
    assert kid(fa, fc, subset_size=50)["kid"] > 100 * abs(kid(fa, fb, subset_size=50)["kid"])
    torch.testing.assert_close(RandomConvFeatures(seed=0, width=8)(dark[:2]), extractor(dark[:2]))


def test_structure_metrics_perfect_for_the_true_render() -> None:
    rng = np.random.default_rng(0)
    tissue = np.zeros((2, 64, 64), np.uint8)
    tissue[:, 8:32, 8:40] = 2  # myometrium
    tissue[:, 40:58, 10:34] = 1  # fluid
    fan = np.ones((2, 64, 64), bool)
    levels = np.array([0.5, 0.05, 0.25], np.float32)[np.minimum(tissue, 2)]
    us = torch.from_numpy(levels + 0.01 * rng.standard_normal(levels.shape).astype(np.float32))[:, None] * 2 - 1
    report = structure_metrics(us, us, tissue, fan, mri_input=-us)
    assert report["ssim"] == pytest.approx(1.0)
    assert report["dice_hypoechoic"] == report["dice_hypoechoic_ceiling"] > 0.85  # blur at the edges
    assert report["dice_uterus"] == report["dice_uterus_ceiling"] > 0.85
    assert report["ssim_mri_input"] < 0.5 and report["n_pairs"] == 2


def test_virtual_probe_mask_matches_the_letterboxed_fan_layout() -> None:
    probe = VirtualProbe(field_of_view="fan")
    mask = probe.sector_mask(128)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    assert cols[0] <= 1 and cols[-1] >= 126  # the sector spans the field's width
    assert abs((rows[0] + rows[-1]) / 2 - 63.5) < 2  # and is centred vertically
    assert 0.25 < mask.mean() < 0.45
    view = probe.view(np.ones((100, 100), np.float32), (2.0, 2.0), 64)  # 200 mm field covers it all
    np.testing.assert_array_equal(view > 0.99, probe.sector_mask(64))


def test_virtual_probe_apex_layout_matches_the_data_layer() -> None:
    """A rendered fan through the US pipeline (apex square) and the probe's mask agree."""
    probe = VirtualProbe()  # apex, the data layer's default
    assert probe.field_side_mm == pytest.approx(probe.sector_height_mm)
    px = 0.25  # mm per pixel of the rendered fan's bounding box
    height, width = round(probe.sector_height_mm / px), round(probe.sector_width_mm / px)
    ys, xs = np.meshgrid((np.arange(height) + 0.5) * px, (np.arange(width) + 0.5) * px, indexing="ij")
    half = np.radians(probe.sector_angle_deg) / 2
    dy, dx = ys + probe.apex_radius_mm * np.cos(half), xs - probe.sector_width_mm / 2
    radius, angle = np.hypot(dx, dy), np.arctan2(dx, dy)
    fan = (radius >= probe.apex_radius_mm) & (radius <= probe.apex_radius_mm + probe.depth_mm) & (np.abs(angle) <= half)
    frames = fan[None].astype(np.float32) * 0.8
    decoded = DecodedImage(frames=frames, color_deviation=None, frame_indices=(0,), n_frames_total=1, rows=height,
                           cols=width, modality="US", photometric="MONOCHROME2", transfer_syntax="1.2.840.10008.1.2.1",
                           samples_per_pixel=1, bits_stored=8, spacing_mm=(px, px), region=None)
    us = preprocess(decoded, PreprocessConfig(output_size=64, mask_fan=False, remove_annotations=False))[0]
    mask = probe.sector_mask(64)
    assert mask[0].sum() < mask[-1].sum() and mask[:, 0].any()  # apex at the top, lateral edges cut
    assert np.mean((us > 0.4) != mask) < 0.02  # the same layout, up to edge pixels


def test_gan_data_helpers_on_a_tiny_cohort(tiny_cohort: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    us = load_center_us(tiny_cohort / "university", image_size=32, cache_dir=cache)
    mri = load_center_mri(tiny_cohort / "university", image_size=32, cache_dir=cache)
    for images in (us, mri):
        assert len(images) > 0 and images.images.shape[1:] == (1, 32, 32)
        assert images.images.dtype == torch.float32
        assert images.images.min() >= -1 and images.images.max() <= 1 and images.images.max() > 0
        assert len(images.labels) == len(images.patient_ids) == len(images)
    outside = torch.from_numpy(~VirtualProbe().sector_mask(32))
    assert outside[0].any() and outside[:, 0].any()  # the top corners around the apex
    assert (mri.images[:, 0][:, outside] == -1).all()  # the sector mask blanks them
    again = load_center_mri(tiny_cohort / "university", image_size=32, cache_dir=cache)  # from cache
    torch.testing.assert_close(again.images, mri.images)
    no_mri = load_center_mri(tiny_cohort / "clinic", image_size=32, cache_dir=cache)
    assert len(no_mri) == 0 and no_mri.images.shape == (0, 1, 32, 32)
    assert len(load_paired_renders(tiny_cohort / "clinic", image_size=32, cache_dir=cache)) == 0
    empty = tmp_path / "empty_center"
    empty.mkdir()
    assert len(load_center_us(empty, image_size=32, cache_dir=cache)) == 0


def test_paired_renders_share_one_grid(tiny_cohort: Path, tmp_path: Path) -> None:
    center = tmp_path / "university"
    shutil.copytree(tiny_cohort / "university" / "paired", center / "paired")
    paired = load_paired_renders(center, image_size=32, cache_dir=None)
    assert len(paired) == 2
    assert paired.mri.shape == paired.us.shape == (2, 1, 32, 32)
    assert paired.tissue.shape == paired.fan.shape == (2, 32, 32) and paired.tissue.dtype == np.uint8
    signal = paired.us[:, 0].numpy() > -0.99
    assert (signal == paired.fan).mean() > 0.85  # the US fan and the tissue map's fan line up
    assert (paired.mri[:, 0].numpy()[~paired.fan] == -1).all()
    report = structure_metrics(paired.us, paired.us, paired.tissue, paired.fan, mri_input=paired.mri)
    assert report["ssim"] == pytest.approx(1.0)
