"""elu_linear: phi = elu + 1 (Katharopoulos et al. 2020). O(N D^2) per head."""

from __future__ import annotations

import torch

from attention_zoo._common import io_bytes, linear_flops, linear_reference, upcast
from attention_zoo.registry import Variant, register


def elu1(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1, computed as e^min(x, 0) + relu(x): forming elu(x) + 1 = (e^x - 1) + 1
    cancels for negative x (all digits lost below x ~ -17 in fp32)."""
    return torch.exp(torch.clamp(x, max=0.0)) + torch.relu(x)


def elu_features(q, k):
    """phi(x) = elu(x) + 1 > 0: (B, H, N, D) each, compute dtype."""
    q, k = upcast(q, k)
    return elu1(q), elu1(k)


def _flops(B, H, N, D, o):
    return linear_flops(B, H, N, D, D)


def _bytes(B, H, N, D, itemsize, o):
    return io_bytes(B, H, N, D, itemsize)


VARIANT = register(
    Variant(
        name="elu_linear",
        kind="linear",
        cost="O(N D^2)",
        summary="phi = elu + 1; phi(q) (phi(k)^T v) / (phi(q) . sum phi(k) + eps)",
        defaults={"eps": 1e-8},
        reference_fn=linear_reference(elu_features),
        feature_fn=elu_features,
        flops_fn=_flops,
        triton_path="kernels.triton_linear:elu_linear_triton",
        bytes_fn=_bytes,
        ane_path="kernels.ane_attention:elu_linear_ane",
    )
)
