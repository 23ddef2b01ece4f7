"""performer: FAVOR+ positive orthogonal random features (Choromanski et al. 2021),
phi(x) = exp(w^T x' - |x'|^2 / 2) / sqrt(m), x' = x D^-1/4, so that E[phi(q).phi(k)] =
exp(q.k / sqrt(D)). The projection w (m x D) is fixed by `seed`. O(N m D) per head."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from attention_zoo._common import (
    LOG2E,
    featured_linear_triton,
    linear_fast,
    linear_flops,
    linear_reference,
    upcast,
)
from attention_zoo.registry import Variant, register


@functools.lru_cache(maxsize=32)
def _projection_np(m: int, d: int, seed: int) -> np.ndarray:
    # numpy, not torch: the cached array is real data even when the first call happens
    # while torch.export traces (a cached torch tensor would then be a fake tensor), and
    # tracers see the projection as a constant instead of recording a random draw.
    rng = np.random.default_rng(seed)
    blocks, rows = [], 0
    while rows < m:
        qmat, _ = np.linalg.qr(rng.standard_normal((d, d)))
        blocks.append(qmat.T)  # orthonormal rows
        rows += d
    w = np.concatenate(blocks, axis=0)[:m]  # (m, D)
    # rows get the norms of Gaussian vectors, as for unstructured Gaussian features
    w = w * np.linalg.norm(rng.standard_normal((m, d)), axis=1)[:, None]
    w.flags.writeable = False  # cached and shared
    return w


def projection(m: int, d: int, seed: int, dtype, device) -> torch.Tensor:
    """The (m, D) orthogonal random projection for (m, D, seed); the same on every call."""
    return torch.tensor(_projection_np(m, d, seed), dtype=dtype, device=device)


def favor_features(x: torch.Tensor, w: torch.Tensor, is_query: bool) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, N, m), positive. The stabilising max subtracted here cancels
    in the normalisation: per row for queries, per (batch, head) for keys."""
    d = x.shape[-1]
    xs = x * d**-0.25
    wx = xs @ w.T  # (B, H, N, m)
    sq = 0.5 * (xs * xs).sum(dim=-1, keepdim=True)
    logits = wx - sq
    if is_query:
        stab = logits.amax(dim=-1, keepdim=True)
    else:
        stab = logits.amax(dim=(-1, -2), keepdim=True)
    return torch.exp(logits - stab) / math.sqrt(w.shape[0])


def favor_features_inplace(x: torch.Tensor, w: torch.Tensor, is_query: bool) -> torch.Tensor:
    """favor_features with its steps in place in the projection's output (x is not
    written); no autograd. The logits are computed in base 2 (log2 e folded into the
    projection and the norm's scale, with D^-1/4) and the 1/sqrt(m) into the exponent:
    2^(l log2 e - stab - log2(m) / 2) = exp(l - stab') / sqrt(m). torch's CPU exp2 kernel
    is the faster one (elu_linear.elu1_inplace has the numbers); a base-2 logit rounds to
    the same relative error as a natural one, so the features are as accurate."""
    d, m = x.shape[-1], w.shape[0]
    c = d**-0.25
    logits = x @ (w.T * (c * LOG2E))  # (B, H, N, m), base 2
    sq = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().mul_(0.5 * c * c * LOG2E)
    logits.sub_(sq)
    dims = -1 if is_query else (-1, -2)
    stab = logits.amax(dim=dims, keepdim=True).add_(0.5 * math.log2(m))
    return logits.sub_(stab).exp2_()


def performer_features_inplace(q, k, features=128, seed=0):
    q, k = upcast(q, k)
    w = projection(features, q.shape[-1], seed, q.dtype, q.device)
    return favor_features_inplace(q, w, True), favor_features_inplace(k, w, False)


def performer_features(q, k, features=128, seed=0):
    q, k = upcast(q, k)
    w = projection(features, q.shape[-1], seed, q.dtype, q.device)
    return favor_features(q, w, True), favor_features(k, w, False)


def _flops(B, H, N, D, o):
    m = o["features"]
    return linear_flops(B, H, N, m, D) + 2 * 2 * B * H * N * D * m


_REFERENCE = linear_reference(performer_features)
_FAST = linear_fast(performer_features, performer_features_inplace, native="identity")


def performer_triton(q, k, v, eps, features, seed):
    """Performer through the Triton kernel: (B, H, N, features) positive random features
    from performer_features, the kernel's identity path.
    q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""
    return featured_linear_triton(
        "performer_triton", performer_features, _REFERENCE, q, k, v, eps,
        features=features, seed=seed,
    )  # fmt: skip


def performer_ane(q, k, v, heads, eps, features, seed):
    """The channels-first form (kernels.ane_attention.performer_ane) with this module's
    projection."""
    from kernels.ane_attention import performer_ane as ane

    return ane(q, k, v, heads, eps, features, seed, projection=projection)


VARIANT = register(
    Variant(
        name="performer",
        kind="linear",
        cost="O(N m D)",
        summary="FAVOR+ positive random features approximating softmax",
        defaults={"eps": 1e-8, "features": 128, "seed": 0},
        reference_fn=_REFERENCE,
        fast_fn=_FAST,
        feature_fn=performer_features,
        flops_fn=_flops,
        triton_path="attention_zoo.performer:performer_triton",
        ane_path="attention_zoo.performer:performer_ane",
        notes="m = features random features, projection fixed by seed",
    )
)
