"""Batch-norm statistics: exact estimation on a data set, pooling across sites, frozen training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecs_models.training.distill import DistillationModel, StageConfig, train_stage
from ecs_models.training.norm_stats import (
    batch_norm_layers,
    estimate_batch_norm_stats,
    pool_site_stats,
    use_batch_norm_stats,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _first_bn_input(net: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net[0](images).transpose(0, 1).reshape(3, -1)  # [C, B*H*W]


def test_estimate_is_the_exact_mean_and_variance_and_leaves_the_model_alone() -> None:
    net = _net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.randn(40, 1, 4, 4) * 3 + 1
    stats = estimate_batch_norm_stats(net, [images[:20], (images[20:], torch.zeros(20))])  # images or (images, labels)
    activations = _first_bn_input(net, images)
    mean, var = stats["1"]
    # equal-size batches: the mean is exact; the variance is the mean of per-batch variances
    assert torch.allclose(mean, activations.mean(dim=1), atol=1e-5)
    assert torch.allclose(var, activations.var(dim=1), rtol=0.05)
    assert set(stats) == {"1", "4"}
    assert not net.training and all(m.momentum == 0.1 for m in batch_norm_layers(net).values())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_pooling_sites_with_the_law_of_total_variance_recovers_the_union() -> None:
    net = _net().eval()
    site_a, site_b = torch.randn(30, 1, 4, 4) - 2, torch.randn(10, 1, 4, 4) * 2 + 3  # two "scanners"
    per_site = [estimate_batch_norm_stats(net, [x]) for x in (site_a, site_b)]
    total = pool_site_stats(per_site, [30, 10])["1"]
    naive = pool_site_stats(per_site, [30, 10], between_sites=False)["1"]
    union = _first_bn_input(net, torch.cat([site_a, site_b]))
    assert torch.allclose(total[0], union.mean(dim=1), atol=1e-4)
    assert torch.allclose(total[1], union.var(dim=1, unbiased=False), rtol=0.02)
    assert torch.all(naive[1] < total[1])  # averaging running variances misses the between-site part
    with pytest.raises(ValueError, match="weights"):
        pool_site_stats(per_site, [1.0])


def test_use_batch_norm_stats_predicts_with_them_then_restores() -> None:
    net = _net().eval()
    images = torch.randn(8, 1, 4, 4)
    own = net(images)
    shifted = {name: (m.running_mean + 5, m.running_var * 4) for name, m in batch_norm_layers(net).items()}
    with use_batch_norm_stats(net, shifted):
        assert not torch.allclose(net(images), own)
    assert torch.equal(net(images), own)
    with pytest.raises(KeyError, match="batch-norm"):
        with use_batch_norm_stats(net, {}):
            pass


def test_frozen_norm_stats_train_the_weights_but_keep_the_statistics() -> None:
    from ecs_models import create_model

    def train(frozen: bool) -> tuple[dict, dict]:
        torch.manual_seed(0)
        model = DistillationModel(create_model("lsnet", img_size=64, attention="dense", gradient_generator=False), None)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        images, labels = torch.randn(8, 1, 64, 64), torch.tensor([0, 1] * 4)
        train_stage(model, [(images, labels)], StageConfig(epochs=1, lr=1e-2, frozen_norm_stats=frozen),
                    device=torch.device("cpu"), log=lambda _m: None)
        return start, model.state_dict()

    start, end = train(frozen=True)
    stats = [k for k in start if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(start[k], end[k]) for k in stats)
    assert any(not torch.equal(start[k], end[k]) for k in start if k not in stats)
    start, end = train(frozen=False)
    assert any(not torch.equal(start[k], end[k]) for k in stats)
