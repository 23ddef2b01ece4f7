"""Shared test helpers: inputs, option sets derived from the registry, error measures."""

from __future__ import annotations

import contextlib

import pytest
import torch


def make_qkv(B, H, N, D, dtype=torch.float32, seed=0, scale=1.0, device="cpu"):
    """Seeded q, k, v of shape (B, H, N, D), drawn in float64 then cast."""
    gen = torch.Generator().manual_seed(seed)
    out = [torch.randn(B, H, N, D, generator=gen, dtype=torch.float64) * scale for _ in range(3)]
    return tuple(t.to(device=device, dtype=dtype) for t in out)


def grid_for(n: int) -> tuple[int, int, int]:
    """A (T, H, W) grid for n tokens with T > 1 whenever n has a small factor, so per-frame
    variants see several frames (and frame sizes that are not powers of two)."""
    for t in (3, 2, 5, 7):
        if n % t == 0 and n > t:
            rest = n // t
            for h in range(int(rest**0.5), 0, -1):
                if rest % h == 0:
                    return (t, h, rest // h)
    return (1, 1, n)


def opts_for(var, n: int) -> dict:
    """The options a test must give `var` for a sequence of n tokens (a grid if it needs one)."""
    return {"grid": grid_for(n)} if "grid" in var.required else {}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error ||out - ref|| / ||ref||, computed in float64 (0 when both are 0)."""
    out, ref = out.double(), ref.double()
    den = ref.norm().item()
    num = (out - ref).norm().item()
    return num / den if den > 0 else num


@contextlib.contextmanager
def poisoned_empty():
    """torch.empty / empty_like return NaN-filled float tensors, so an output element (or a
    partial state) a kernel never writes cannot pass."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def empty_like(*args, **kwargs):
        t = real_empty_like(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "empty", empty)
        mp.setattr(torch, "empty_like", empty_like)
        yield
