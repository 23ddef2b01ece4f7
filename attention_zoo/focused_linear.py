"""focused_linear: FLatten Transformer's focused feature map,
phi(x) = ||ReLU(x)|| / ||ReLU(x)^p|| * ReLU(x)^p (norm-preserving, sharper direction).
O(N D^2) per head."""

from __future__ import annotations

import torch

from attention_zoo._common import linear_fast, linear_reference, linear_triton, upcast
from attention_zoo.registry import Variant, register


def focus(x: torch.Tensor, p: float) -> torch.Tensor:
    """Focusing function on the last axis; rows that are all zero after ReLU stay zero."""
    r = torch.relu(x)
    rp = r**p
    n1 = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
    n2 = torch.linalg.vector_norm(rp, dim=-1, keepdim=True)
    # n2 == 0 exactly when the row is all zero, where rp is zero too: any finite ratio works.
    return rp * (n1 / torch.where(n2 > 0, n2, torch.ones_like(n2)))


def focus_inplace(x: torch.Tensor, p: float) -> torch.Tensor:
    """focus with its steps in place in the ReLU's buffer (x is not written); no autograd."""
    r = torch.relu(x)
    n1 = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
    rp = r.pow_(p)
    n2 = torch.linalg.vector_norm(rp, dim=-1, keepdim=True)
    return rp.mul_(n1.div_(torch.where(n2 > 0, n2, torch.ones_like(n2))))


def focused_features_inplace(q, k, p=3.0):
    q, k = upcast(q, k)
    return focus_inplace(q, p), focus_inplace(k, p)


def focused_features(q, k, p=3.0):
    q, k = upcast(q, k)
    return focus(q, p), focus(k, p)


_REFERENCE = linear_reference(focused_features)
_FAST = linear_fast(focused_features, focused_features_inplace, native="focus")


def focused_linear_triton(q, k, v, eps, p):
    """Focused linear attention (power p) through the Triton kernel (feature map fused).
    q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""
    return linear_triton("focused_linear_triton", "focused", _REFERENCE, q, k, v, eps, p=p)


VARIANT = register(
    Variant(
        name="focused_linear",
        kind="linear",
        cost="O(N D^2)",
        summary="phi = ||ReLU x|| / ||ReLU(x)^p|| * ReLU(x)^p; linear attention",
        defaults={"eps": 1e-8, "p": 3.0},
        reference_fn=_REFERENCE,
        fast_fn=_FAST,
        feature_fn=focused_features,
        triton_path="attention_zoo.focused_linear:focused_linear_triton",
        ane_path="kernels.ane_attention:focused_linear_ane",
        notes="p is the focusing power (FLatten uses 3)",
    )
)
