"""elu_linear: phi = elu + 1 (Katharopoulos et al. 2020). O(N D^2) per head."""

from __future__ import annotations

import torch.nn.functional as F

from attention_zoo._common import io_bytes, linear_flops, linear_reference, upcast
from attention_zoo.registry import Variant, register


def elu_features(q, k):
    """phi(x) = elu(x) + 1 > 0: (B, H, N, D) each, compute dtype."""
    q, k = upcast(q, k)
    return F.elu(q) + 1, F.elu(k) + 1


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
