"""The hybrid DiT in MobileI2V's shape: per-block attention choice through the zoo, a
flow-matching sampler and a channels-first twin for the Apple Neural Engine.

    from hybrid_dit import DiTConfig, HybridDiT, PRESETS, to_ane, sample
    model = HybridDiT(PRESETS["mobilei2v"])
    v = model(x_t, t, first_frame, motion)   # (B, C, T, H, W) -> velocity, same shape
"""

from hybrid_dit.ane import to_ane
from hybrid_dit.config import PRESETS, DiTConfig, format_pattern, parse_pattern
from hybrid_dit.model import HybridDiT, model_flops
from hybrid_dit.sampler import sample

__all__ = [
    "PRESETS",
    "DiTConfig",
    "HybridDiT",
    "format_pattern",
    "model_flops",
    "parse_pattern",
    "sample",
    "to_ane",
]
