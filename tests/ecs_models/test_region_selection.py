"""LSNet's region selection (``selection_region`` = 2, the default; issue 17).

Each s x s query region ranks the s x s key regions by the region mean of the generator's
X X^T and keeps its top k_r; its queries attend to every token of those regions. The checks:
the ranking is the block mean of the per-token map the generator is distilled on, the attention
equals dense attention masked to the chosen regions, each query keeps as many keys as per-query
selection would at the paper's 320 px, the exported ONNX computes the torch function, and
training still sends the distillation gradient to the generator and CE to the attention.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecs_models import create_model
from ecs_models.export import check_onnx_parity, export_onnx
from ecs_models.sparse_attention import (
    GradientGenerator,
    num_topk_keys,
    region_attention,
    region_rows,
    select_topk_keys,
    unfold_tokens,
)


def _region_of_token(grid: tuple[int, int], s: int) -> torch.Tensor:
    """Region index of each token in row-major token order (the order of the generator's map)."""
    nh, nw = grid
    y, x = torch.meshgrid(torch.arange(nh), torch.arange(nw), indexing="ij")
    return ((y // s) * (nw // s) + x // s).reshape(-1)


def test_region_ranking_is_the_block_mean_of_the_distilled_map() -> None:
    torch.manual_seed(0)
    gen = GradientGenerator(dim=12, num_heads=3, patch_size=2)
    x = torch.randn(2, 12, 16, 24)  # token grid 8 x 12, regions 4 x 6
    full_ranking, full = gen(x)  # [B, P, h, N, N] twice (per-token ranking = the map)
    ranking, same_full = gen(x, region=2)  # [B, P, h, R, R], and the map
    assert full_ranking is full and torch.equal(same_full, full)
    assert gen(x, region=2, full=False)[1] is None  # inference: no N x N products
    region = _region_of_token((8, 12), 2)
    one_hot = F.one_hot(region, 24).float() / 4  # [N, R]: mean over each region's 4 tokens
    expected = one_hot.T @ full @ one_hot
    assert ranking.shape == (2, 4, 3, 24, 24)
    assert torch.allclose(ranking, expected, atol=1e-4, rtol=1e-4)


def test_region_order_groups_each_regions_tokens() -> None:
    x = torch.arange(2 * 8 * 12, dtype=torch.float32).view(1, 1, 16, 12)  # value = map row
    plain, grouped = unfold_tokens(x, 2), unfold_tokens(x, 2, region=2)  # [1, 4, 24, 1]
    region = _region_of_token((8, 6), 2)
    for r in range(12):  # each region's 4 tokens are consecutive, in row-major order
        assert torch.equal(grouped[0, :, 4 * r : 4 * r + 4, 0], plain[0, :, region == r, 0])


def test_region_attention_equals_dense_attention_masked_to_the_chosen_regions() -> None:
    torch.manual_seed(0)
    b, p, h, r, t, dh, kr = 2, 4, 3, 6, 4, 8, 2
    n = r * t
    q, k, v = (torch.randn(b, p, h, n, dh) for _ in range(3))  # head-major, region order
    index = select_topk_keys(torch.randn(b, p, h, r, r), kr)  # [B, P, h, R, k_r]
    out, weights = region_attention(q, k, v, region_rows(index), dh**-0.5)
    assert weights.shape == (b, p, h, r, t, kr * t)
    assert torch.allclose(weights.sum(-1), torch.ones(b, p, h, r, t))
    token_region = torch.arange(n) // t
    keep = (index.unsqueeze(-1) == token_region).any(-2)  # [B, P, h, R, N]: key kept by region
    mask = keep.repeat_interleave(t, dim=3)  # [B, P, h, N, N]: each query gets its region's keys
    assert torch.equal(mask.sum(-1), torch.full((b, p, h, n), kr * t))
    scores = (q @ k.transpose(-2, -1)) * dh**-0.5
    expected = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(("size", "keys"), [(320, (16, 4, 1)), (128, (4, 4, 4))])
def test_keys_per_query_by_block(size: int, keys: tuple[int, ...]) -> None:
    # At 320 px the token grids are 20x20, 10x10 (regions) and 5x5 (per query): 16, 4 and 1
    # keys, as per-query top-k with k = N / 25 keeps. At 128 px (8x8, 4x4, 2x2) every block
    # routes by regions and keeps one 2x2 region: 4 keys (per-query selection would keep 3, 1, 1).
    model = create_model("lsnet").eval()
    seen: list[int] = []
    for block in model.vit_blocks:
        block.layers[0].attn.register_forward_hook(
            lambda m, args, out: seen.append(
                args[2].shape[-1] * (4 if args[3] > 1 else 1)  # rows [.., k_r] x t, or [.., k]
            )
        )
    with torch.no_grad():
        model(torch.randn(1, 1, size, size))
    assert tuple(seen) == keys
    assert keys[0] == 4 * num_topk_keys(100, 1 / 25) or size != 320


def test_training_sends_distillation_to_the_generator_and_ce_to_attention() -> None:
    torch.manual_seed(0)
    model = create_model("lsnet").train()
    out = model.forward_with_maps(torch.randn(2, 1, 128, 128))
    assert [m.shape[-1] for m in out.maps] == [64, 16, 4]  # per-token maps, as the teacher's
    ce = F.cross_entropy(out.logits, torch.tensor([0, 1]))
    ce.backward(retain_graph=True)
    block = model.vit_blocks[0]
    assert block.layers[0].attn.q.weight.grad.abs().sum() > 0  # queries and keys learn from CE
    assert block.layers[0].attn.k.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in block.generator.parameters())  # selection: no gradient
    sum(F.mse_loss(m, torch.randn_like(m)) for m in out.maps).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.generator.parameters())


def _lsnet_whose_attention_matters() -> torch.nn.Module:
    """LSNet at 320 px in eval mode, with BatchNorm statistics, linear layers (attention
    included) and classifier drawn large enough that every layer moves the logits (at its std-0.02
    initialisation the attention is nearly mute and the logits are ~0.01)."""
    torch.manual_seed(0)
    model = create_model("lsnet").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.2)
                module.bias.normal_(0.0, 0.1)
    return model


def test_inference_path_computes_the_training_paths_function() -> None:
    # Without autograd q, k and v come from per-head matmuls (no transposes in the export); with
    # autograd from the three linear layers Opacus hooks. Same outputs.
    model = _lsnet_whose_attention_matters()
    x = torch.randn(2, 1, 320, 320)
    with torch.no_grad():
        fast = model(x)
    assert fast.abs().max() > 0.1
    assert torch.allclose(fast, model.forward_with_maps(x).logits, atol=1e-5, rtol=0)


def test_exported_onnx_computes_the_region_model(tmp_path) -> None:
    model = _lsnet_whose_attention_matters()
    path = export_onnx(model, tmp_path / "lsnet.onnx", (1, 1, 320, 320))
    check_onnx_parity(model, path, torch.randn(1, 1, 320, 320))


def test_selection_region_must_be_positive() -> None:
    with pytest.raises(ValueError, match="selection_region"):
        create_model("lsnet", selection_region=0)


def test_a_run_config_from_before_region_selection_rebuilds_per_query_selection() -> None:
    from ecs_models.run_checkpoint import student_kwargs

    old_run = {"name": "lsnet", "attention": "topk", "gradient_generator": True, "norm": "batch"}
    name, kwargs = student_kwargs(old_run, 128)
    assert name == "lsnet" and kwargs["selection_region"] == 1 and kwargs["img_size"] == 128
    assert student_kwargs({**old_run, "selection_region": 2}, 128)[1]["selection_region"] == 2
