"""Parameter and multiply-add counts (1 multiply-add = 1 FLOP), cross-checked with fvcore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecs_models import create_model
from ecs_models.complexity import (
    complexity_report,
    count_macs,
    count_macs_fvcore,
    count_parameters,
)
from ecs_models.sparse_attention import sparse_attention


def test_lsnet_at_320_fits_the_paper_budget_and_fvcore_agrees() -> None:
    model = create_model("lsnet")
    ours = count_macs(model, (1, 1, 320, 320))
    assert ours <= 0.289e9
    fvcore_macs = count_macs_fvcore(model, (1, 1, 320, 320))  # norms excluded, as ours
    assert abs(fvcore_macs - ours) <= 0.10 * ours
    with_norms = count_macs_fvcore(model, (1, 1, 320, 320), include_norms=True)
    assert 0 < with_norms - fvcore_macs < 0.1 * ours  # norms: about 0.015 GMACs
    assert 0.35e6 <= count_parameters(model) <= 0.45e6  # paper: about 0.40 M


def test_teacher_size_matches_the_paper() -> None:
    assert 6.4e6 <= count_parameters(create_model("teacher")) <= 7.0e6  # paper: about 6.7 M


class _SparseProducts(nn.Module):
    def __init__(self, index: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index)
        self.weight = nn.Parameter(torch.zeros(()))  # count_macs reads device/dtype from it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p, n, h, dh = x.shape
        return sparse_attention(x, x, x, self.index, dh**-0.5)[0]


def test_sparse_products_are_counted_at_their_gathered_size() -> None:
    b, p, n, h, dh, k = 1, 4, 50, 4, 8, 3
    index = torch.randint(0, n, (b, p, n, h, k))
    macs = count_macs(_SparseProducts(index), (b, p, n, h, dh))
    assert macs == 2 * b * p * n * h * k * dh  # q.k over k keys, then weights.v


def test_report_has_params_and_gmacs() -> None:
    report = complexity_report("lsnet", (1, 1, 64, 64))
    assert report["params"] == count_parameters(create_model("lsnet"))
    assert report["gmacs"] == pytest.approx(report["macs"] / 1e9)
    assert 0 < report["gmacs"] < 0.05
