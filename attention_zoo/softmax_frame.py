"""softmax_frame: softmax attention restricted to the tokens of the same latent frame
(factorised video attention). O(T (HW)^2 D) per head. Tokens are in (t, y, x) raster order."""

from __future__ import annotations

import torch

from attention_zoo._common import triton_call, upcast
from attention_zoo.registry import Variant, default_scale, register
from attention_zoo.softmax import sdpa


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
    p = torch.softmax((qf * scale) @ kf.transpose(-1, -2), dim=-1)  # (B, H, T, HW, HW)
    return (p @ vf).reshape(b, h, n, v.shape[-1]).to(dtype)


def frame_softmax_fast(q, k, v, grid, scale=None) -> torch.Tensor:
    """Fast path: torch's fused SDPA with the frames folded into the head axis. Tokens are in
    (t, y, x) order, so (B, H, T*HW, D) -> (B, H*T, HW, D) is a free view and every frame is
    one attention problem of HW tokens; any grid works and nothing is left over (N = T*HW
    is checked with the grid)."""
    dtype = q.dtype
    q, k, v = upcast(q, k, v)
    b, h, n, d = q.shape
    t = grid[0]
    scale = default_scale(d) if scale is None else scale
    qf, kf = (x.reshape(b, h * t, n // t, d) for x in (q, k))
    vf = v.reshape(b, h * t, n // t, v.shape[-1])
    o = sdpa(qf, kf, vf, scale)  # (B, H*T, HW, Dv)
    return o.reshape(b, h, n, v.shape[-1]).to(dtype)


def frame_softmax_naive(q, k, v, grid, scale=None) -> torch.Tensor:
    """Full N x N scores with keys of other frames masked to -inf, then softmax."""
    n = q.shape[-2]
    frame = torch.arange(n, device=q.device) // (n // grid[0])  # frame index of each token
    s = (q @ k.transpose(-1, -2)) * (default_scale(q.shape[-1]) if scale is None else scale)
    s = s.masked_fill(frame[:, None] != frame[None, :], float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _flops(B, H, N, D, o):
    t = o["grid"][0]
    return 4 * B * H * t * (N // t) ** 2 * D


def softmax_frame_triton(q, k, v, grid, scale=None):
    """Softmax within each latent frame through the flash Triton kernel's frame mode.
    q, k: (B, H, N, D); v: (B, H, N, Dv); grid = (T, H, W), T*H*W = N -> (B, H, N, Dv)."""
    from kernels.triton_softmax import attention_forward

    scale = default_scale(q.shape[-1]) if scale is None else scale
    frame = grid[1] * grid[2]
    return triton_call(
        "softmax_frame_triton",
        lambda q_, k_, v_: attention_forward(q_, k_, v_, "frame", scale, frame=frame),
        lambda q_, k_, v_: frame_softmax_attention(q_, k_, v_, grid=grid, scale=scale),
        q,
        k,
        v,
    )


VARIANT = register(
    Variant(
        name="softmax_frame",
        kind="softmax",
        cost="O(T (HW)^2 D)",
        summary="softmax(q k^T * scale) v within each latent frame",
        defaults={"grid": None, "scale": None},
        required=("grid",),
        reference_fn=frame_softmax_attention,
        fast_fn=frame_softmax_fast,
        naive_fn=frame_softmax_naive,
        flops_fn=_flops,
        triton_path="attention_zoo.softmax_frame:softmax_frame_triton",
        ane_path="kernels.ane_attention:softmax_frame_ane",
        extra={"same_length": True},
        notes="needs grid=(T, H, W); tokens in (t, y, x) order",
    )
)
