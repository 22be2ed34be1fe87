"""Teacher / LSNet: shapes, gradient paths, top-k sparsity, dense ablation, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ecs_models import create_model
from ecs_models.mobilevit import ClassifierOutput, MobileViT
from ecs_models.sparse_attention import (
    GradientGenerator,
    TokenAttention,
    dense_attention,
    num_topk_keys,
    ranking_score,
    select_topk_keys,
    sparse_attention,
)

SMALL = {"norm": "group"}




def _maps_shapes(size: int, heads: int = 4) -> list[tuple[int, ...]]:
    shapes = []
    for stride in (8, 16, 32):
        side = -(-(size // stride) // 2)  # token grid side after resizing to a multiple of 2
        shapes.append((2, 4, heads, side * side, side * side))
    return shapes


@pytest.mark.parametrize("size", [64, 96])
def test_output_and_map_shapes_match_between_teacher_and_student(size: int) -> None:
    x = torch.randn(2, 1, size, size)
    outputs = {}
    for name in ("teacher", "lsnet"):
        model = create_model(name, **SMALL)
        out = model.forward_with_maps(x)
        assert isinstance(out, ClassifierOutput)
        assert out.logits.shape == (2, 2)
        assert out.features.shape == (2, model.num_features)
        assert [tuple(m.shape) for m in out.maps] == _maps_shapes(size)
        assert model(x).shape == (2, 2)
        outputs[name] = out
    assert [m.shape for m in outputs["teacher"].maps] == [m.shape for m in outputs["lsnet"].maps]


def test_teacher_maps_are_differentiable_attention_scores() -> None:
    # 128x128: every block has N >= 4 tokens (with N = 1 the softmax is constant, zero gradient)
    model = create_model("teacher", depths=[1, 1, 1], **SMALL)
    x, y = torch.randn(2, 1, 128, 128), torch.tensor([0, 1])
    out = model.forward_with_maps(x)
    grads = torch.autograd.grad(F.cross_entropy(out.logits, y), out.maps)
    assert all(
        g.shape == m.shape and g.abs().sum() > 0 for g, m in zip(grads, out.maps, strict=True)
    )


def test_input_size_must_be_divisible_by_32() -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        create_model("lsnet")(torch.zeros(1, 1, 80, 80))


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters()]
    return float(sum(g.abs().sum() for g in grads if g is not None))


def test_ce_trains_attention_and_ffn_but_not_the_generator() -> None:
    # topk_ratio 1/4 keeps k >= 2 in block 1 at 64x64 (with k = 1 the softmax is constant and
    # q, k get no gradient; that happens in LSNet's last block at 320x320: N = 25, k = 1).
    torch.manual_seed(0)
    model = create_model("lsnet", topk_ratio=0.25, **SMALL)
    out = model.forward_with_maps(torch.randn(2, 1, 64, 64))
    F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    layer = model.vit_blocks[0].layers[0]
    for part in (layer.attn.q, layer.attn.k, layer.attn.v, layer.attn.proj, layer.ffn):
        assert _grad_norm(part) > 0
    for block in model.vit_blocks:
        assert all(p.grad is None or not p.grad.any() for p in block.generator.parameters())

    model.zero_grad(set_to_none=True)
    out = model.forward_with_maps(torch.randn(2, 1, 64, 64))
    sum(F.mse_loss(m, torch.randn_like(m)) for m in out.maps).backward()
    for block in model.vit_blocks:
        assert _grad_norm(block.generator) > 0


def test_generator_selection_matches_the_paper_ranking_score() -> None:
    torch.manual_seed(0)
    model = create_model("lsnet", topk_ratio=0.25, selection_region=1, **SMALL).eval()
    seen: dict[str, torch.Tensor] = {}
    block = model.vit_blocks[0]
    block.generator.register_forward_hook(lambda m, a, out: seen.__setitem__("products", out[1]))
    block.layers[1].attn.register_forward_hook(
        lambda m, args, out: seen.__setitem__("index", args[1])
    )
    with torch.no_grad():
        maps = model.forward_with_maps(torch.randn(2, 1, 64, 64)).maps
    g_hat = maps[0]  # [B, P, h, N, N]
    assert torch.allclose(g_hat, F.selu(seen["products"]))
    k = num_topk_keys(g_hat.shape[-1], 0.25)
    expected = ranking_score(g_hat).topk(k, dim=-1).indices.sort(-1).values
    used = seen["index"].transpose(2, 3).sort(-1).values  # later layers reuse the block's keys
    assert used.shape[-1] == k and torch.equal(used, expected)


def test_topk_attention_is_exactly_k_sparse_and_equals_masked_dense() -> None:
    torch.manual_seed(0)
    b, p, h, n, dh, k = 2, 4, 3, 20, 8, 5
    q, key, v = (torch.randn(b, p, n, h, dh) for _ in range(3))  # token-major
    index = select_topk_keys(torch.randn(b, p, h, n, n), k)  # [B, P, h, N, k]
    out, weights = sparse_attention(q, key, v, index.transpose(2, 3), dh**-0.5)
    dense_weights = torch.zeros(b, p, h, n, n).scatter(-1, index, weights.transpose(2, 3))
    assert torch.equal((dense_weights != 0).sum(-1), torch.full((b, p, h, n), k))
    scores = q.transpose(2, 3) @ key.permute(0, 1, 3, 4, 2) * dh**-0.5  # [B, P, h, N, N]
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, index, True)
    masked = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v.transpose(2, 3)
    assert torch.allclose(out.transpose(2, 3), masked, atol=1e-5)


def test_dense_attention_equals_standard_attention() -> None:
    q, k, v = (torch.randn(2, 4, 3, 10, 8) for _ in range(3))
    out, scores = dense_attention(q, k, v, 8**-0.5)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5)
    assert torch.allclose(scores, q @ k.transpose(-2, -1) / 8**0.5)


def test_topk_with_all_keys_equals_dense_student() -> None:
    torch.manual_seed(0)
    dense = create_model("lsnet", attention="dense", gradient_generator=False, **SMALL).eval()
    full_topk = create_model("lsnet", topk_ratio=1.0, gradient_generator=False, **SMALL).eval()
    full_topk.load_state_dict(dense.state_dict())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(dense(x), full_topk(x), atol=1e-5)


def test_self_ranked_topk_ablation_runs() -> None:
    model = create_model("lsnet", gradient_generator=False, **SMALL)
    assert not any(isinstance(m, GradientGenerator) for m in model.modules())
    out = model.forward_with_maps(torch.randn(2, 1, 64, 64))
    assert len(out.maps) == 3 and out.logits.shape == (2, 2)


def test_token_attention_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TokenAttention(10, 4, None)


@pytest.mark.parametrize("name", ["teacher", "lsnet"])
def test_same_seed_gives_same_weights_and_outputs(name: str) -> None:
    def build() -> MobileViT:
        torch.manual_seed(123)
        return create_model(name, depths=[1, 1, 1]).eval()

    a, b = build(), build()
    for (key, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), key
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
