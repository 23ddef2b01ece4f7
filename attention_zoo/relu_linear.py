"""relu_linear: phi = ReLU; out = phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j) + eps).

SANA / EfficientViT "LiteLA" and MobileI2V's linear block. O(N D^2) per head."""

from __future__ import annotations

import torch

from attention_zoo._common import linear_fast, linear_reference, linear_triton, upcast
from attention_zoo.registry import Variant, register

EPS = 1e-8  # MobileI2V's value


def relu_features(q, k):
    """phi(q), phi(k) = ReLU(q), ReLU(k): (B, H, N, D) each, compute dtype."""
    q, k = upcast(q, k)
    return torch.relu(q), torch.relu(k)


_REFERENCE = linear_reference(relu_features)
_FAST = linear_fast(relu_features, native="relu")


def relu_linear_triton(q, k, v, eps):
    """ReLU linear attention through the Triton kernel (ReLU fused into its loads).
    q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv)."""
    return linear_triton("relu_linear_triton", "relu", _REFERENCE, q, k, v, eps)


VARIANT = register(
    Variant(
        name="relu_linear",
        kind="linear",
        cost="O(N D^2)",
        summary="ReLU(q) (ReLU(k)^T v) / (ReLU(q) . sum ReLU(k) + eps)",
        defaults={"eps": EPS},
        reference_fn=_REFERENCE,
        fast_fn=_FAST,
        feature_fn=relu_features,
        triton_path="attention_zoo.relu_linear:relu_linear_triton",
        ane_path="kernels.ane_attention:relu_linear_ane",
        notes="a query whose features are all zero gets output 0 (0 / eps); eps=0 gives NaN there",
    )
)
