"""The variant registry: one entry per attention variant, tying its reference, its Triton
launcher and its channels-first ANE form together.

Fast paths are named by import path ("package.module:function") and imported only when
called, so the zoo imports on a machine without Triton (a Mac exporting to Core ML).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from attention_zoo._common import io_bytes, linear_flops, linear_quadratic_form, upcast
from attention_zoo.checks import check_ane, check_opts, check_qkv

IMPLS = ("reference", "fast", "triton", "ane")
KINDS = ("softmax", "linear", "softmax_free")


def _resolve(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def triton_usable() -> bool:
    """True when Triton imports and can run here: on CUDA, or on CPU through its
    interpreter (TRITON_INTERPRET=1)."""
    import os

    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class Variant:
    """One attention variant.

    Attributes:
        name: registry key.
        kind: "softmax" (row-normalised exp), "linear" (kernelised, O(N D^2)) or
            "softmax_free" (quadratic without row normalisation).
        cost: asymptotic cost per head, for tables.
        summary: one line of math.
        defaults: every option the variant accepts, with its default value. An option
            whose default is None is optional (or required, see `required`).
        required: options that must be given (e.g. `grid` for per-frame attention).
        reference_fn: plain PyTorch, exact math; called with validated tensors and the
            full option dict.
        flops_fn, bytes_fn: analytic forward counts, called as f(B, H, N, D, opts) and
            f(B, H, N, D, itemsize, opts). Defaults: 4 B H N^2 D FLOPs for quadratic
            kinds, `linear_flops` with D features for linear ones; bytes as an ideal
            fused kernel moves them (q, k, v read once, the output written once).
        feature_fn: for linear variants, phi(q), phi(k) as (B, H, N, F) tensors; the
            defining quadratic form is normalise(phi(q) phi(k)^T) v.
        naive_fn: the defining O(N^2) form computed naively, f(q, k, v, **opts) on
            upcast tensors; for tests and docs, never a hot path. Linear variants get it
            from feature_fn when it is not given.
        fast_fn: the fastest exact CPU implementation (torch's fused SDPA; the linear
            forms' native kernel, with their PyTorch matmul form as `fast_fn.torch_form`
            and fallback), same signature as reference_fn; what impl="auto" runs on CPU.
        triton_path, ane_path: "module:function" of the Triton and ANE forms, or None.
    """

    name: str
    kind: str
    cost: str
    summary: str
    defaults: dict[str, Any]
    reference_fn: Callable
    flops_fn: Callable | None = None
    bytes_fn: Callable | None = None
    required: tuple[str, ...] = ()
    feature_fn: Callable | None = None
    naive_fn: Callable | None = None
    fast_fn: Callable | None = None
    triton_path: str | None = None
    ane_path: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"Variant {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )

    def naive(self, q, k, v, **opts) -> torch.Tensor:
        """The defining quadratic form, computed naively in the compute dtype (O(N^2) memory)."""
        check_qkv(q, k, v, same_length=self._needs_same_length)
        o = self.resolve_opts(q, k, opts)
        q, k, v = upcast(q, k, v)
        if self.naive_fn is not None:
            return self.naive_fn(q, k, v, **o)
        if self.feature_fn is None:
            raise NotImplementedError(f"variant {self.name!r} has no naive form")
        eps = o.pop("eps")
        phi_q, phi_k = self.feature_fn(q, k, **o)
        return linear_quadratic_form(phi_q, phi_k, v, eps)

    @property
    def quadratic(self) -> bool:
        return self.kind != "linear"

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.defaults)

    def resolve_opts(self, q: torch.Tensor | None, k: torch.Tensor | None, opts: dict) -> dict:
        """Checks `opts` against this variant and fills defaults."""
        n = None if q is None else q.shape[-2]
        nk = None if k is None else k.shape[-2]
        return check_opts(self, opts, n_query=n, n_key=nk)

    # -- implementations -------------------------------------------------------------
    def reference(self, q, k, v, **opts) -> torch.Tensor:
        """Plain PyTorch, exact math. q, k: (B, H, N, D); v: (B, H, N, Dv) -> (B, H, N, Dv).
        Computes in float64 for float64 inputs and in float32 (at least) otherwise."""
        check_qkv(q, k, v, same_length=self._needs_same_length)
        o = self.resolve_opts(q, k, opts)
        return self.reference_fn(q, k, v, **o)

    def fast(self, q, k, v, **opts) -> torch.Tensor:
        """The fastest exact CPU implementation (SDPA, the linear forms' native kernel or
        their matmul forms): same contract and precision as `reference`, held to
        FlashAttention's rule against it in the tests. A variant without one falls back to
        its reference."""
        check_qkv(q, k, v, same_length=self._needs_same_length)
        o = self.resolve_opts(q, k, opts)
        return (self.fast_fn or self.reference_fn)(q, k, v, **o)

    @property
    def _needs_same_length(self) -> bool:
        return bool(self.extra.get("same_length", False))

    @property
    def triton(self) -> Callable | None:
        """The Triton kernel's launcher (same signature as `reference`), or None."""
        if self.triton_path is None:
            return None
        return _LazyImpl(self, "triton", self.triton_path)

    @property
    def ane(self) -> Callable | None:
        """The channels-first tiled form: ane(q, k, v, heads, **opts) on (B, H*D, 1, N)."""
        if self.ane_path is None:
            return None
        return _LazyImpl(self, "ane", self.ane_path)

    def impls(self) -> tuple[str, ...]:
        """Implementations this variant has (whether or not they can run on this machine)."""
        out = ["reference"]
        if self.fast_fn is not None:
            out.append("fast")
        if self.triton_path is not None:
            out.append("triton")
        if self.ane_path is not None:
            out.append("ane")
        return tuple(out)

    def usable_impls(self) -> tuple[str, ...]:
        """Implementations that can run on this machine now."""
        return tuple(i for i in self.impls() if i != "triton" or triton_usable())

    # -- analytic counts -------------------------------------------------------------
    def flops(self, B: int, H: int, N: int, D: int, **opts) -> int:
        """Forward FLOPs (multiply and add counted separately) for q, k, v of (B, H, N, D)."""
        _check_counts(B=B, H=H, N=N, D=D)
        o = check_opts(self, opts, n_query=N, n_key=N)
        if self.flops_fn is not None:
            return int(self.flops_fn(B, H, N, D, o))
        if self.kind == "linear":
            return linear_flops(B, H, N, D, D)
        return 4 * B * H * N * N * D

    def bytes(self, B: int, H: int, N: int, D: int, dtype=torch.float32, **opts) -> int:
        """Bytes an ideal fused kernel moves: read q, k, v once, write the output once."""
        _check_counts(B=B, H=H, N=N, D=D)
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__} {dtype!r}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        o = check_opts(self, opts, n_query=N, n_key=N)
        if self.bytes_fn is not None:
            return int(self.bytes_fn(B, H, N, D, itemsize, o))
        return io_bytes(B, H, N, D, itemsize)


def _check_counts(**dims: int) -> None:
    for name, val in dims.items():
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


class _LazyImpl:
    """Callable that checks its arguments like `reference` and imports the fast form on first
    call. The fast form receives checked tensors and the full option dict (defaults filled):
    triton: fn(q, k, v, **opts) on (B, H, N, D); ane: fn(q, k, v, heads, **opts) on
    (B, H*D, 1, N)."""

    def __init__(self, variant: Variant, impl: str, path: str):
        self.variant, self.impl, self.path = variant, impl, path
        self._fn: Callable | None = None

    def __call__(self, q, k, v, *args, **opts):
        var = self.variant
        if self.impl == "ane":
            heads = _ane_heads(args, opts)
            check_ane(q, k, v, heads, same_length=var._needs_same_length)
            o = check_opts(var, opts, n_query=q.shape[-1], n_key=k.shape[-1])
            args = (heads,)
        else:
            if args:
                raise TypeError(f"{self.impl} form is called as fn(q, k, v, **opts)")
            check_qkv(q, k, v, same_length=var._needs_same_length)
            o = var.resolve_opts(q, k, opts)
        if self._fn is None:
            self._fn = _resolve(self.path)
        return self._fn(q, k, v, *args, **o)

    def __repr__(self) -> str:
        return f"<{self.variant.name}.{self.impl} -> {self.path}>"


def _ane_heads(args: tuple, opts: dict):
    """`heads` of an ANE call, given positionally (ane(q, k, v, 2)) or by keyword
    (heads=2), popped from `opts`; given both ways or not at all is a TypeError."""
    if len(args) > 1:
        raise TypeError(
            f"the ane form takes (q, k, v, heads, **opts); got {3 + len(args)} positional arguments"
        )
    if args and "heads" in opts:
        raise TypeError("heads given twice: positionally and as heads=")
    if not args and "heads" not in opts:
        raise TypeError(
            "ane form is called as ane(q, k, v, heads, **opts) or ane(q, k, v, heads=H): "
            "the channels-first (B, H*D, 1, N) layout does not say how many heads it holds"
        )
    return args[0] if args else opts.pop("heads")


VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} is already registered")
    VARIANTS[variant.name] = variant
    return variant


def get(name: str) -> Variant:
    """The registered variant `name`; unknown names raise KeyError listing the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"variant must be a str, got {type(name).__name__}")
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(
            f"unknown attention variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}"
        ) from None


def attention(q, k, v, *args, variant: str = "softmax", impl: str = "auto", **opts) -> torch.Tensor:
    """Dispatches to `variant`'s implementation `impl`.

    q, k: (B, H, N, D); v: (B, H, N, Dv) -> (B, H, N, Dv) for "reference" and "triton".
    impl="ane" takes the channels-first layout (B, H*D, 1, N) instead and needs `heads`,
    positionally after v or as heads=, as `Variant.ane` does.
    impl="auto" picks Triton for CUDA tensors the variant's kernel takes, and otherwise the
    fastest exact CPU implementation ("fast": fused SDPA, the linear forms' native kernel
    or matmul forms), falling back to the reference for a variant that has none.
    """
    var = get(variant)
    if impl not in (*IMPLS, "auto"):
        raise ValueError(f"impl must be one of {(*IMPLS, 'auto')}, got {impl!r}")
    if impl == "auto":
        if _triton_takes(var, q, v):
            impl = "triton"
        else:
            impl = "fast" if var.fast_fn is not None else "reference"
    if args and impl != "ane":
        raise TypeError(
            f"attention(q, k, v, ...) takes one positional argument after v (heads) only "
            f"with impl='ane', got impl={impl!r}"
        )
    if impl == "ane" and not args and "heads" not in opts:
        raise ValueError(
            "impl='ane' takes channels-first (B, H*D, 1, N) inputs and needs heads= "
            "(or heads positionally after v)"
        )
    if impl == "reference":
        return var.reference(q, k, v, **opts)
    if impl == "fast":
        if var.fast_fn is None:
            raise NotImplementedError(
                f"variant {var.name!r} has no 'fast' implementation; it has: "
                f"{', '.join(var.impls())}"
            )
        return var.fast(q, k, v, **opts)
    fn = getattr(var, impl)
    if fn is None:
        raise NotImplementedError(
            f"variant {var.name!r} has no {impl!r} implementation; it has: {', '.join(var.impls())}"
        )
    if impl == "triton" and not triton_usable():
        raise RuntimeError(
            f"impl='triton' needs Triton and a CUDA device (or TRITON_INTERPRET=1 on CPU); "
            f"use impl='reference' here. {var.name!r} has: {', '.join(var.impls())}"
        )
    return fn(q, k, v, *args, **opts)


def _triton_takes(var: Variant, q, v) -> bool:
    """impl="auto": Triton for CUDA tensors it supports (dtype, head dims); the reference
    for everything else, including float64 and head dims outside the kernels' range."""
    if var.triton is None or not (isinstance(q, torch.Tensor) and q.is_cuda) or not triton_usable():
        return False
    if not isinstance(v, torch.Tensor):
        return False
    from kernels.triton_softmax import unsupported_reason

    return unsupported_reason(q, v) is None


def default_scale(d: int) -> float:
    return 1.0 / math.sqrt(d)
