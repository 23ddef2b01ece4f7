"""The hybrid DiT in MobileI2V's shape: per-block attention choice through the zoo, a
flow-matching sampler and a channels-first twin for the Apple Neural Engine.

    from hybrid_dit import DiTConfig, HybridDiT, PRESETS, to_ane, sample
    model = HybridDiT(PRESETS["mobilei2v"])
    v = model(x_t, t, first_frame, motion)   # (B, C, T, H, W) -> velocity, same shape
"""

from hybrid_dit.ane import to_ane
from hybrid_dit.config import (
    PRESETS,
    DiTConfig,
    check_grid,
    format_pattern,
    mobilei2v_pattern,
    parse_grid,
    parse_pattern,
    reference_patterns,
)
from hybrid_dit.model import HybridDiT, example_inputs, model_flops
from hybrid_dit.sampler import sample

__all__ = [
    "PRESETS",
    "DiTConfig",
    "HybridDiT",
    "check_grid",
    "example_inputs",
    "format_pattern",
    "mobilei2v_pattern",
    "model_flops",
    "parse_grid",
    "parse_pattern",
    "reference_patterns",
    "sample",
    "to_ane",
]
