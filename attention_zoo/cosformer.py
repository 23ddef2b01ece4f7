"""cosformer: ReLU features re-weighted by the cos-based locality of cosFormer,
A_ij = ReLU(q_i) . ReLU(k_j) cos(pi/2 (i - j) / M), M = max(Nq, Nk), decomposed with
cos(a - b) = cos a cos b + sin a sin b into 2D-dimensional features. O(N D^2) per head.

Token positions are the raster index over the sequence; for video tokens in (t, y, x)
order this weights tokens of nearby frames more than distant ones."""

from __future__ import annotations

import math

import torch

from attention_zoo._common import (
    featured_linear_triton,
    inplace_ok,
    linear_flops,
    linear_reference,
    native_linear,
    upcast,
    with_native,
)
from attention_zoo.registry import Variant, register


def cos_sin_weights(n: int, m: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of pi/2 * i / m for i in [0, n): (n, 1) each."""
    a = torch.arange(n, dtype=torch.float64, device=device) * (math.pi / (2 * m))
    return torch.cos(a).to(dtype)[:, None], torch.sin(a).to(dtype)[:, None]


def cosformer_features(q, k):
    """phi(x_i) = [ReLU(x_i) cos a_i, ReLU(x_i) sin a_i]: (B, H, N, 2D) each."""
    q, k = upcast(q, k)
    m = max(q.shape[-2], k.shape[-2])
    out = []
    for x in (q, k):
        c, s = cos_sin_weights(x.shape[-2], m, x.dtype, x.device)
        r = torch.relu(x)
        out.append(torch.cat([r * c, r * s], dim=-1))
    return tuple(out)


def _flops(B, H, N, D, o):
    return linear_flops(B, H, N, 2 * D, D) + 4 * B * H * N * D  # 2x features + re-weighting


_REFERENCE = linear_reference(cosformer_features)


def cosformer_torch(q, k, v, eps):
    """PyTorch fast path without the 2D-wide feature tensors: phi(x_i) = [r_i c_i, r_i s_i]
    with c_i, s_i scalars per token, so

        phi_q S = c_q (r_q S_c) + s_q (r_q S_s),
        S_c = [r_k^T (c_k v), r_k^T c_k],   S_s = [r_k^T (s_k v), r_k^T s_k]

    two GEMMs of twice the width (the same FLOPs as the 2D-feature form), no concatenated
    features; numerator and denominator come from the same GEMM (the key sums pad the
    state, as in linear_fast). Where inplace_ok (eager, no autograd) the re-weighting and
    the division run in place. q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    nq, nk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    m = max(nq, nk)
    cq, sq = cos_sin_weights(nq, m, q.dtype, q.device)  # (Nq, 1) each
    ck, sk = cos_sin_weights(nk, m, k.dtype, k.device)
    rk = torch.relu(k)
    inplace = inplace_ok(q, k, v)
    if not inplace:
        wv = torch.cat([v * ck, v * sk], dim=-1)  # (B, H, Nk, 2 Dv)
    else:
        wv = torch.empty((*v.shape[:-1], 2 * dv), dtype=v.dtype, device=v.device)
        torch.mul(v, ck, out=wv[..., :dv])
        torch.mul(v, sk, out=wv[..., dv:])
    kv = rk.transpose(-1, -2) @ wv  # (B, H, D, 2 Dv)
    z = (torch.cat([ck, sk], dim=-1).T @ rk).transpose(-1, -2)  # (B, H, D, 2)
    state = torch.cat([kv[..., :dv], z[..., :1], kv[..., dv:], z[..., 1:]], dim=-1)
    out = torch.relu(q) @ state  # (B, H, Nq, 2 (Dv + 1))
    if not inplace:
        out = out[..., : dv + 1] * cq + out[..., dv + 1 :] * sq  # (B, H, Nq, Dv + 1)
        return (out[..., :-1] / (out[..., -1:] + eps)).to(dtype)
    out = out[..., : dv + 1].mul_(cq).addcmul_(out[..., dv + 1 :], sq)
    return out[..., :-1].div_(out[..., -1:] + eps).to(dtype)


def cosformer_native(q, k, v, eps):
    """The fused CPU kernel with cosFormer's feature map ("relu_cossin": the 2D-wide
    features built per chunk from ReLU and the position weights, never stored whole)."""
    nq, nk = q.shape[-2], k.shape[-2]
    m = max(nq, nk)
    return native_linear(
        q, k, v, eps, "relu_cossin",
        cos_sin_q=cos_sin_weights(nq, m, torch.float32, q.device),
        cos_sin_k=cos_sin_weights(nk, m, torch.float32, k.device),
    )  # fmt: skip


cosformer_fast = with_native(cosformer_torch, cosformer_native)


def cosformer_triton(q, k, v, eps):
    """cosFormer through the Triton kernel: (B, H, N, 2D) features from cosformer_features,
    the kernel's identity path. q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""
    return featured_linear_triton("cosformer_triton", cosformer_features, _REFERENCE, q, k, v, eps)


def cosformer_ane(q, k, v, heads, eps):
    """The channels-first form (kernels.ane_attention.cosformer_ane) with this module's
    position weights."""
    from kernels.ane_attention import cosformer_ane as ane

    return ane(q, k, v, heads, eps, position_weights=cos_sin_weights)


VARIANT = register(
    Variant(
        name="cosformer",
        kind="linear",
        cost="O(N D^2), 2x features",
        summary="ReLU features x [cos, sin] of token position; linear attention",
        defaults={"eps": 1e-8},
        reference_fn=_REFERENCE,
        fast_fn=cosformer_fast,
        feature_fn=cosformer_features,
        flops_fn=_flops,
        triton_path="attention_zoo.cosformer:cosformer_triton",
        ane_path="attention_zoo.cosformer:cosformer_ane",
        notes="positions from the token index, M = max(Nq, Nk)",
    )
)
