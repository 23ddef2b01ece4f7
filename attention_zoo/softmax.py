"""softmax: out = softmax(q k^T * scale) v. O(N^2 D) per head."""

from __future__ import annotations

import torch

from attention_zoo._common import io_bytes, upcast
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


def softmax_naive(q, k, v, scale=None, chunk=None) -> torch.Tensor:
    """exp(s - max s) / sum exp(s - max s) applied to v, written out by hand."""
    s = (q @ k.transpose(-1, -2)) * (default_scale(q.shape[-1]) if scale is None else scale)
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return (e / e.sum(dim=-1, keepdim=True)) @ v


def _flops(B, H, N, D, o):
    return 4 * B * H * N * N * D


def _bytes(B, H, N, D, itemsize, o):
    return io_bytes(B, H, N, D, itemsize)


VARIANT = register(
    Variant(
        name="softmax",
        kind="softmax",
        cost="O(N^2 D)",
        summary="softmax(q k^T * scale) v",
        defaults={"scale": None, "chunk": None},
        reference_fn=softmax_attention,
        naive_fn=softmax_naive,
        flops_fn=_flops,
        triton_path="kernels.triton_softmax:softmax_triton",
        bytes_fn=_bytes,
        ane_path="kernels.ane_attention:softmax_ane",
        notes="scale defaults to 1/sqrt(D)",
    )
)
