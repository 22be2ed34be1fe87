"""One DP-SGD step (Opacus hooks mode, GroupNorm variants): per-sample gradients of batch size B."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, TensorDataset

from ecs_models import create_model

BATCH = 3




@pytest.mark.parametrize("name", ["teacher", "lsnet"])
def test_group_norm_variant_passes_the_strict_validator(name: str) -> None:
    assert ModuleValidator.validate(create_model(name, norm="group"), strict=True) == []
    assert ModuleValidator.validate(create_model(name), strict=False) != []  # BatchNorm flagged


@pytest.mark.parametrize("name", ["teacher", "lsnet"])
def test_one_dp_sgd_step_gives_per_sample_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, norm="group")
    x, y = torch.randn(BATCH, 1, 64, 64), torch.tensor([0, 1, 1])
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dp_model, dp_optimizer, _ = PrivacyEngine().make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode="hooks",
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = dp_model._module.forward_with_maps(x)  # hooks live on the submodules
    loss = F.cross_entropy(out.logits, y)
    # LSNet's generators only get gradients from the distillation term (as in training);
    # Opacus needs a per-sample gradient for every trainable parameter.
    loss = loss + sum(F.mse_loss(m, torch.zeros_like(m)) for m in out.maps)
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad_sample is not None, param_name
        assert param.grad_sample.shape == (BATCH, *param.shape), param_name
    dp_optimizer.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)
