"""Apple Neural Engine forms of the eight attention variants.

Each function is called by the registry (`Variant.ane`) with tensors already checked and
the variant's full option dict (defaults filled):

    fn(q, k, v, heads, **opts) -> (batch, heads*Dv, 1, Nq)

q, k: (batch, heads*D, 1, Nq|Nk); v: (batch, heads*Dv, 1, Nk); channel h*D + d holds head h,
feature d. The forms follow Apple's ml-ane-transformers / ml-stable-diffusion SPLIT_EINSUM:
channels-first rank-4 tensors only, heads split off the channel axis and computed one after
another, the only contraction is the native MIL einsum "nchw,nwhu->nchu" (or a 1x1 conv),
and the only layout change is one transpose of the key (done once for the whole tensor
where the feature map allows, else once per head). They compute in the input dtype: a
float64 input stays float64; in a Core ML program the program's precision decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kernels.ane import (
    cat_channels,
    cat_seq,
    constant,
    linear_head,
    ones_row,
    quadratic_head,
    split_heads,
    to_seq_major,
)


def _scale(q: torch.Tensor, heads: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[1] // heads) if scale is None else scale


# -- quadratic variants ----------------------------------------------------------------


def _quadratic(q, k, v, heads, scale, chunk, normalise, bias=None) -> torch.Tensor:
    qs = q * _scale(q, heads, scale)  # scale the N x D queries, not the N x N scores
    kt = to_seq_major(k)  # (batch, Nk, 1, heads*D): the one key transpose
    outs = [
        quadratic_head(qh, kh, vh, chunk, normalise=normalise, bias=bias)
        for qh, kh, vh in zip(
            split_heads(qs, heads),
            split_heads(kt, heads, dim=3),
            split_heads(v, heads),
            strict=True,
        )
    ]
    return cat_channels(outs)  # (batch, heads*Dv, 1, Nq)


def softmax_ane(q, k, v, heads, scale=None, chunk=None) -> torch.Tensor:
    """softmax(q k^T * scale) v, one head at a time (SPLIT_EINSUM; SPLIT_EINSUM_V2 with chunk).

    q, k: (batch, heads*D, 1, Nq|Nk); v: (batch, heads*Dv, 1, Nk) -> (batch, heads*Dv, 1, Nq).
    chunk: queries per block (the last block takes the remainder); None: all at once.
    Fast on the ANE; on a GPU the batched-heads form is better.
    """
    return _quadratic(q, k, v, heads, scale, chunk, normalise=True)


def sigmoid_ane(q, k, v, heads, scale=None, bias=None, chunk=None) -> torch.Tensor:
    """sigmoid(q k^T * scale + bias) v with bias = -log(Nk) by default; no reductions.

    Shapes and chunking as `softmax_ane`.
    """
    bias = -math.log(k.shape[3]) if bias is None else bias
    return _quadratic(q, k, v, heads, scale, chunk, normalise=False, bias=bias)


def softmax_frame_ane(q, k, v, heads, grid, scale=None) -> torch.Tensor:
    """Softmax attention within each latent frame; tokens in (t, y, x) raster order.

    q, k: (batch, heads*D, 1, N); v: (batch, heads*Dv, 1, N); grid = (T, H, W), T*H*W = N.
    Frames are slices of the sequence axis (no reshape to a rank-5 frame tensor), so each
    (frame, head) pair is a small split-einsum attention of H*W tokens.
    """
    frame = q.shape[3] // grid[0]
    qs = q * _scale(q, heads, scale)
    kt = to_seq_major(k)  # (batch, N, 1, heads*D): the one key transpose
    outs = []
    for qf, kf, vf in zip(
        torch.split(qs, frame, dim=3),
        torch.split(kt, frame, dim=1),
        torch.split(v, frame, dim=3),
        strict=True,
    ):
        heads_out = [
            quadratic_head(qh, kh, vh, None)
            for qh, kh, vh in zip(
                split_heads(qf, heads),
                split_heads(kf, heads, dim=3),
                split_heads(vf, heads),
                strict=True,
            )
        ]
        outs.append(cat_channels(heads_out))  # (batch, heads*Dv, 1, H*W)
    return cat_seq(outs)


# -- linear variants -------------------------------------------------------------------


def _linear(phi_q, phi_kt, v, heads, eps) -> torch.Tensor:
    """phi_q: per-head (batch, F, 1, Nq); phi_kt: per-head (batch, Nk, 1, F), already times
    Nk^-1/2 (see `linear_head`); v: (batch, heads*Dv, 1, Nk) -> (batch, heads*Dv, 1, Nq)."""
    r = v.shape[3] ** -0.5
    ones = ones_row(v, r)  # (batch, 1, 1, Nk)
    outs = [
        linear_head(pq, pk, torch.cat([vh, ones], dim=1), eps)
        for pq, pk, vh in zip(phi_q, phi_kt, split_heads(v * r, heads), strict=True)
    ]
    return cat_channels(outs)


def _key_scale(k: torch.Tensor) -> float:
    return k.shape[3] ** -0.5


def _elementwise_linear(q, k, v, heads, eps, phi) -> torch.Tensor:
    """Linear attention with a feature map that acts on each channel alone: features for
    all heads at once, then one transpose of the whole key."""
    phi_kt = to_seq_major(phi(k)) * _key_scale(k)  # (batch, Nk, 1, heads*D)
    return _linear(split_heads(phi(q), heads), split_heads(phi_kt, heads, dim=3), v, heads, eps)


def relu_linear_ane(q, k, v, heads, eps) -> torch.Tensor:
    """ReLU(q) (ReLU(k)^T v) / (ReLU(q) . sum ReLU(k) + eps) (SANA LiteLA).

    q, k: (batch, heads*D, 1, Nq|Nk); v: (batch, heads*Dv, 1, Nk) -> (batch, heads*Dv, 1, Nq).
    Per head the state is (Dv + 1) x D; the sequence stays on the last axis.
    """
    return _elementwise_linear(q, k, v, heads, eps, torch.relu)


def _elu1(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1 = x + 1 for x > 0, e^x otherwise, without forming elu(x) + 1: in fp16,
    elu(x) = e^x - 1 rounds to -1 below x ~ -8, and adding 1 would give 0 instead of e^x."""
    return torch.exp(-torch.relu(-x)) + torch.relu(x)  # e^min(x, 0) + max(x, 0)


def elu_linear_ane(q, k, v, heads, eps) -> torch.Tensor:
    """Linear attention with phi = elu + 1. Shapes as `relu_linear_ane`."""
    return _elementwise_linear(q, k, v, heads, eps, _elu1)


def _focus_head(x: torch.Tensor, p: float, scale: float = 1.0) -> torch.Tensor:
    """FLatten's focusing map on one head, times `scale`: (batch, D, 1, N) -> same.

    focus is positively homogeneous, focus(r) = m focus(r / m), so each token is first
    divided by its largest feature m: (r/m)^p lies in [0, 1], the norms below sqrt(D),
    and nothing can overflow fp16 (||ReLU(x)^p|| itself can, for p = 3 and |x| ~ 10).
    """
    r = torch.relu(x)
    m = r.amax(dim=1, keepdim=True)  # (batch, 1, 1, N)
    ones = torch.ones(m.shape, dtype=m.dtype, device=m.device)  # exports as a constant
    m = torch.where(m > 0, m, ones)  # all-zero tokens stay zero
    y = r / m
    yp = y**p
    n1 = torch.sqrt((y * y).sum(dim=1, keepdim=True))
    # n2 >= 1 for any non-zero token (its largest feature is exactly 1); 0 for all-zero ones
    n2 = torch.maximum(torch.sqrt((yp * yp).sum(dim=1, keepdim=True)), ones)
    return yp * (m * n1 / n2 * scale)


def focused_linear_ane(q, k, v, heads, eps, p) -> torch.Tensor:
    """Linear attention with FLatten's focused features (norms per head over channels).

    Shapes as `relu_linear_ane`; one key transpose per head (the norms are per head).
    """
    ks = _key_scale(k)
    phi_q = [_focus_head(qh, p) for qh in split_heads(q, heads)]
    phi_kt = [to_seq_major(_focus_head(kh, p, ks)) for kh in split_heads(k, heads)]
    return _linear(phi_q, phi_kt, v, heads, eps)


def _position_weights(weights: Callable, n: int, m: int, shape: tuple[int, ...], like):
    """weights(n, m, dtype, device) -> (cos, sin) of positions i < n, each shaped `shape`."""
    return tuple(w.reshape(shape) for w in weights(n, m, like.dtype, like.device))


def cosformer_ane(q, k, v, heads, eps, position_weights: Callable) -> torch.Tensor:
    """cosFormer: ReLU features times [cos, sin] of pi/2 * position / max(Nq, Nk).

    Shapes as `relu_linear_ane`; per head F = 2D features: the query's along channels
    ([cos part; sin part]), the key's along the last axis in the same order.
    position_weights(n, m, dtype, device) -> (cos, sin), each (n, 1): the variant's
    re-weighting (attention_zoo.cosformer.cos_sin_weights), so both forms share it.
    """
    nq, nk = q.shape[3], k.shape[3]
    m = max(nq, nk)
    w = position_weights
    cq, sq = constant(_position_weights, w, nq, m, (1, 1, 1, nq), q)  # along the sequence
    ck, sk = constant(_position_weights, w, nk, m, (1, nk, 1, 1), k)  # along key channels
    rq = torch.relu(q)
    rkt = to_seq_major(torch.relu(k))  # (batch, Nk, 1, heads*D): the one key transpose
    ks = _key_scale(k)
    phi_q = [
        torch.cat([c, s], dim=1)
        for c, s in zip(split_heads(rq * cq, heads), split_heads(rq * sq, heads), strict=True)
    ]
    phi_kt = [
        torch.cat([c, s], dim=3)
        for c, s in zip(
            split_heads(rkt * (ck * ks), heads, dim=3),
            split_heads(rkt * (sk * ks), heads, dim=3),
            strict=True,
        )
    ]
    return _linear(phi_q, phi_kt, v, heads, eps)


def _favor(wx: torch.Tensor, x: torch.Tensor, is_query: bool, scale: float) -> torch.Tensor:
    """FAVOR+ features of one head from wx = (w x') (batch, m, 1, N) and x (batch, D, 1, N):
    exp(w x' - |x'|^2 / 2 - stab) * scale, x' = x D^-1/4, stab the max per token (queries)
    or per head (keys), as in the reference."""
    d = x.shape[1]
    xs = x * math.sqrt(0.5 / math.sqrt(d))  # scaled before squaring: sum x^2 overflows fp16
    sq = (xs * xs).sum(dim=1, keepdim=True)  # (batch, 1, 1, N)
    logits = wx - sq
    dims = (1,) if is_query else (1, 3)
    return torch.exp(logits - logits.amax(dim=dims, keepdim=True)) * scale


def performer_ane(q, k, v, heads, eps, features, seed, projection: Callable) -> torch.Tensor:
    """Performer (FAVOR+) with the reference's projection.

    Shapes as `relu_linear_ane`; per head F = `features`. The projection of all heads is one
    grouped 1x1 convolution (the ANE's native matmul); the D^-1/4 input scale is folded
    into its weight. projection(m, D, seed, dtype, device) -> (m, D): the variant's random
    projection (attention_zoo.performer.projection), so both forms share it.
    """
    d = q.shape[1] // heads
    w = constant(projection, features, d, seed, q.dtype, q.device) * d**-0.25  # (m, D)
    weight = w.repeat(heads, 1)[:, :, None, None]  # (heads*m, D, 1, 1)
    fs = features**-0.5
    ks = _key_scale(k)
    out = []
    for x, is_query, scale in ((q, True, fs), (k, False, fs * ks)):
        wx = F.conv2d(x, weight, groups=heads)  # (batch, heads*m, 1, N)
        out.append(
            [
                _favor(wxh, xh, is_query, scale)
                for wxh, xh in zip(split_heads(wx, heads), split_heads(x, heads), strict=True)
            ]
        )
    phi_q, phi_k = out
    return _linear(phi_q, [to_seq_major(pk) for pk in phi_k], v, heads, eps)
