"""softmax_frame: softmax attention restricted to the tokens of the same latent frame
(factorised video attention). O(T (HW)^2 D) per head. Tokens are in (t, y, x) raster order."""

from __future__ import annotations

import torch

from attention_zoo._common import io_bytes, upcast
from attention_zoo.registry import Variant, default_scale, register


def frame_softmax_attention(q, k, v, grid, scale=None) -> torch.Tensor:
    """Reference. q, k: (B, H, N, D); v: (B, H, N, Dv); grid = (T, H, W) with T*H*W = N."""
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    b, h, n, d = q.shape
    t = grid[0]
    scale = default_scale(d) if scale is None else scale
    qf = q.reshape(b, h, t, n // t, d)  # (B, H, T, HW, D)
    kf = k.reshape(b, h, t, n // t, d)
    vf = v.reshape(b, h, t, n // t, v.shape[-1])
    p = torch.softmax((qf @ kf.transpose(-1, -2)) * scale, dim=-1)  # (B, H, T, HW, HW)
    return (p @ vf).reshape(b, h, n, v.shape[-1]).to(dtype)


def _flops(B, H, N, D, o):
    t = o["grid"][0]
    return 4 * B * H * t * (N // t) ** 2 * D


def _bytes(B, H, N, D, itemsize, o):
    return io_bytes(B, H, N, D, itemsize)


VARIANT = register(
    Variant(
        name="softmax_frame",
        kind="softmax",
        cost="O(T (HW)^2 D)",
        summary="softmax(q k^T * scale) v within each latent frame",
        defaults={"grid": None, "scale": None},
        required=("grid",),
        reference_fn=frame_softmax_attention,
        flops_fn=_flops,
        bytes_fn=_bytes,
        extra={"same_length": True},
        notes="needs grid=(T, H, W); tokens in (t, y, x) order",
    )
)
