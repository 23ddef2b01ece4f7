"""The attention zoo: softmax and linear (and softmax-free) attention variants, each with an
exact plain-PyTorch reference and, where built, a Triton kernel and a channels-first
Apple Neural Engine form, all found through one registry.

    import attention_zoo as az
    az.get("relu_linear").reference(q, k, v)          # (B, H, N, D) -> (B, H, N, D)
    az.attention(q, k, v, variant="softmax", impl="auto")
"""

# Registration order is table order, so these stay in this order.
# isort: off
from attention_zoo import softmax  # noqa: F401
from attention_zoo import relu_linear  # noqa: F401
from attention_zoo import elu_linear  # noqa: F401
from attention_zoo import focused_linear  # noqa: F401
from attention_zoo import cosformer  # noqa: F401
from attention_zoo import performer  # noqa: F401
from attention_zoo import sigmoid  # noqa: F401
from attention_zoo import softmax_frame  # noqa: F401

# isort: on
from attention_zoo.layout import from_channels_first, to_channels_first
from attention_zoo.patterns import format_pattern, parse_pattern
from attention_zoo.registry import IMPLS, KINDS, VARIANTS, Variant, attention, get, triton_usable

__all__ = [
    "IMPLS",
    "KINDS",
    "VARIANTS",
    "Variant",
    "attention",
    "format_pattern",
    "from_channels_first",
    "get",
    "parse_pattern",
    "to_channels_first",
    "triton_usable",
]
