"""DiTConfig: the hybrid DiT's shape and per-block attention choice, and the named presets.

    cfg = PRESETS["mobilei2v"]                     # MobileI2V's 270M shape, L*7 S L*7 S
    cfg = cfg.with_attention("softmax")            # every block softmax
    cfg = cfg.with_attention("L*3,performer,S*4")  # depth 8 pattern, aliases L and S

The per-block attention is data (one zoo variant name per block), never a block class.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import attention_zoo as az
from attention_zoo.patterns import ALIASES, format_pattern, parse_pattern  # noqa: F401 (re-exported)

IMPLS = ("auto", "reference", "fast", "triton")

# Options the model supplies itself, so a config cannot set them.
MODEL_OPTIONS = ("grid",)


def check_grid(grid, name: str = "grid") -> tuple[int, int, int]:
    """A token grid (T, H, W) of three positive ints, as a tuple; anything else is a
    ValueError naming `name`."""
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 3
        or any(isinstance(g, bool) or not isinstance(g, numbers.Integral) or g < 1 for g in grid)
    ):
        raise ValueError(f"{name} must be a token grid (T, H, W) of 3 positive ints, got {grid!r}")
    return tuple(int(g) for g in grid)


def parse_grid(text: str, name: str = "grid") -> tuple[int, int, int]:
    """ "3x23x40" -> (3, 23, 40); anything else is a ValueError naming `name`."""
    parts = str(text).lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(
            f"{name} must be TxHxW with three positive ints (e.g. 3x23x40), got {text!r}"
        )
    return tuple(int(p) for p in parts)


def mobilei2v_pattern(depth: int) -> tuple[str, ...]:
    """MobileI2V's hybrid at any depth: relu_linear everywhere except a softmax block closing
    each half (depth 16: L*7, S, L*7, S)."""
    softmax_at = {depth // 2 - 1, depth - 1}
    return tuple("softmax" if i in softmax_at else "relu_linear" for i in range(depth))


def reference_patterns(depth: int) -> tuple[tuple[str, ...], ...]:
    """All softmax, MobileI2V's hybrid, all relu_linear (each once, in that order): the
    patterns every study run measures."""
    out = []
    for p in (("softmax",) * depth, mobilei2v_pattern(depth), ("relu_linear",) * depth):
        if p not in out:
            out.append(p)
    return tuple(out)


def _pos_int(name: str, val: Any, minimum: int = 1) -> int:
    if isinstance(val, bool) or not isinstance(val, numbers.Integral):
        raise TypeError(f"DiTConfig.{name} must be an int, got {type(val).__name__} {val!r}")
    if val < minimum:
        raise ValueError(f"DiTConfig.{name} must be >= {minimum}, got {val}")
    return int(val)


def _pos_real(name: str, val: Any) -> float:
    if isinstance(val, bool) or not isinstance(val, numbers.Real):
        raise TypeError(f"DiTConfig.{name} must be a real number, got {type(val).__name__}")
    if not math.isfinite(val) or val <= 0:
        raise ValueError(f"DiTConfig.{name} must be finite and > 0, got {val}")
    return float(val)


def _bool(name: str, val: Any) -> bool:
    if not isinstance(val, bool):
        raise TypeError(f"DiTConfig.{name} must be a bool, got {type(val).__name__} {val!r}")
    return val


@dataclass(frozen=True)
class DiTConfig:
    """Shape of a hybrid DiT. Validated on construction: a bad field raises a ValueError or
    TypeError that names it. Derived sizes are properties."""

    in_channels: int  # latent channels C of the video codec (input and output)
    patch_size: int  # spatial patch p: each latent frame is cut into p x p patches
    hidden: int  # model width; equals heads * head_dim
    depth: int  # number of blocks
    heads: int  # attention heads per block
    head_dim: int  # channels per head (RoPE splits them over t, y, x)
    mlp_ratio: float  # GLUMBConv width = int(hidden * mlp_ratio) (its 1x1 conv makes twice that)
    attention: tuple[str, ...]  # one zoo variant per block, len == depth (a pattern string works)
    qk_norm: bool = True  # RMSNorm over the channels of q and of k (learned gain)
    qkv_bias: bool = True  # bias on the qkv projection in every block, so any pattern
    # loads any other pattern's weights (the paper's linear blocks have none: 48K params)
    attention_impl: str = "auto"  # zoo implementation: "auto", "reference", "fast" or "triton"
    attention_opts: Any = ()  # per-variant options {variant: {option: value}}, e.g. eps
    freq_dim: int = 256  # width of the sinusoidal timestep / motion embedding
    time_scale: float = 1000.0  # t in [0, 1] is embedded as sinusoid(t * time_scale)
    motion_scale: float = 1000.0  # motion score (about [0, 1]) embedded as sinusoid(m * scale)
    rope_theta: float = 10000.0  # RoPE base period
    norm_eps: float = 1e-6  # epsilon of the layer norms and the q/k RMSNorm
    sample_steps: int | None = None  # None: a flow model, sampled with any step count; K: a
    # K-step student (trained for the uniform K-step grid), sampled with exactly K steps

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalised values are written once, here
        for name in ("in_channels", "patch_size", "hidden", "depth", "heads", "head_dim"):
            set_(self, name, _pos_int(name, getattr(self, name)))
        for name in ("mlp_ratio", "time_scale", "motion_scale", "rope_theta", "norm_eps"):
            set_(self, name, _pos_real(name, getattr(self, name)))
        set_(self, "freq_dim", _pos_int("freq_dim", self.freq_dim, minimum=2))
        if self.sample_steps is not None:
            set_(self, "sample_steps", _pos_int("sample_steps", self.sample_steps))
        if self.freq_dim % 2:
            raise ValueError(f"DiTConfig.freq_dim must be even (cos and sin), got {self.freq_dim}")
        if self.heads * self.head_dim != self.hidden:
            raise ValueError(
                f"DiTConfig.head_dim: heads * head_dim must equal hidden ({self.hidden}), "
                f"got {self.heads} * {self.head_dim} = {self.heads * self.head_dim}"
            )
        if self.head_dim < 6:
            raise ValueError(
                f"DiTConfig.head_dim must be >= 6 so 3D RoPE rotates a pair per axis, "
                f"got {self.head_dim}"
            )
        if self.mlp_hidden < 1:
            raise ValueError(
                f"DiTConfig.mlp_ratio: int(hidden * mlp_ratio) must be >= 1, got {self.mlp_ratio}"
            )
        for name in ("qk_norm", "qkv_bias"):
            _bool(name, getattr(self, name))
        if self.attention_impl not in IMPLS:
            raise ValueError(
                f"DiTConfig.attention_impl must be one of {IMPLS}, got {self.attention_impl!r}"
            )
        try:
            set_(self, "attention", parse_pattern(self.attention, self.depth))
        except (ValueError, TypeError) as e:
            raise type(e)(f"DiTConfig.{e}") from None
        set_(self, "attention_opts", self._normalise_opts(self.attention_opts))

    @staticmethod
    def _normalise_opts(opts) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
        # Stored as sorted nested tuples so the frozen config stays hashable.
        if isinstance(opts, dict):
            items = list(opts.items())
        elif isinstance(opts, (tuple, list)):
            items = [tuple(item) for item in opts]
            if any(len(item) != 2 for item in items):
                raise ValueError(
                    f"DiTConfig.attention_opts must map variant names to option dicts, got {opts!r}"
                )
        else:
            raise TypeError(
                "DiTConfig.attention_opts must be a dict {variant: {option: value}}, "
                f"got {type(opts).__name__}"
            )
        out = []
        for name, o in items:
            try:
                var = az.get(name)
            except (KeyError, TypeError) as e:
                raise ValueError(f"DiTConfig.attention_opts: {e.args[0]}") from None
            if not isinstance(o, (dict, tuple, list)):
                raise TypeError(
                    f"DiTConfig.attention_opts[{name!r}] must be a dict {{option: value}}, "
                    f"got {type(o).__name__} {o!r}"
                )
            try:
                o = dict(o)
            except (TypeError, ValueError):
                raise TypeError(
                    f"DiTConfig.attention_opts[{name!r}] must be a dict {{option: value}}, "
                    f"got {o!r}"
                ) from None
            given = sorted(set(o) & set(MODEL_OPTIONS))
            if given:
                raise ValueError(
                    f"DiTConfig.attention_opts[{name!r}]: {', '.join(given)} is set by the "
                    "model from the token grid, not by the config"
                )
            try:
                var.resolve_opts(None, None, o)
            except (ValueError, TypeError) as e:
                raise type(e)(f"DiTConfig.attention_opts[{name!r}]: {e}") from None
            out.append((name, tuple(sorted(o.items()))))
        return tuple(sorted(out))

    # -- derived -------------------------------------------------------------------------
    @property
    def mlp_hidden(self) -> int:
        """GLUMBConv's gated width (its first 1x1 conv makes 2 * mlp_hidden channels)."""
        return int(self.hidden * self.mlp_ratio)

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Channels of each head rotated by the t, y and x positions: the largest even
        equal share; the head_dim - sum(rope_split) leftover channels stay unrotated."""
        per_axis = 2 * (self.head_dim // 6)
        return (per_axis, per_axis, per_axis)

    def opts_for(self, variant: str) -> dict[str, Any]:
        """The configured extra options of `variant` (without the grid)."""
        return dict(dict(self.attention_opts).get(variant, ()))

    def token_grid(self, latent_thw) -> tuple[int, int, int]:
        """(T, H, W) of a latent video -> the token grid (T, H / p, W / p); H and W must be
        divisible by the patch size."""
        t, h, w = (int(s) for s in latent_thw)
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"x_t: latent height and width must be divisible by patch_size={p}, "
                f"got H={h}, W={w}"
            )
        return (t, h // p, w // p)

    # -- building variants -----------------------------------------------------------------
    def with_attention(self, pattern) -> DiTConfig:
        """This config with another attention pattern (string or sequence, see parse_pattern)."""
        return dataclasses.replace(self, attention=parse_pattern(pattern, self.depth))

    def replace(self, **changes) -> DiTConfig:
        """This config with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; DiTConfig.from_dict(cfg.to_dict()) == cfg."""
        d = dataclasses.asdict(self)
        d["attention"] = list(self.attention)
        d["attention_opts"] = {name: dict(o) for name, o in self.attention_opts}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiTConfig:
        if not isinstance(d, dict):
            raise TypeError(f"config must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"config has unknown field(s): {', '.join(unknown)}")
        return cls(**d)


PRESETS: dict[str, DiTConfig] = {
    # MobileI2V's denoiser: 720p x 17 frames -> a 3 x 23 x 40 latent grid (2760 tokens).
    "mobilei2v": DiTConfig(
        in_channels=128,
        patch_size=1,
        hidden=1152,
        depth=16,
        heads=16,
        head_dim=72,
        mlp_ratio=2.5,
        attention="L*7,S,L*7,S",
    ),
    # The quality study's model: 4 x 4 space-to-depth RGB frames (48 channels) of 32 x 32
    # clips, a 4 x 8 x 8 grid of 256 tokens, where cross-frame attention carries the motion.
    # Depth 16 like mobilei2v, so a per-block quality table maps block for block onto the
    # latency table; 128 wide (4 x 32), wider than the 48 channels it must carry (64 could
    # not even copy a static first frame), and still trained in tens of minutes on 2 cores.
    # All-softmax teachers.
    "small": DiTConfig(
        in_channels=48,
        patch_size=1,
        hidden=128,
        depth=16,
        heads=4,
        head_dim=32,
        mlp_ratio=2.5,
        attention="softmax",
    ),
    # For tests: seconds on a CPU.
    "tiny": DiTConfig(
        in_channels=4,
        patch_size=1,
        hidden=32,
        depth=2,
        heads=2,
        head_dim=16,
        mlp_ratio=2.0,
        attention="L,S",
    ),
}
