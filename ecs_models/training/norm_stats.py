"""Batch-norm running statistics: estimate them on a data set, pool them across sites.

A batch-norm layer trains on the statistics of each batch and predicts with running statistics.
In federated training every batch comes from one hospital (one scanner), so the layers learn on
per-scanner normalized features; the global model then predicts with averaged running
statistics. These helpers measure what that costs (``benchmarks/probe_norm_stats.py``,
docs/federated.md finding 6):

- :func:`estimate_batch_norm_stats`: the exact mean and variance every batch-norm layer sees
  over a loader (train-mode forward passes, cumulative average; the model's own statistics are
  left untouched);
- :func:`pool_site_stats`: the statistics of the union of several sites from each site's own
  (the law of total variance: mean of variances plus variance of means);
- :func:`use_batch_norm_stats`: a context that predicts with given statistics, then restores.

Statistics are ``{layer name: (mean [C], var [C])}``, float tensors on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["BatchNormStats", "batch_norm_layers", "estimate_batch_norm_stats", "pool_site_stats", "use_batch_norm_stats"]

BatchNormStats = dict[str, tuple[torch.Tensor, torch.Tensor]]


def batch_norm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """The model's batch-norm layers that track running statistics, by module name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


def _current(layers: Mapping[str, nn.modules.batchnorm._BatchNorm]) -> BatchNormStats:
    return {name: (m.running_mean.detach().cpu().clone(), m.running_var.detach().cpu().clone()) for name, m in layers.items()}


def _assign(layers: Mapping[str, nn.modules.batchnorm._BatchNorm], stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    missing = sorted(set(layers) - set(stats))
    if missing:
        raise KeyError(f"no statistics for batch-norm layers {missing[:5]}")
    for name, m in layers.items():
        mean, var = stats[name]
        m.running_mean.copy_(mean.to(m.running_mean))
        m.running_var.copy_(var.to(m.running_var))


@contextmanager
def use_batch_norm_stats(model: nn.Module, stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[nn.Module]:
    """Within the block the model's batch-norm layers hold ``stats``; afterwards their own again."""
    layers = batch_norm_layers(model)
    saved = _current(layers)
    _assign(layers, stats)
    try:
        yield model
    finally:
        _assign(layers, saved)


@torch.no_grad()
def estimate_batch_norm_stats(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> BatchNormStats:
    """Mean and (unbiased) variance of every batch-norm layer's input over ``batches``.

    ``batches`` yields images ``[B, C, H, W]`` or ``(images, labels)``; labels are not used.
    Each layer normalizes with the batch's statistics, as in training, and keeps the plain
    average of the batches' statistics (PyTorch's cumulative average, ``momentum=None``): no
    momentum, every batch weighs the same, so the mean is exact for equal batch sizes. The
    model's running statistics, momenta and train/eval mode are restored afterwards.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return {}
    saved, was_training = _current(layers), model.training
    counters = {n: (m.momentum, m.num_batches_tracked.clone()) for n, m in layers.items()}
    model.to(device).eval()
    for m in layers.values():
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    try:
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(images.to(device))
            seen += 1
        if seen == 0:
            raise ValueError("no batches to estimate batch-norm statistics from")
        return _current(layers)
    finally:
        _assign(layers, saved)
        for name, m in layers.items():
            m.momentum, tracked = counters[name]
            m.num_batches_tracked.copy_(tracked)
        model.train(was_training)


def pool_site_stats(site_stats: Sequence[BatchNormStats], weights: Sequence[float], *, between_sites: bool = True) -> BatchNormStats:
    """Statistics of the sites' union from each site's: ``mean = sum w_k m_k``,
    ``var = sum w_k v_k (+ sum w_k (m_k - mean)^2 with between_sites)``; weights are normalized
    (for example each site's number of images). ``between_sites=False`` is what averaging the
    sites' running statistics, as FedAvg does, gives."""
    if len(site_stats) != len(weights) or not site_stats:
        raise ValueError(f"{len(site_stats)} sites' statistics but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"site weights must sum to a positive number, got {list(weights)}")
    w = [float(x) / total for x in weights]
    pooled: BatchNormStats = {}
    for name in site_stats[0]:
        mean = sum(wk * s[name][0] for wk, s in zip(w, site_stats, strict=True))
        var = sum(wk * s[name][1] for wk, s in zip(w, site_stats, strict=True))
        if between_sites:
            var = var + sum(wk * (s[name][0] - mean) ** 2 for wk, s in zip(w, site_stats, strict=True))
        pooled[name] = (mean, var)
    return pooled
