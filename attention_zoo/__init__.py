"""The attention zoo: softmax and linear (and softmax-free) attention variants, each with an
exact plain-PyTorch reference and, where built, a Triton kernel and a channels-first
Apple Neural Engine form, all found through one registry.

    import attention_zoo as az
    az.get("relu_linear").reference(q, k, v)          # (B, H, N, D) -> (B, H, N, D)
    az.attention(q, k, v, variant="softmax", impl="auto")
"""

from attention_zoo import (  # noqa: F401  (registration order = table order)
    softmax,
    relu_linear,
    elu_linear,
    focused_linear,
    cosformer,
    performer,
    sigmoid,
    softmax_frame,
)
from attention_zoo.registry import IMPLS, KINDS, VARIANTS, Variant, attention, get, triton_usable

__all__ = ["IMPLS", "KINDS", "VARIANTS", "Variant", "attention", "get", "triton_usable"]
