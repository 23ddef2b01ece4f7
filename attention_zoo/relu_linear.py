"""relu_linear: phi = ReLU; out = phi(q) (phi(k)^T v) / (phi(q) . sum_j phi(k_j) + eps).

SANA / EfficientViT "LiteLA" and MobileI2V's linear block. O(N D^2) per head."""

from __future__ import annotations

import torch

from attention_zoo._common import io_bytes, linear_flops, linear_reference, upcast
from attention_zoo.registry import Variant, register

EPS = 1e-8  # MobileI2V's value


def relu_features(q, k):
    """phi(q), phi(k) = ReLU(q), ReLU(k): (B, H, N, D) each, compute dtype."""
    q, k = upcast(q, k)
    return torch.relu(q), torch.relu(k)


def _flops(B, H, N, D, o):
    return linear_flops(B, H, N, D, D)


def _bytes(B, H, N, D, itemsize, o):
    return io_bytes(B, H, N, D, itemsize)


VARIANT = register(
    Variant(
        name="relu_linear",
        kind="linear",
        cost="O(N D^2)",
        summary="ReLU(q) (ReLU(k)^T v) / (ReLU(q) . sum ReLU(k) + eps)",
        defaults={"eps": EPS},
        reference_fn=linear_reference(relu_features),
        feature_fn=relu_features,
        flops_fn=_flops,
        triton_path="kernels.triton_linear:relu_linear_triton",
        bytes_fn=_bytes,
        ane_path="kernels.ane_attention:relu_linear_ane",
        notes="a query whose features are all zero gets output 0 (0 / eps); eps=0 gives NaN there",
    )
)
