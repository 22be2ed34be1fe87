"""Token-grid layers shared by the MobileViT teacher and the LSNet student.

Paper: `Efficient endometrial carcinoma screening via cross-modal synthesis and gradient
distillation` - https://arxiv.org/abs/2602.19822 (dense and gradient-guided top-k attention).
MobileViT: `MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer`
- https://arxiv.org/abs/2110.02178 (unfold a feature map into P = p_h * p_w token grids).

Layout conventions (the batch axis is never folded, so Opacus per-sample gradients work):
    feature map  [B, C, H, W]
    tokens       [B, P, N, d]       P positions in the patch, N = (H / p_h) * (W / p_w) tokens each
    heads        [B, P, h, N, dh]   h heads of width dh = d / h
A convolution over each of the P token grids equals a convolution with dilation = patch size on
the un-patchified map, which is how every "conv over the token grid" here is written.

Cost note (measured, CPU, 1 thread; docs/benchmarks.md, issue 17): exact per-query top-k over
the [N, N] generator map was the dominant cost of LSNet inference (about 45 % in onnxruntime at
320x320, where the stride-8 block has N = 400 and 4 x 4 x 400 rows to select from), then the
gathered products. Region selection (``region_rows`` / ``region_attention``: each s x s query
region keeps its top key regions, ranked by the region mean of X X^T) selects over R = N / s^2
regions and gathers contiguous [s^2, dh] slices that serve s^2 queries at once: LSNet at 320 runs
in 0.39x the per-query time. Per-query selection (``key_rows`` / ``sparse_attention``) remains
for ``selection_region=1``: its rows are computed once per block and shared by its layers and by
k and v; with k = 1 (softmax over one key = 1) inference skips q, k and the products and gathers v.

The attention products are plain ``matmul`` (no fused scaled_dot_product_attention)
so that both torch's FlopCounterMode and fvcore count them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "unfold_tokens",
    "fold_tokens",
    "split_heads",
    "num_topk_keys",
    "ranking_score",
    "select_topk_keys",
    "key_rows",
    "region_rows",
    "gather_keys",
    "dense_attention",
    "sparse_attention",
    "region_attention",
    "GridDepthwiseSeparableConv",
    "GradientGenerator",
    "TokenAttention",
    "MlpFeedForward",
    "ConvFeedForward",
]


# --------------------------------------------------------------------------- layout helpers
_TOKEN_ORDER: dict[tuple[int, int, int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _token_order(
    h: int, w: int, patch_size: int, region: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(map row of each token in [P * N] order, token of each map row) for an [H, W] map.

    Rows of the channels-last map are r = y * W + x; token (p, n) with p = (ph, pw), n = (nh, nw)
    sits at y = nh * patch_size + ph, x = nw * patch_size + pw. With ``region`` = s > 1 the N
    tokens of each position are ordered region by region: the s x s tokens of region (ry, rx)
    (nh = ry * s + ty, nw = rx * s + tx) are consecutive, row-major inside the region, so a
    region's keys are one contiguous slice. Cached in eager mode; built afresh while tracing or
    compiling, so that exporters see plain constants.
    """
    key = (h, w, patch_size, region, str(device))
    building = torch.jit.is_tracing() or torch.compiler.is_compiling()
    if building or key not in _TOKEN_ORDER:
        with torch.inference_mode(False):  # usable inside and outside inference mode
            ry, rx, s, ps = h // patch_size // region, w // patch_size // region, region, patch_size
            rows = torch.arange(h * w, device=device).view(ry, s, ps, rx, s, ps)
            order = rows.permute(2, 5, 0, 3, 1, 4).reshape(-1)  # [P * N]
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(h * w, device=device)
        if building:
            return order, inverse
        _TOKEN_ORDER[key] = (order, inverse)
    return _TOKEN_ORDER[key]


def unfold_tokens(x: torch.Tensor, patch_size: int, region: int = 1) -> torch.Tensor:
    """Feature map [B, d, H, W] -> tokens [B, P, N, d] (H, W divisible by ``patch_size``).

    ``region`` = s > 1 orders each position's tokens region by region (s x s token regions; the
    token grid must be divisible by s), as region selection needs; 1 is row-major.

    A transpose to channels-last, then a gather of the map's rows in token order, rather than
    one 6-D permutation: onnxruntime runs the 6-D Transpose about 10x slower (measured ~1 ms
    against 0.13 + 0.08 ms for [1, 40, 40, 40], 1 thread; it merges any pair of Transposes back
    into the 6-D one). Same values.
    """
    b, d, h, w = x.shape
    order, _ = _token_order(h, w, patch_size, region, x.device)
    x = x.permute(0, 2, 3, 1).reshape(b, h * w, d).index_select(1, order)
    return x.reshape(b, patch_size * patch_size, (h // patch_size) * (w // patch_size), d)


def fold_tokens(
    x: torch.Tensor, patch_size: int, grid: tuple[int, int], region: int = 1
) -> torch.Tensor:
    """Tokens [B, P, N, d] -> feature map [B, d, H, W]; ``grid`` = (nh, nw) token grid size.

    The inverse of ``unfold_tokens`` with the same ``region`` (a gather back to map rows, then a
    transpose to NCHW).
    """
    b, p, n, d = x.shape
    h, w = grid[0] * patch_size, grid[1] * patch_size
    _, inverse = _token_order(h, w, patch_size, region, x.device)
    x = x.reshape(b, p * n, d).index_select(1, inverse).reshape(b, h, w, d)
    return x.permute(0, 3, 1, 2).contiguous()  # [B, d, H, W]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, P, N, d] -> [B, P, h, N, d / h]."""
    b, p, n, d = x.shape
    return x.reshape(b, p, n, num_heads, d // num_heads).transpose(2, 3)


# --------------------------------------------------------------------------- top-k selection
def num_topk_keys(num_tokens: int, ratio: float) -> int:
    """Keys kept per query: k = max(1, round(N * ratio)), capped at N (paper: ratio 1/25)."""
    num_tokens = int(num_tokens)  # a traced size (ONNX export) becomes a constant here
    return min(num_tokens, max(1, round(num_tokens * ratio)))


def ranking_score(
    g_hat: torch.Tensor, temperature: float = 0.5, weight: float = 0.7
) -> torch.Tensor:
    """The paper's key ranking score ``0.7 softmax(g/0.5) + 0.3 (1 - softmax(-g/0.5))``.

    Softmaxes run over the keys (last axis) of ``g_hat`` [..., N_q, N_k]. Both terms are strictly
    increasing in g within a query row, so the top-k keys under this score are the top-k keys of
    ``g_hat`` itself (and, SELU being strictly increasing, of the pre-SELU product X X^T). The
    models therefore rank by X X^T directly (no [N, N] softmaxes at inference); this function is
    the reference definition the tests compare against. Ties created by float rounding (saturated
    exponentials) are the only possible difference.
    """
    return weight * torch.softmax(g_hat / temperature, dim=-1) + (1.0 - weight) * (
        1.0 - torch.softmax(-g_hat / temperature, dim=-1)
    )


def select_topk_keys(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [..., N_q, k] (int64) of the k highest-ranked keys per query; not differentiable."""
    return scores.detach().topk(k, dim=-1, largest=True, sorted=False).indices


def key_rows(index: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Flat rows of the selected keys in a token-major [B, P, N, h, c] tensor viewed [B*P*N*h, c].

    index [B, P, N_q, h, k] (key positions per query and head) -> [B, P, N_q, h, k] (int64).
    The rows depend only on the selection, so a block computes them once for all its layers and
    for both k and v.
    """
    b, p, _, h, _ = index.shape
    bp_offset = torch.arange(b * p, device=index.device, dtype=index.dtype).view(b, p, 1, 1, 1) * (
        num_tokens * h
    )
    head = torch.arange(h, device=index.device, dtype=index.dtype).view(1, 1, 1, h, 1)
    return bp_offset + index * h + head  # row of (b, p, key, head)


def region_rows(index: torch.Tensor) -> torch.Tensor:
    """Flat rows of the selected key regions in a head-major [B, P, h, R, s*s*dh] tensor.

    index [B, P, h, R_q, k_r] (key regions per query region and head) -> the same shape (int64),
    rows of that tensor viewed [B*P*h*R, s*s*dh]; computed once per block like ``key_rows``.
    """
    b, p, h, r, _ = index.shape
    offset = torch.arange(b * p * h, device=index.device, dtype=index.dtype).view(b, p, h, 1, 1)
    return offset * r + index


def gather_keys(
    x: torch.Tensor, index: torch.Tensor | None, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-query, per-head key gather without any [N, N] expansion.

    x [B, P, N, h, c] (token-major, as a linear layer's output viewed per head);
    index [B, P, N_q, h, k] (key positions per query and head), or ``rows`` = ``key_rows(index, N)``
    when already computed -> [B, P, N_q, h, k, c].
    One flat ``index_select`` over the rows of x (ONNX ``Gather`` on axis 0), no transposes.
    """
    b, p, n, h, c = x.shape
    if rows is None:
        rows = key_rows(index, n)
    nq, k = rows.shape[2], rows.shape[4]
    selected = x.reshape(b * p * n * h, c).index_select(0, rows.reshape(-1))
    return selected.reshape(b, p, nq, h, k, c)


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard attention. q, k, v [B, P, h, N, dh] -> (out [B, P, h, N, dh], scores [B, P, h, N, N]).

    ``scores`` are the pre-softmax scores q k^T * scale (part of the autograd graph).
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # [B, P, h, N, N]
    weights = scores.softmax(dim=-1)
    return torch.matmul(weights, v), scores


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor | None,
    scale: float,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of each query over its own k selected keys only (gather, no [N, N] matrix).

    Token-major layout: q, k, v [B, P, N, h, dh]; index [B, P, N, h, k] (key positions), or
    ``rows`` = ``key_rows(index, N)`` precomputed (then ``index`` may be None).
    Returns (out [B, P, N, h, dh], weights [B, P, N, h, k]); the weights sum to 1 over the k keys,
    so each query row of the equivalent dense [N, N] weight matrix has exactly k non-zeros.
    The two products are batched matmuls ([k, dh] @ [dh, 1] and [1, k] @ [k, dh]) so that
    FlopCounterMode and fvcore count their N k dh multiply-adds each.
    """
    if rows is None:
        rows = key_rows(index, k.shape[2])
    k_sel = gather_keys(k, None, rows)  # [B, P, N, h, k, dh]
    v_sel = gather_keys(v, None, rows)  # [B, P, N, h, k, dh]
    scores = torch.matmul(k_sel, q.unsqueeze(-1)).squeeze(-1) * scale  # [B, P, N, h, k]
    weights = scores.softmax(dim=-1)
    out = torch.matmul(weights.unsqueeze(-2), v_sel).squeeze(-2)  # [B, P, N, h, dh]
    return out, weights


def region_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rows: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-routed attention: each query attends to every token of its region's k_r key regions.

    Head-major layout with tokens in region order (``unfold_tokens(..., region=s)``): q, k, v
    [B, P, h, N, dh], t = s * s consecutive tokens per region; ``rows`` = ``region_rows(index)``
    [B, P, h, R, k_r]. All t queries of a region share its selection (bi-level routing as in
    BiFormer, https://arxiv.org/abs/2303.08810), so one gather of k_r contiguous [t, dh] slices
    serves t queries and the products are [t, dh] @ [dh, k_r t] matmuls: the same N k dh
    multiply-adds as per-query selection with k = k_r t keys.
    Returns (out [B, P, h, N, dh], weights [B, P, h, R, t, k_r t]), weights summing to 1.
    """
    b, p, h, n, dh = q.shape
    r, kr = rows.shape[3], rows.shape[4]
    t = n // r
    flat = rows.reshape(-1)
    k_sel = k.reshape(b * p * h * r, t * dh).index_select(0, flat).view(b, p, h, r, kr * t, dh)
    v_sel = v.reshape(b * p * h * r, t * dh).index_select(0, flat).view(b, p, h, r, kr * t, dh)
    scores = torch.matmul(q.reshape(b, p, h, r, t, dh), k_sel.transpose(-2, -1)) * scale
    weights = scores.softmax(dim=-1)  # [B, P, h, R, t, k_r t]
    out = torch.matmul(weights, v_sel)  # [B, P, h, R, t, dh]
    return out.reshape(b, p, h, n, dh), weights


# --------------------------------------------------------------------------- layers
class GridDepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 conv over each token grid, then a pointwise conv: [B, c, H, W] -> [B, out, H, W].

    The token-grid conv is a dilation-``patch_size`` conv on the un-patchified map (exactly equal,
    including zero padding at the grid border). ``act`` (SiLU) sits between the two when True.
    """

    def __init__(self, in_chs: int, out_chs: int, patch_size: int, act: bool) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_chs, in_chs, 3, padding=patch_size, dilation=patch_size, groups=in_chs
        )
        self.act = nn.SiLU() if act else nn.Identity()
        self.pointwise = nn.Conv2d(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.depthwise(x)))


class GradientGenerator(nn.Module):
    """LSNet's gradient generator: predicts the teacher's attention-score gradients per block.

    X = depthwise-separable conv over the token grid (linear, d -> d channels), split into heads;
    the pre-activation map is S = X X^T per head and patch position, g_hat = SELU(S).
    It receives no gradient from the classification loss (top-k indices are not
    differentiable); it learns only through the distillation MSE on g_hat.
    """

    def __init__(self, dim: int, num_heads: int, patch_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.features = GridDepthwiseSeparableConv(dim, dim, patch_size, act=False)

    def forward(
        self, x: torch.Tensor, region: int = 1, full: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, d, H, W] (block input after the 1x1 projection) -> (ranking, S).

        S = X X^T [B, P, h, N, N] per token pair (row-major tokens; None unless ``full``), the map
        g_hat = SELU(S) is distilled on. ``ranking`` is what the selection ranks: S itself when
        ``region`` is 1, else the mean of S over each pair of s x s token regions [B, P, h, R, R]
        (regions in ``unfold_tokens``' region order). S is bilinear in X, so that mean is X pooled
        per region times its transpose (up to float rounding): R^2 products instead of N^2.
        The features are computed once per call (Opacus pairs one forward with one backward).
        """
        feats_map = self.features(x)  # [B, d, H, W]
        full_products = None
        if full or region == 1:
            feats = split_heads(unfold_tokens(feats_map, self.patch_size), self.num_heads)
            full_products = torch.matmul(feats, feats.transpose(-2, -1))  # [B, P, h, N, N]
        if region == 1:
            return full_products, full_products if full else None
        feats = unfold_tokens(feats_map, self.patch_size, region)  # [B, P, N, d]
        b, p, n, d = feats.shape
        pooled = feats.reshape(b, p, n // (region * region), region * region, d).mean(dim=3)
        pooled = split_heads(pooled, self.num_heads)  # [B, P, h, R, dh]
        return torch.matmul(pooled, pooled.transpose(-2, -1)), full_products  # [B, P, h, R, R]


class TokenAttention(nn.Module):
    """Multi-head self-attention over tokens [B, P, N, d], dense or top-k sparse.

    ``forward(x, index, rows)``:
    * ``index`` [B, P, N, h, k] given (gradient-guided selection): sparse attention over those keys
      (``rows`` = ``key_rows(index, N)`` may be passed precomputed, as the blocks do);
    * ``index`` None and ``topk_ratio`` None: dense attention;
    * ``index`` None and ``topk_ratio`` set: top-k keys ranked by this layer's own q k^T;
    * ``region`` = s > 1: ``rows`` are ``region_rows`` of a region selection (tokens in region
      order) and every query attends to all tokens of its region's selected regions.
    Returns (out [B, P, N, d], scores [B, P, h, N, N] pre-softmax, or None when not computed).
    Separate q, k, v projections keep k and v token-major ([B, P, N, h, dh] views), so the
    sparse path gathers keys with no transposes. With one selected key per query and no autograd
    (inference, export), the softmax weight is exactly 1: only v is projected and gathered.
    """

    def __init__(self, dim: int, num_heads: int, topk_ratio: float | None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.topk_ratio = topk_ratio
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        index: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        region: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, p, n, d = x.shape
        heads = (b, p, n, self.num_heads, d // self.num_heads)
        if region > 1:
            q, k, v = self._head_major_qkv(x)  # [B, P, h, N, dh] each
            out, _ = region_attention(q, k, v, rows, self.scale)  # [B, P, h, N, dh]
            return self.proj(out.transpose(2, 3).reshape(b, p, n, d)), None
        if index is not None and rows is None:
            rows = key_rows(index, n)
        if rows is not None and rows.shape[-1] == 1 and not torch.is_grad_enabled():
            # softmax over a single key is exactly 1 (finite scores): out = v of that key.
            # Only without autograd, so that training still sees q and k (zero) gradients.
            out = gather_keys(self.v(x).view(heads), None, rows).squeeze(-2)  # [B, P, N, h, dh]
            return self.proj(out.reshape(b, p, n, d)), None
        q, k, v = (
            self.q(x).view(heads),
            self.k(x).view(heads),
            self.v(x).view(heads),
        )  # [B, P, N, h, dh]
        scores = None
        if rows is None and self.topk_ratio is None:
            out, scores = dense_attention(
                q.transpose(2, 3), k.transpose(2, 3), v.transpose(2, 3), self.scale
            )
            out = out.transpose(2, 3)  # [B, P, N, h, dh]
        else:
            if rows is None:  # ablation: rank keys by this layer's own scores
                scores = torch.matmul(q.transpose(2, 3), k.permute(0, 1, 3, 4, 2)) * self.scale
                index = select_topk_keys(scores, num_topk_keys(n, self.topk_ratio)).transpose(2, 3)
            out, _ = sparse_attention(q, k, v, index, self.scale, rows)
        return self.proj(out.reshape(b, p, n, d)), scores


    def _head_major_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of tokens x [B, P, N, d] in head-major layout [B, P, h, N, dh].

        With autograd, the three linear layers and a transpose each (Opacus computes per-example
        gradients of those modules). Without (inference, export): each projection as one matmul
        of [x, 1] [B, P, 1, N, d + 1] against its weight and bias viewed per head [h, d + 1, dh],
        which writes head-major directly: the same products without the transposes (onnxruntime
        spent more on those [.., N, h, dh] transposes than on the projections; the per-head
        weights are constant-folded in the exported graph).
        """
        b, p, n, d = x.shape
        h = self.num_heads
        layers = (self.q, self.k, self.v)
        if torch.is_grad_enabled():
            return tuple(lin(x).view(b, p, n, h, d // h).transpose(2, 3) for lin in layers)
        ones = torch.ones_like(x[..., :1])
        x_aug = torch.cat([x, ones], dim=-1).unsqueeze(2)  # [B, P, 1, N, d + 1]
        out = []
        for lin in layers:
            w = torch.cat([lin.weight, lin.bias[:, None]], dim=1)  # [d, d + 1]
            w = w.view(h, d // h, d + 1).transpose(1, 2)  # [h, d + 1, dh]
            out.append(torch.matmul(x_aug, w))  # [B, P, h, N, dh]
        return tuple(out)


class MlpFeedForward(nn.Module):
    """Transformer MLP: Linear d -> r d, SiLU, Linear r d -> d on tokens [B, P, N, d]."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], region: int = 1) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvFeedForward(nn.Module):
    """LSNet feed-forward: depthwise-separable 3x3 conv over each token grid, on [B, P, N, d]."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv = GridDepthwiseSeparableConv(dim, dim, patch_size, act=True)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], region: int = 1) -> torch.Tensor:
        """x [B, P, N, d] in ``unfold_tokens(..., region)`` order -> the same layout."""
        y = self.conv(fold_tokens(x, self.patch_size, grid, region))  # [B, d, H, W]
        return unfold_tokens(y, self.patch_size, region)  # [B, P, N, d]
