"""The two layouts of the zoo and the conversion between them, used only at the edges.

SDPA's layout (B, H, N, D) for the reference, fast CPU and Triton paths; Apple's
channels-first layout (B, H*D, 1, N) for the ANE forms, where channel h*D + d holds head h,
feature d and the sequence sits on the last axis.
"""

from __future__ import annotations

import torch


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, H*D, 1, N), channel h*D + d = head h, feature d (a copy)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, H, N, D) tensor, got {_shape(x)}")
    b, h, n, d = x.shape
    return x.transpose(-1, -2).reshape(b, h * d, 1, n).contiguous()


def from_channels_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, H*D, 1, N) -> (B, H, N, D) for H = heads (a view where the strides allow)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[2] != 1:
        raise ValueError(f"x must be a channels-first (B, H*D, 1, N) tensor, got {_shape(x)}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive int, got {heads!r}")
    b, c, _, n = x.shape
    if c % heads:
        raise ValueError(f"x's channels ({c}) must be divisible by heads={heads}")
    return x.reshape(b, heads, c // heads, n).transpose(-1, -2)


def _shape(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
