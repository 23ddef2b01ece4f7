"""Channels-first building blocks for the Apple Neural Engine forms of attention.

Every tensor here is rank 4 in the layout Apple's ml-ane-transformers uses,
(batch, channels, 1, seq): the sequence sits on the last axis, which the ANE pads to 64
bytes, so a long axis there wastes nothing. Heads are split off the channel axis (channel
h*D + d holds head h, feature d) and computed one after another ("head tiling").

The only contraction used is `einsum("nchw,nwhu->nchu")`, one of the two equations
coremltools lowers to the native MIL `einsum` op; any other equation becomes transposes,
reshapes and a matmul in the Core ML program (coremltools `build_einsum_mil`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

# The one einsum equation coremltools lowers to a native MIL einsum (rank-4 case): a batch
# of (C x W) @ (W x U) products over the batch axis n and the singleton axis h.
EINSUM_EQ = "nchw,nwhu->nchu"


def constant(fn: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    """fn(*args) computed as real data, even while torch.export traces the caller.

    For tensors that depend on shapes only (positional weights, random projections): under
    torch.export their construction (arange, randn, qr) would otherwise be recorded in the
    graph, and a cache inside `fn` (attention_zoo.performer's lru_cache) would keep a fake
    tensor. Computed here, they reach the exported program as lifted constants.
    """
    try:
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing
    except ImportError:  # a torch without these internals traces fn like any other code
        return fn(*args)
    with contextlib.ExitStack() as stack:
        stack.enter_context(unset_fake_temporarily())
        stack.enter_context(disable_proxy_modes_tracing())
        return fn(*args)


def bmm_cf(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Channels-first matrix product, out[n, c, h, u] = sum_w a[n, c, h, w] b[n, w, h, u].

    a: (batch, C, 1, W); b: (batch, W, 1, U) -> (batch, C, 1, U).
    """
    return torch.einsum(EINSUM_EQ, a, b)


def split_heads(x: torch.Tensor, heads: int, dim: int = 1) -> tuple[torch.Tensor, ...]:
    """Splits the head-major axis `dim` of x into `heads` equal slices.

    x: (batch, heads*D, 1, seq) with dim=1 -> `heads` tensors (batch, D, 1, seq); with dim=3,
    x: (batch, seq, 1, heads*D) (a transposed key) -> `heads` tensors (batch, seq, 1, D).
    """
    size = x.shape[dim]
    if size % heads:
        raise ValueError(f"axis {dim} of size {size} is not divisible by heads={heads}")
    return torch.split(x, size // heads, dim=dim)


def to_seq_major(x: torch.Tensor) -> torch.Tensor:
    """(batch, C, 1, seq) -> (batch, seq, 1, C): the key transpose the einsum needs."""
    return x.transpose(1, 3)


def query_chunks(q: torch.Tensor, chunk: int | None) -> tuple[torch.Tensor, ...]:
    """Splits queries along the sequence axis into chunks of `chunk` tokens (SPLIT_EINSUM_V2).

    q: (batch, C, 1, seq) -> chunks (batch, C, 1, <= chunk); the last chunk takes the
    remainder (never dropped). chunk=None, or chunk >= seq, gives the whole q back.
    """
    n = q.shape[3]
    if chunk is None or chunk >= n:
        return (q,)
    return torch.split(q, chunk, dim=3)


def cat_seq(parts: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenates (batch, C, 1, seq_i) tensors along the sequence axis."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=3)


def cat_channels(parts: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenates per-head (batch, D_h, 1, seq) tensors into (batch, sum D_h, 1, seq)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def quadratic_head(
    q: torch.Tensor,
    kt: torch.Tensor,
    v: torch.Tensor,
    chunk: int | None,
    normalise: bool = True,
    bias: float | None = None,
) -> torch.Tensor:
    """One head of quadratic attention in Apple's split-einsum form.

    q: (batch, D, 1, Nq), already scaled; kt: (batch, Nk, 1, D), the transposed key;
    v: (batch, Dv, 1, Nk) -> (batch, Dv, 1, Nq). Scores are (batch, Nk, 1, nq) with keys on
    the channel axis, so softmax is a reduction over channels (ANE-friendly) and the long
    query axis stays last. normalise=True: softmax over keys; False: sigmoid(scores + bias)
    (softmax-free). Queries are processed `chunk` at a time (None: all at once).
    """
    outs = []
    for qc in query_chunks(q, chunk):
        s = bmm_cf(kt, qc)  # (batch, Nk, 1, nq)
        if normalise:
            p = torch.softmax(s, dim=1)
        else:
            p = torch.sigmoid(s if bias is None else s + bias)
        outs.append(bmm_cf(v, p))  # (batch, Dv, 1, nq)
    return cat_seq(outs)


def ones_row(v: torch.Tensor, value: float) -> torch.Tensor:
    """(batch, 1, 1, seq) filled with `value`, in v's dtype and device: appended to each
    head's values so one einsum yields both the state and the key-feature sum."""
    return torch.full((v.shape[0], 1, 1, v.shape[3]), value, dtype=v.dtype, device=v.device)


def linear_head(phi_q: torch.Tensor, phi_kt: torch.Tensor, v1: torch.Tensor, eps: float):
    """One head of non-causal linear attention with the state kept small (Dv+1 x F).

    phi_q: (batch, F, 1, Nq); phi_kt: (batch, Nk, 1, F), key features times Nk^-1/2;
    v1: (batch, Dv + 1, 1, Nk), the head's values with a row of ones appended, all times
    Nk^-1/2. One einsum gives the state S / Nk (Dv x F) and the key-feature mean z / Nk
    (its last row); both stay O(1) for any Nk, which keeps an fp16 program from
    overflowing on long sequences (the plain sums grow like Nk).
    Returns (batch, Dv, 1, Nq) = (S phi_q) / (z . phi_q + eps), computed as
    (S phi_q / Nk) / (z . phi_q / Nk + eps / Nk).
    """
    state = bmm_cf(v1, phi_kt)  # (batch, Dv + 1, 1, F)
    nd = bmm_cf(state, phi_q)  # (batch, Dv + 1, 1, Nq)
    num, den = torch.split(nd, [v1.shape[1] - 1, 1], dim=1)
    den = den + eps / phi_kt.shape[1]
    if eps > 0:
        # eps / Nk underflows to 0 in fp16, so a query whose feature products are all zero
        # would give 0 / 0. Its numerator is exactly 0 too and the exact result 0 / eps is 0:
        # divide by 1 there. Features are >= 0, so only den == 0 is replaced; a NaN den comes
        # with a NaN numerator and stays NaN.
        ones = torch.ones(den.shape, dtype=den.dtype, device=den.device)  # exports as a constant
        den = torch.where(den > 0, den, ones)
    return num / den
