"""Argument checks shared by every implementation: bad input gets a ValueError (or
TypeError) that names the argument, what was expected and what came."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _desc(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_tensor(name: str, t: Any, rank: int | None = None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if rank is not None and t.dim() != rank:
        raise ValueError(f"{name} must have rank {rank}, got {_desc(t)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype "
            f"(float16, bfloat16, float32 or float64), got {t.dtype}"
        )


def check_same(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k, v agree in dtype and device."""
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")


def check_qkv(q, k, v, same_length: bool = False) -> None:
    """q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv); all the same float dtype and device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, rank=4)
    check_same(q, k, v)
    bq, hq, nq, dq = q.shape
    bk, hk, nk, dk = k.shape
    bv, hv, nv, _ = v.shape
    if (bk, hk) != (bq, hq) or (bv, hv) != (bq, hq):
        raise ValueError(
            "q, k and v must share batch and heads (B, H): "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if dk != dq:
        raise ValueError(f"k's head dim must equal q's ({dq}), got k {tuple(k.shape)}")
    if nv != nk:
        raise ValueError(f"v's sequence length must equal k's ({nk}), got v {tuple(v.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if 0 in t.shape:
            raise ValueError(
                f"{name} must have no empty dimension (N >= 1, D >= 1), got {_desc(t)}"
            )
    if same_length and nq != nk:
        raise ValueError(
            f"this variant needs as many queries as keys; got q with N={nq}, k with N={nk}"
        )


def check_ane(q, k, v, heads, same_length: bool = False) -> None:
    """Channels-first ANE layout: q, k (B, H*D, 1, N); v (B, H*Dv, 1, Nk); heads divides
    the channels (channel h*D + d holds head h, feature d)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, rank=4)
        if t.shape[2] != 1:
            raise ValueError(f"{name} must be channels-first (B, H*D, 1, N), got {_desc(t)}")
    check_same(q, k, v)
    if isinstance(heads, bool) or not isinstance(heads, numbers.Integral) or heads < 1:
        raise ValueError(f"heads must be a positive int, got {heads!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.shape[1] % heads:
            raise ValueError(f"{name}'s channels ({t.shape[1]}) must be divisible by heads={heads}")
        if 0 in t.shape:
            raise ValueError(f"{name} must have no empty dimension, got {_desc(t)}")
    if q.shape[0] != k.shape[0] or q.shape[0] != v.shape[0]:
        raise ValueError(
            f"q, k and v must share the batch size, got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}"
        )
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"k must have q's channels ({q.shape[1]}), got {_desc(k)}")
    if v.shape[3] != k.shape[3]:
        raise ValueError(f"v's sequence length must equal k's ({k.shape[3]}), got {_desc(v)}")
    if same_length and q.shape[3] != k.shape[3]:
        raise ValueError(
            "this variant needs as many queries as keys; "
            f"got q with N={q.shape[3]}, k with N={k.shape[3]}"
        )


# -- options -------------------------------------------------------------------------


def _real(name: str, val: Any) -> float:
    if isinstance(val, bool) or not isinstance(val, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(val).__name__} {val!r}")
    val = float(val)
    if not math.isfinite(val):
        raise ValueError(f"{name} must be finite, got {val}")
    return val


def _int(name: str, val: Any) -> int:
    if isinstance(val, bool) or not isinstance(val, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(val).__name__} {val!r}")
    return int(val)


def check_grid(grid: Any, n: int | None) -> tuple[int, int, int]:
    """grid = (T, H, W) of positive ints whose product is the sequence length n."""
    if not isinstance(grid, (tuple, list)) or len(grid) != 3:
        raise ValueError(f"grid must be a (T, H, W) tuple of 3 positive ints, got {grid!r}")
    dims = tuple(_int("grid", g) for g in grid)
    if min(dims) < 1:
        raise ValueError(f"grid must hold positive ints, got {grid!r}")
    if n is not None and math.prod(dims) != n:
        raise ValueError(
            f"grid {dims} holds {math.prod(dims)} tokens but the sequence has N={n}; "
            "grid must multiply to N"
        )
    return dims


def _check_eps(v, **_):
    v = _real("eps", v)
    if v < 0:
        raise ValueError(f"eps must be >= 0, got {v}")
    return v


def _check_scale(v, **_):
    if v is None:
        return None
    v = _real("scale", v)
    if v <= 0:
        raise ValueError(f"scale must be > 0, got {v}")
    return v


def _check_bias(v, **_):
    return None if v is None else _real("bias", v)


def _check_p(v, **_):
    v = _real("p", v)
    if v < 1:
        raise ValueError(f"p (focusing power) must be >= 1, got {v}")
    return v


def _check_features(v, **_):
    v = _int("features", v)
    if v < 1:
        raise ValueError(f"features must be >= 1, got {v}")
    return v


def _check_seed(v, **_):
    v = _int("seed", v)
    if v < 0:
        raise ValueError(f"seed must be >= 0, got {v}")
    return v


def _check_grid_opt(v, n_query=None, n_key=None, **_):
    if v is None:
        return None
    if n_query is not None and n_key is not None and n_query != n_key:
        raise ValueError(
            f"grid needs as many queries as keys; got N={n_query} queries, {n_key} keys"
        )
    return check_grid(v, n_query)


def _check_chunk(v, **_):
    if v is None:
        return None
    v = _int("chunk", v)
    if v < 1:
        raise ValueError(f"chunk must be >= 1, got {v}")
    return v


OPTION_CHECKS = {
    "eps": _check_eps,
    "scale": _check_scale,
    "bias": _check_bias,
    "p": _check_p,
    "features": _check_features,
    "seed": _check_seed,
    "grid": _check_grid_opt,
    "chunk": _check_chunk,
}


def check_opts(variant, opts: dict, n_query: int | None = None, n_key: int | None = None) -> dict:
    """Returns the variant's full option dict (defaults filled), checking every value."""
    unknown = sorted(set(opts) - set(variant.defaults))
    if unknown:
        accepted = ", ".join(variant.defaults) or "none"
        raise ValueError(
            f"variant {variant.name!r} does not take option(s) {', '.join(unknown)}; "
            f"it accepts: {accepted}"
        )
    out = dict(variant.defaults)
    out.update(opts)
    for name in variant.required:
        if out.get(name) is None:
            raise ValueError(f"variant {variant.name!r} needs option {name}=")
    for name, val in out.items():
        out[name] = OPTION_CHECKS[name](val, n_query=n_query, n_key=n_key)
    return out
