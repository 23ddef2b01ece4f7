"""softmax: out = softmax(q k^T * scale) v. O(N^2 D) per head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention_zoo._common import triton_call, upcast
from attention_zoo.registry import Variant, default_scale, register

# Queries are processed in blocks so the reference never holds more than this many
# scores per (batch, head) at once; the last block takes the remainder.
QUERY_BLOCK = 2048


def softmax_attention(q, k, v, scale=None, chunk=None) -> torch.Tensor:
    """Reference. q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv).

    Math in float64 for float64 inputs, float32 otherwise; result in the input dtype.
    `chunk` bounds the query block (memory), it does not change the result.
    """
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    kt = k.transpose(-1, -2)  # (B, H, D, Nk)
    outs = []
    for qb in torch.split(q, chunk or QUERY_BLOCK, dim=-2):
        s = (qb * scale) @ kt  # (B, H, nb, Nk); scaling q, not the N x N scores
        outs.append(torch.softmax(s, dim=-1) @ v)
    return torch.cat(outs, dim=-2).to(dtype)


# torch 2.13's CPU SDPA keeps NaN queries NaN from this many keys up (checked for every
# length in tests/test_numerical_edges.py).
SDPA_NAN_SAFE_KEYS = 16


def sdpa(q, k, v, scale: float) -> torch.Tensor:
    """torch's fused scaled_dot_product_attention with NaN queries kept NaN: on CPU, torch
    2.13's kernel returns a row of zeros for a query holding NaN when the key sequence is
    shorter than 16 (a silently wrong answer; pytorch issue 141128 reports the same class
    of bug). There one pass over q finds such rows and sets them to NaN, as the math says;
    the test is on the shape only, so exporters see a static graph."""
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    if k.shape[-2] < SDPA_NAN_SAFE_KEYS:
        out = out.masked_fill(torch.isnan(q).any(dim=-1, keepdim=True), float("nan"))
    return out


def softmax_fast(q, k, v, scale=None, chunk=None) -> torch.Tensor:
    """Fast path: torch's fused scaled_dot_product_attention (the flash CPU kernel: blocked
    online softmax, no N x N buffer), in the reference's compute precision. Shapes as the
    reference; `chunk` is the reference's memory bound and does not apply."""
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    scale = default_scale(q.shape[-1]) if scale is None else scale
    return sdpa(q, k, v, scale).to(dtype)


def softmax_naive(q, k, v, scale=None, chunk=None) -> torch.Tensor:
    """exp(s - max s) / sum exp(s - max s) applied to v, written out by hand."""
    s = (q @ k.transpose(-1, -2)) * (default_scale(q.shape[-1]) if scale is None else scale)
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return (e / e.sum(dim=-1, keepdim=True)) @ v


def softmax_triton(q, k, v, scale=None, chunk=None):
    """softmax(q k^T * scale) v through the flash Triton kernel. q, k: (B, H, Nq|Nk, D);
    v: (B, H, Nk, Dv) -> (B, H, Nq, Dv). `chunk` only bounds the reference's memory and is
    ignored here."""
    from kernels.triton_softmax import attention_forward

    scale = default_scale(q.shape[-1]) if scale is None else scale
    return triton_call(
        "softmax_triton",
        lambda q_, k_, v_: attention_forward(q_, k_, v_, "softmax", scale),
        lambda q_, k_, v_: softmax_attention(q_, k_, v_, scale=scale),
        q,
        k,
        v,
    )


VARIANT = register(
    Variant(
        name="softmax",
        kind="softmax",
        cost="O(N^2 D)",
        summary="softmax(q k^T * scale) v",
        defaults={"scale": None, "chunk": None},
        reference_fn=softmax_attention,
        fast_fn=softmax_fast,
        naive_fn=softmax_naive,
        triton_path="attention_zoo.softmax:softmax_triton",
        ane_path="kernels.ane_attention:softmax_ane",
        notes="scale defaults to 1/sqrt(D)",
    )
)
