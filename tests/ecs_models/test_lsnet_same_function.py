"""The fast per-query selection path computes the function of the original implementation (issue 17).

``_reference_logits`` is the selection and attention path as it was before the latency work
(commit 398fb95): per block, S = X X^T, ``topk`` per query row, then for every layer a token-major
gather of k and v with its own flat-index arithmetic and the two batched products, q, k and v
always projected; tokens folded and unfolded with one 6-D permutation each. It is written here
from the model's submodules that did not change (convolutions, norms, linear layers), so it
shares weights but none of the code under test (``key_rows``, rows shared by layers and by k and
v, the k = 1 shortcut, the two-step fold/unfold, which the feed-forwards use too: the reference
re-implements the dwconv feed-forward from its convolutions). Outputs must agree within 1e-4 on random inputs, in torch and in the exported ONNX: the
logits (classifier re-initialised to give logits of order 1-10, so that 1e-4 is a tight bound; at
its std-0.02 initialisation they are ~0.01) and each MobileViT block's output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ecs_models import create_model
from ecs_models.export import check_onnx_parity, export_onnx
from ecs_models.mobilevit import MobileViT, MobileViTBlock

ATOL = 1e-4


# ------------------------------------------------------------------ the original path, verbatim
def _old_unfold(x: torch.Tensor, ps: int) -> torch.Tensor:
    b, d, h, w = x.shape
    x = x.reshape(b, d, h // ps, ps, w // ps, ps).permute(0, 3, 5, 2, 4, 1)
    return x.reshape(b, ps * ps, (h // ps) * (w // ps), d)


def _old_fold(x: torch.Tensor, ps: int, grid: tuple[int, int]) -> torch.Tensor:
    b, _, _, d = x.shape
    x = x.reshape(b, ps, ps, grid[0], grid[1], d).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(b, d, grid[0] * ps, grid[1] * ps)


def _old_gather_keys(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    b, p, n, h, c = x.shape
    nq, k = index.shape[2], index.shape[4]
    bp_offset = torch.arange(b * p, dtype=index.dtype).view(b, p, 1, 1, 1) * (n * h)
    head = torch.arange(h, dtype=index.dtype).view(1, 1, 1, h, 1)
    flat_index = bp_offset + index * h + head
    rows = x.reshape(b * p * n * h, c).index_select(0, flat_index.reshape(-1))
    return rows.reshape(b, p, nq, h, k, c)


def _old_sparse_attention(q, k, v, index, scale):
    k_sel, v_sel = _old_gather_keys(k, index), _old_gather_keys(v, index)
    scores = torch.matmul(k_sel, q.unsqueeze(-1)).squeeze(-1) * scale
    return torch.matmul(scores.softmax(dim=-1).unsqueeze(-2), v_sel).squeeze(-2)


def _old_block(block: MobileViTBlock, x: torch.Tensor, drop_last_key: bool) -> torch.Tensor:
    shortcut = x
    x = block.conv_1x1(block.conv_kxk(x))
    h, w = x.shape[-2:]
    ps = block.patch_size
    new_h, new_w = math.ceil(h / ps) * ps, math.ceil(w / ps) * ps
    resized = (new_h, new_w) != (h, w)
    if resized:
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    grid = (new_h // ps, new_w // ps)
    gen = block.generator
    feats = _old_unfold(gen.features(x), ps)  # [B, P, N, d]
    b, p, n, d = feats.shape
    feats = feats.reshape(b, p, n, gen.num_heads, d // gen.num_heads).transpose(2, 3)
    products = torch.matmul(feats, feats.transpose(-2, -1))  # [B, P, h, N, N]
    k = min(n, max(1, round(n * block.topk_ratio)))
    index = products.topk(k, dim=-1, largest=True, sorted=True).indices
    if drop_last_key and k > 1:  # the sensitivity check: one key fewer per query
        index = index[..., :-1]
    index = index.transpose(2, 3)  # [B, P, N, h, k]
    tokens = _old_unfold(x, ps)
    for layer in block.layers:
        attn, y = layer.attn, layer.norm1(tokens)
        heads = (b, p, n, attn.num_heads, d // attn.num_heads)
        q, kk, v = attn.q(y).view(heads), attn.k(y).view(heads), attn.v(y).view(heads)
        out = _old_sparse_attention(q, kk, v, index, attn.scale)
        tokens = tokens + attn.proj(out.reshape(b, p, n, d))
        conv = layer.ffn.conv  # ConvFeedForward: grid conv on the folded map, unfold back
        y = _old_fold(layer.norm2(tokens), ps, grid)
        y = conv.pointwise(conv.act(conv.depthwise(y)))
        tokens = tokens + _old_unfold(y, ps)
    x = _old_fold(block.norm(tokens), ps, grid)
    if resized:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = block.conv_proj(x)
    return block.conv_fusion(torch.cat((shortcut, x), dim=1))


def _reference(model: MobileViT, x: torch.Tensor, drop_last_key: bool = False):
    """(logits, [output of each MobileViT block]) of the original implementation."""
    outputs = []
    with torch.no_grad():
        x = model.mv2_layers(model.stem(x))
        for down, block in zip(model.downsamples, model.vit_blocks, strict=True):
            x = _old_block(block, down(x), drop_last_key)
            outputs.append(x)
        return model.classifier(model.final_conv(x).mean(dim=(2, 3))), outputs


def _reference_logits(model: MobileViT, x: torch.Tensor, drop_last_key: bool = False):
    return _reference(model, x, drop_last_key)[0]


def _fast(model: MobileViT, x: torch.Tensor):
    """(logits, block outputs) of ``model(x)`` without autograd, the inference/export path."""
    outputs = []
    hooks = [b.register_forward_hook(lambda m, a, out: outputs.append(out[0])) for b in model.vit_blocks]
    try:
        with torch.no_grad():
            return model(x), outputs
    finally:
        for hook in hooks:
            hook.remove()


# ------------------------------------------------------------------ tests
def _model(seed: int = 0, **overrides) -> MobileViT:
    # Per-query selection (selection_region=1) is the original function; the region selection
    # that LSNet uses by default is a different one, tested in test_region_selection.py.
    torch.manual_seed(seed)
    model = create_model("lsnet", **{"selection_region": 1, **overrides}).eval()
    with torch.no_grad():
        # random-init BatchNorm is the identity; give it statistics so every layer matters
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        model.classifier.weight.normal_(0.0, 3.0)  # logits of order 1-10 (see module doc)
        for block in model.vit_blocks:  # attention that matters (init std 0.02 nearly mutes it)
            for layer in block.layers:
                layer.attn.proj.weight.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize(
    ("size", "overrides"),
    [(320, {}), (224, {}), (128, {"topk_ratio": 0.25}), (96, {"norm": "group"})],
)
def test_fast_path_matches_the_original_selection_and_attention(size: int, overrides) -> None:
    model = _model(**overrides)
    for seed in (0, 1, 2):
        x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(seed))
        expected, expected_blocks = _reference(model, x)
        fast, fast_blocks = _fast(model, x)  # shared rows, k = 1 shortcut, two-step fold/unfold
        with_maps = model.forward_with_maps(x).logits.detach()  # with autograd (no shortcut)
        assert expected.abs().max() > 0.5  # a scale at which 1e-4 means something
        assert torch.allclose(fast, expected, atol=ATOL, rtol=0), (fast - expected).abs().max()
        assert torch.allclose(with_maps, expected, atol=ATOL, rtol=0)
        for got, want in zip(fast_blocks, expected_blocks, strict=True):
            assert torch.allclose(got, want, atol=ATOL, rtol=0), (got - want).abs().max()


def test_the_comparison_detects_a_different_selection() -> None:
    # The reference with one key fewer per query is a different function, and the checks above
    # fail on it (by 1-3 orders of magnitude here).
    model = _model()
    x = torch.randn(1, 1, 320, 320, generator=torch.Generator().manual_seed(0))
    fast, fast_blocks = _fast(model, x)
    wrong, wrong_blocks = _reference(model, x, drop_last_key=True)
    assert (fast - wrong).abs().max() > 10 * ATOL
    assert all((a - b).abs().max() > 10 * ATOL for a, b in zip(fast_blocks[:2], wrong_blocks[:2], strict=True))


def test_exported_onnx_computes_the_original_function(tmp_path) -> None:
    import onnxruntime as ort  # a dependency of the package: a missing one fails, not skips

    model = _model()
    path = export_onnx(model, tmp_path / "lsnet.onnx", (1, 1, 320, 320))
    check_onnx_parity(model, path, torch.randn(1, 1, 320, 320))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in (0, 1):
        x = torch.randn(1, 1, 320, 320, generator=torch.Generator().manual_seed(seed))
        (onnx_logits,) = session.run(None, {"image": x.numpy()})
        expected = _reference_logits(model, x)
        assert torch.allclose(torch.from_numpy(onnx_logits), expected, atol=ATOL, rtol=0)


def test_single_key_shortcut_is_inference_only() -> None:
    # At 128x128 the last block has N = 4 tokens per grid and k = 1: softmax weight exactly 1.
    model = _model()
    attn = model.vit_blocks[2].layers[0].attn
    calls: list[str] = []
    for name in ("q", "k", "v"):
        getattr(attn, name).register_forward_hook(lambda m, a, o, name=name: calls.append(name))
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        model(x)
    assert calls == ["v"]  # inference: only v is projected and gathered
    calls.clear()
    model.train()
    F.cross_entropy(model(x), torch.tensor([0, 1])).backward()
    assert calls == ["q", "k", "v"]  # training: q and k run and get their (zero) gradients
    assert attn.q.weight.grad is not None and not attn.q.weight.grad.any()
