"""sigmoid: out = sigmoid(q k^T * scale + b) v with b = -log(Nk); no row normalisation, so no
running max or row sum (softmax-free). O(N^2 D) per head."""

from __future__ import annotations

import math

import torch

from attention_zoo._common import triton_call, upcast
from attention_zoo.registry import Variant, default_scale, register
from attention_zoo.softmax import QUERY_BLOCK


def sigmoid_attention(q, k, v, scale=None, bias=None, chunk=None) -> torch.Tensor:
    """Reference. q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    bias = -math.log(k.shape[-2]) if bias is None else bias
    kt = k.transpose(-1, -2)
    outs = [
        torch.sigmoid((qb * scale) @ kt + bias) @ v
        for qb in torch.split(q, chunk or QUERY_BLOCK, dim=-2)
    ]
    return torch.cat(outs, dim=-2).to(dtype)


# Query rows per block of the fast path: the scores of a block, 16 heads x 256 x N fp32,
# stay near the L2/L3 working set instead of an N x N buffer.
FAST_QUERY_BLOCK = 256


def sigmoid_fast(q, k, v, scale=None, bias=None, chunk=None) -> torch.Tensor:
    """Fast path: query blocks of FAST_QUERY_BLOCK rows (or `chunk`; the last block takes the
    remainder), scores scaled into the query, bias and sigmoid in place, one matmul into
    the output: never an N x N buffer. Shapes and precision as the reference."""
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    bias = -math.log(k.shape[-2]) if bias is None else bias
    kt = k.transpose(-1, -2)
    qs = q * scale
    outs = []
    for qb in torch.split(qs, chunk or FAST_QUERY_BLOCK, dim=-2):
        s = qb @ kt  # (B, H, nb, Nk)
        outs.append(s.add_(bias).sigmoid_() @ v)
    return torch.cat(outs, dim=-2).to(dtype)


def sigmoid_naive(q, k, v, scale=None, bias=None, chunk=None) -> torch.Tensor:
    """1 / (1 + exp(-(s * scale + b))) applied to v, written out by hand."""
    scale = default_scale(q.shape[-1]) if scale is None else scale
    bias = -math.log(k.shape[-2]) if bias is None else bias
    return (1.0 / (1.0 + torch.exp(-((q @ k.transpose(-1, -2)) * scale + bias)))) @ v


def sigmoid_triton(q, k, v, scale=None, bias=None, chunk=None):
    """sigmoid(q k^T * scale + bias) v through the flash Triton kernel's sigmoid mode, bias
    defaulting to -log(Nk). q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv).
    `chunk` is ignored."""
    from kernels.triton_softmax import attention_forward

    scale = default_scale(q.shape[-1]) if scale is None else scale
    bias = -math.log(k.shape[-2]) if bias is None else bias
    return triton_call(
        "sigmoid_triton",
        lambda q_, k_, v_: attention_forward(q_, k_, v_, "sigmoid", scale, bias=bias),
        lambda q_, k_, v_: sigmoid_attention(q_, k_, v_, scale=scale, bias=bias),
        q,
        k,
        v,
    )


VARIANT = register(
    Variant(
        name="sigmoid",
        kind="softmax_free",
        cost="O(N^2 D)",
        summary="sigmoid(q k^T * scale - log N) v",
        defaults={"scale": None, "bias": None, "chunk": None},
        reference_fn=sigmoid_attention,
        fast_fn=sigmoid_fast,
        naive_fn=sigmoid_naive,
        triton_path="attention_zoo.sigmoid:sigmoid_triton",
        ane_path="kernels.ane_attention:sigmoid_ane",
        notes="bias defaults to -log(N keys)",
    )
)
