"""Client-side halves of FedProx (proximal gradient) and FedBN (local normalization state)."""

from __future__ import annotations

import torch
from torch import nn

from ecs_models import create_model
from strategies.fedbn import LocalStateStore, norm_keys, split_norm
from strategies.fedprox import proximal_term


def test_proximal_term_adds_mu_times_distance_to_the_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    mu = 0.5
    with proximal_term(model, mu):
        anchor = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            model.weight.add_(1.0)  # move away from the global model
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        with_term = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()  # hooks removed on exit
    plain = [p.grad.clone() for p in model.parameters()]
    for g_term, g_plain, p, a in zip(with_term, plain, model.parameters(), anchor, strict=True):
        torch.testing.assert_close(g_term, g_plain + mu * (p.detach() - a))


def _local_sgd(mu: float, steps: int = 50) -> float:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    start = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(64, 4), torch.randn(64, 1) * 3
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with proximal_term(model, mu):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    return float(sum((p.detach() - s).norm() ** 2 for p, s in zip(model.parameters(), start, strict=True)) ** 0.5)


def test_larger_mu_keeps_the_client_update_closer_to_the_global_model() -> None:
    norms = [_local_sgd(mu) for mu in (0.0, 0.1, 1.0, 10.0)]
    assert norms == sorted(norms, reverse=True) and norms[-1] < 0.2 * norms[0]
    assert _local_sgd(0.0) == _local_sgd(-1.0)  # mu <= 0: plain FedAvg client


def test_norm_keys_cover_batchnorm_params_and_statistics_only() -> None:
    model = create_model("lsnet", img_size=96, channels=[8, 8, 12, 12, 16, 16, 24, 24, 32, 32, 64],
                         transformer_dims=[16, 24, 32], depths=[1, 1, 1])
    keys = norm_keys(model)
    bn = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and {f"{bn[0]}.weight", f"{bn[0]}.running_var", f"{bn[0]}.num_batches_tracked"} <= keys
    assert not any("LayerNorm" in type(m).__name__ and f"{n}.weight" in keys for n, m in model.named_modules())
    shared, local = split_norm(model.state_dict(), keys)
    assert set(local) == keys and not set(shared) & keys


def test_local_state_store_round_trip(tmp_path) -> None:  # noqa: ANN001
    store = LocalStateStore(tmp_path, "run/1", "uni versity")
    assert store.load("norm") is None
    store.save("norm", {"a": torch.ones(2)})
    torch.testing.assert_close(store.load("norm")["a"], torch.ones(2))
    assert store.path("norm").parent.parent.name == "run_1"
