"""HybridDiT: a SANA / MobileI2V-shaped video DiT whose blocks each use the attention variant
the config names for them.

    model = HybridDiT(PRESETS["mobilei2v"])
    v = model(x_t, t, first_frame, motion)   # (B, C, T, H, W) latent video -> velocity

Per block: adaLN-single modulation (shift / scale / gate from the timestep and the motion
score), self-attention of the block's zoo variant with q/k RMSNorm and 3D RoPE, and a
GLUMBConv FFN (1x1 conv, depthwise 3x3 per latent frame, SiLU-gated GLU, 1x1 conv).
Tokens are in (t, y, x) raster order; the token grid is derived from the input.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import attention_zoo as az
from attention_zoo.checks import FLOAT_DTYPES
from hybrid_dit.config import DiTConfig, check_grid

MODULATIONS = 6  # shift, scale, gate for attention, then for the FFN
GATES = [2, 5]  # the gate rows among the six


# -- small pieces shared with the ANE twin ----------------------------------------------------


def sinusoid(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of scalars. x: (...) -> (..., dim) as [cos, sin] (DiT's order)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=x.device) * (-math.log(max_period) / half)
    )
    args = x.float()[..., None] * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Rope(NamedTuple):
    """3D rotary tables for one token grid, for (B, N, H, D) tensors:
    out = x * cos + swap(x) * sin, where swap exchanges the two halves of each axis block.

    cos, sin: (N, 1, D) in the compute dtype (sin carries the rotation's sign); pairs: a,
    the rotated pairs per axis."""

    cos: torch.Tensor
    sin: torch.Tensor
    pairs: int


@functools.lru_cache(maxsize=32)
def _rope_arrays(head_dim: int, pairs: int, theta: float, grid: tuple[int, int, int]):
    # numpy, not torch: exporters then see the tables as constants instead of tracing the
    # scatters that build them.
    pos = np.stack(np.meshgrid(*(np.arange(g, dtype=np.float64) for g in grid), indexing="ij"))
    pos = pos.reshape(3, -1).T  # (N, 3) in (t, y, x) raster order
    inv_freq = theta ** (-np.arange(pairs, dtype=np.float64) / pairs)  # (a,)
    cos = np.ones((pos.shape[0], head_dim))
    sin = np.zeros((pos.shape[0], head_dim))
    perm = np.arange(head_dim)
    for axis in range(3):
        ang = pos[:, axis : axis + 1] * inv_freq  # (N, a)
        lo, hi = 2 * pairs * axis, 2 * pairs * axis + pairs
        cos[:, lo:hi] = cos[:, hi : hi + pairs] = np.cos(ang)
        sin[:, lo:hi] = -np.sin(ang)  # x1' = x1 cos - x2 sin
        sin[:, hi : hi + pairs] = np.sin(ang)  # x2' = x2 cos + x1 sin
        perm[lo:hi] = np.arange(hi, hi + pairs)
        perm[hi : hi + pairs] = np.arange(lo, hi)
    for arr in (cos, sin, perm):
        arr.flags.writeable = False  # cached and shared: callers copy, never write
    return cos, sin, perm


def rope_tables(cfg: DiTConfig, grid, dtype=torch.float32, device=None) -> Rope:
    """RoPE tables for the token grid (T, H, W).

    Each head's channels are laid out [t | y | x | unrotated]; axis block j has 2a channels
    (a = head_dim // 6) whose channel i pairs with channel i + a and turns by
    pos_j * theta^(-i / a). Built in float64, returned in `dtype`."""
    grid = tuple(int(g) for g in grid)
    a = cfg.rope_split[0] // 2
    cos, sin, _ = _rope_arrays(cfg.head_dim, a, cfg.rope_theta, grid)
    return Rope(
        torch.tensor(cos[:, None], dtype=dtype, device=device),
        torch.tensor(sin[:, None], dtype=dtype, device=device),
        a,
    )


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """x: (B, N, H, D) -> (B, N, H, D) rotated by position. The partner of each rotated
    channel comes from swapping the halves of its axis block (a flip on a view: a gather on
    the last axis is many times slower on CPU); unrotated channels have sin = 0."""
    a = rope.pairs
    rot = x[..., : 6 * a].unflatten(-1, (3, 2, a)).flip(-2).flatten(-3)
    if x.shape[-1] > 6 * a:
        rot = torch.cat([rot, x[..., 6 * a :]], dim=-1)
    return torch.addcmul(x * rope.cos, rot, rope.sin)  # one pass fewer than x*cos + rot*sin


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, as one fused pass over x (addcmul; exported to ONNX as Mul and
    Add). The ANE twin keeps the two-op form: coremltools 9.0 has no addcmul."""
    return torch.addcmul(shift, x, 1 + scale)


def attention_options(cfg: DiTConfig, variant: str, grid) -> dict:
    """The options a block passes to the zoo: the configured ones, plus the token grid for
    variants that take one."""
    opts = cfg.opts_for(variant)
    if "grid" in az.get(variant).defaults:
        opts["grid"] = tuple(grid)
    return opts


# -- modules ----------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMS norm over the axis `dim` (the last by default; the ANE twin's channel axis is 1)
    with a learned gain `weight` (C,); math in float32 or wider."""

    def __init__(self, channels: int, eps: float, dim: int = -1):
        super().__init__()
        self.eps, self.dim = eps, dim
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype != torch.float64 else x
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=self.dim, keepdim=True) + self.eps)
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return (y * self.weight.view(shape)).to(x.dtype)


class ScalarEmbedder(nn.Module):
    """Sinusoid then a 2-layer MLP: (...) scalars -> (..., hidden). Used for the timestep
    and, with its own weights, for the motion score."""

    def __init__(self, freq_dim: int, hidden: int, scale: float):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.fc1 = nn.Linear(freq_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = sinusoid(x * self.scale, self.freq_dim).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(e)))


class Attention(nn.Module):
    """Self-attention through the zoo: fused qkv projection, q/k RMSNorm, 3D RoPE on q and k
    (before any feature map, which lives in the variant), output projection."""

    def __init__(self, cfg: DiTConfig, variant: str):
        super().__init__()
        self.cfg, self.variant = cfg, variant
        c = cfg.hidden
        self.qkv = nn.Linear(c, 3 * c, bias=cfg.qkv_bias)
        self.q_norm = RMSNorm(c, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(c, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.proj = nn.Linear(c, c)

    def forward(self, x: torch.Tensor, rope: Rope, grid) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        hd = (self.cfg.heads, self.cfg.head_dim)
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, N, C) each
        q = apply_rope(self.q_norm(q).view(b, n, *hd), rope).transpose(1, 2)  # (B, H, N, D)
        k = apply_rope(self.k_norm(k).view(b, n, *hd), rope).transpose(1, 2)
        v = v.reshape(b, n, *hd).transpose(1, 2)
        o = az.attention(
            q,
            k,
            v,
            variant=self.variant,
            impl=self.cfg.attention_impl,
            **attention_options(self.cfg, self.variant, grid),
        )  # (B, H, N, D)
        return self.proj(o.transpose(1, 2).reshape(b, n, c))


class GLUMBConv(nn.Module):
    """SANA's GLUMBConv FFN: 1x1 conv C -> 2F, SiLU, depthwise 3x3 within each latent frame,
    GLU (value * SiLU(gate)) -> F, 1x1 conv F -> C. The 1x1 convs are Linear layers on
    tokens (the same weights as 1x1 convs, w[:, :, None, None])."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        c, f = cfg.hidden, cfg.mlp_hidden
        self.inverted = nn.Linear(c, 2 * f)
        self.depthwise = nn.Conv2d(2 * f, 2 * f, 3, padding=1, groups=2 * f)
        self.point = nn.Linear(f, c, bias=False)

    def forward(self, x: torch.Tensor, grid) -> torch.Tensor:
        """x: (B, N, C) in (t, y, x) order, grid (T, H, W) -> (B, N, C)."""
        b, n, _ = x.shape
        t, h, w = grid
        y = F.silu(self.inverted(x), inplace=True)  # (B, N, 2F); in place: a fresh matmul output
        ch = y.shape[-1]
        y = y.view(b * t, h, w, ch).permute(0, 3, 1, 2)  # (B*T, 2F, H, W): one image per frame
        y = self.depthwise(y).permute(0, 2, 3, 1).reshape(b, n, ch)  # (B, N, 2F)
        val, gate = y.chunk(2, dim=-1)
        return self.point(val * F.silu(gate))


class DiTBlock(nn.Module):
    """One block: adaLN-single-modulated self-attention (the config's variant for this block)
    and GLUMBConv FFN, each with a gated residual.

    forward(x, cond, rope, grid) -> x   (stable signature: time single blocks with it)
        x:    (B, N, C) tokens in (t, y, x) order
        cond: (B, T, 6, C) per-latent-frame modulation from `HybridDiT.condition`
        rope: `Rope` tables for the grid, from `HybridDiT.rope(grid)`
        grid: (T, H, W) token grid, T * H * W == N
    """

    def __init__(self, cfg: DiTConfig, index: int):
        super().__init__()
        self.cfg, self.index = cfg, index
        self.variant = cfg.attention[index]
        c = cfg.hidden
        self.attn = Attention(cfg, self.variant)
        self.ffn = GLUMBConv(cfg)
        # adaLN-single: the shared modulation plus this block's learned table (PixArt / SANA)
        self.table = nn.Parameter(torch.randn(MODULATIONS, c) / c**0.5)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: Rope, grid) -> torch.Tensor:
        b, n, c = x.shape
        t = grid[0]
        eps = self.cfg.norm_eps
        mod = (cond + self.table).unsqueeze(2)  # (B, T, 1, 6, C): broadcast over a frame
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.unbind(3)  # (B, T, 1, C)

        def frames(z):  # (B, N, C) -> (B, T, HW, C)
            return z.view(b, t, n // t, c)

        h = modulate(frames(F.layer_norm(x, (c,), eps=eps)), shift_a, scale_a).view(b, n, c)
        # gated residuals as one fused pass each: x + gate * y
        x = torch.addcmul(frames(x), gate_a, frames(self.attn(h, rope, grid))).view(b, n, c)
        h = modulate(frames(F.layer_norm(x, (c,), eps=eps)), shift_f, scale_f).view(b, n, c)
        return torch.addcmul(frames(x), gate_f, frames(self.ffn(h, grid))).view(b, n, c)


class FinalLayer(nn.Module):
    """adaLN-modulated layer norm and a linear map to p * p * C_out channels per token,
    ordered (c, py, px) so unpatchifying is a pixel shuffle."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        c = cfg.hidden
        self.eps = cfg.norm_eps
        self.table = nn.Parameter(torch.randn(2, c) / c**0.5)
        self.linear = nn.Linear(c, cfg.patch_size**2 * cfg.in_channels)

    def forward(self, x: torch.Tensor, emb_t: torch.Tensor, grid) -> torch.Tensor:
        """x: (B, N, C), emb_t: (B, T, C) -> (B, N, p*p*C_out)."""
        b, n, c = x.shape
        t = grid[0]
        shift, scale = (emb_t.unsqueeze(2) + self.table).unsqueeze(2).unbind(3)  # (B, T, 1, C)
        h = modulate(F.layer_norm(x, (c,), eps=self.eps).view(b, t, n // t, c), shift, scale)
        return self.linear(h.view(b, n, c))


# -- the model --------------------------------------------------------------------------------


def _check_scalar_per_batch(name: str, val, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A number, a 0-d tensor or a (B,) tensor -> a (B,) float tensor on like's device."""
    if isinstance(val, bool) or not isinstance(val, (int, float, torch.Tensor)):
        raise TypeError(
            f"{name} must be a float or a tensor of shape (B,), got {type(val).__name__}"
        )
    val = torch.as_tensor(val, device=like.device)
    if val.dim() == 0:
        val = val.expand(batch)
    if val.shape != (batch,):
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},), got {tuple(val.shape)}"
        )
    if val.dtype == torch.bool or val.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {val.dtype}")
    return val.to(torch.float32)


def check_inputs(cfg: DiTConfig, x_t, t, first_frame, motion, like: torch.Tensor | None = None):
    """Validates the forward's arguments (HybridDiT and its twin share them); returns
    (t (B,) float32, motion (B,) float32, token grid). `like`: a model weight, whose device
    x_t must share, and whose dtype too outside autocast."""
    if not isinstance(x_t, torch.Tensor):
        raise TypeError(f"x_t must be a torch.Tensor, got {type(x_t).__name__}")
    if x_t.dim() != 5 or x_t.shape[1] != cfg.in_channels:
        raise ValueError(
            f"x_t must be a latent video (B, C={cfg.in_channels}, T, H, W), "
            f"got shape {tuple(x_t.shape)}"
        )
    if x_t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x_t must have a floating dtype, got {x_t.dtype}")
    if like is not None:
        if x_t.device != like.device:
            raise ValueError(f"x_t must be on the model's device {like.device}, got {x_t.device}")
        if x_t.dtype != like.dtype and not torch.is_autocast_enabled(x_t.device.type):
            raise TypeError(
                f"x_t must have the model's dtype {like.dtype} (convert the model with "
                f"model.to(dtype) or the input), got {x_t.dtype}"
            )
    if 0 in x_t.shape:
        raise ValueError(f"x_t must have no empty dimension, got shape {tuple(x_t.shape)}")
    b, c, _, h, w = x_t.shape
    grid = cfg.token_grid(x_t.shape[2:])
    if first_frame is not None:
        if not isinstance(first_frame, torch.Tensor):
            raise TypeError(
                f"first_frame must be a torch.Tensor or None, got {type(first_frame).__name__}"
            )
        if tuple(first_frame.shape) != (b, c, h, w):
            raise ValueError(
                f"first_frame must be the clean first latent frame of shape {(b, c, h, w)}, "
                f"got {tuple(first_frame.shape)}"
            )
    t = _check_scalar_per_batch("t", t, b, x_t)
    motion = _check_scalar_per_batch("motion", 0.0 if motion is None else motion, b, x_t)
    return t, motion, grid


def inject_first_frame(x_t: torch.Tensor, t: torch.Tensor, first_frame: torch.Tensor | None):
    """Image-to-video conditioning: the clean first frame replaces latent frame 0, whose
    tokens get timestep 0. x_t: (B, C, T, H, W), t: (B,) -> x_t, t_frames (B, T): the
    per-token timestep, held per latent frame since the tokens of a frame share it."""
    b, _, nt = x_t.shape[:3]
    t_frames = t[:, None].expand(b, nt)
    if first_frame is None:
        return x_t, t_frames
    x_t = torch.cat([first_frame.unsqueeze(2).to(x_t.dtype), x_t[:, :, 1:]], dim=2)
    t_frames = torch.cat([torch.zeros_like(t_frames[:, :1]), t_frames[:, 1:]], dim=1)
    return x_t, t_frames


class Prepared(NamedTuple):
    """What the blocks of one forward share (`HybridDiT.prepare`)."""

    x: torch.Tensor  # (B, N, C) tokens of the conditioned input, (t, y, x) order
    cond: torch.Tensor  # (B, T, 6, C) per-latent-frame block modulation
    emb_t: torch.Tensor  # (B, T, C) timestep embedding, for the final layer
    rope: Rope  # RoPE tables of the grid
    grid: tuple[int, int, int]  # token grid (T, H, W)


class HybridDiT(nn.Module):
    """The hybrid DiT. See the module docstring; `model.blocks[i]` is the i-th `DiTBlock`.

    Parameters do not depend on the attention pattern, so a model of one pattern loads the
    weights of any other (the quality study swaps one block's attention this way).
    """

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        if not isinstance(cfg, DiTConfig):
            raise TypeError(f"cfg must be a DiTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        c, p = cfg.hidden, cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, c, p, stride=p)
        self.t_embed = ScalarEmbedder(cfg.freq_dim, c, cfg.time_scale)
        self.motion_embed = ScalarEmbedder(cfg.freq_dim, c, cfg.motion_scale)
        # adaLN-single: one shared projection to the 6 modulations for the timestep and one
        # for the motion score (as MobileI2V's t_block / flow_block), summed.
        self.t_mod = nn.Linear(c, MODULATIONS * c)
        self.motion_mod = nn.Linear(c, MODULATIONS * c)
        self.blocks = nn.ModuleList(DiTBlock(cfg, i) for i in range(cfg.depth))
        self.final = FinalLayer(cfg)
        self.reset_parameters()

    def reset_parameters(self, adaln_zero: bool = False) -> None:
        """DiT / SANA initialisation. By default nothing is zeroed: a fresh model gives a
        non-trivial output, which export parity checks need. adaln_zero=True is DiT's
        adaLN-Zero for training from scratch: every residual gate (the gate rows of the
        shared modulation and of each block's table) and the final projection start at 0,
        so each block starts as the identity and the model as v = 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for emb in (self.t_embed, self.motion_embed):
            nn.init.normal_(emb.fc1.weight, std=0.02)
            nn.init.normal_(emb.fc2.weight, std=0.02)
        nn.init.normal_(self.t_mod.weight, std=0.02)
        nn.init.normal_(self.motion_mod.weight, std=0.02)
        if adaln_zero:
            c = self.cfg.hidden
            with torch.no_grad():
                for mod in (self.t_mod, self.motion_mod):  # rows (6, C): gates are 2 and 5
                    mod.weight.view(MODULATIONS, c, c)[GATES] = 0.0
                    mod.bias.view(MODULATIONS, c)[GATES] = 0.0
                for block in self.blocks:
                    block.table[GATES] = 0.0
                nn.init.zeros_(self.final.linear.weight)
                nn.init.zeros_(self.final.linear.bias)

    # -- pieces a block-level benchmark needs -------------------------------------------------
    def rope(self, grid) -> Rope:
        """RoPE tables for the token grid (T, H, W), in the model's dtype and device."""
        w = self.patch_embed.weight
        return rope_tables(self.cfg, grid, dtype=w.dtype, device=w.device)

    def condition(self, t_frames: torch.Tensor, motion: torch.Tensor):
        """Per-frame adaLN-single modulation. t_frames: (B, T) timestep of each latent frame;
        motion: (B,) -> cond (B, T, 6, C) for the blocks, emb_t (B, T, C) for the final layer."""
        emb_t = self.t_embed(t_frames)  # (B, T, C)
        emb_m = self.motion_embed(motion)  # (B, C)
        cond = self.t_mod(F.silu(emb_t)) + self.motion_mod(F.silu(emb_m)).unsqueeze(1)
        b, t, _ = cond.shape
        return cond.view(b, t, MODULATIONS, self.cfg.hidden), emb_t

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        first_frame: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicts the flow-matching velocity (noise - clean) of a noisy latent video.

        Args:
            x_t: (B, C, T, H, W) noisy latent video; H and W divisible by the patch size.
            t: (B,) or scalar, timestep in [0, 1] (1 = pure noise).
            first_frame: (B, C, H, W) clean first latent frame, or None (no conditioning).
                It replaces latent frame 0, whose tokens get timestep 0.
            motion: (B,) or scalar motion score, or None (0).
        Returns:
            (B, C, T, H, W) velocity.
        """
        p = self.prepare(x_t, t, first_frame, motion)
        x = p.x
        for block in self.blocks:
            x = block(x, p.cond, p.rope, p.grid)
        return self.head(x, p)

    def prepare(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        first_frame: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> Prepared:
        """The forward up to the first block: checks the inputs, injects the first frame,
        computes the modulation, embeds the tokens and builds the RoPE tables. Arguments as
        `forward`; `model.head(x, p)` after the blocks finishes it. Block-level code (the
        quality harness, block benchmarks) starts here, so it sees what `forward` sees."""
        t, motion, grid = check_inputs(
            self.cfg, x_t, t, first_frame, motion, like=self.patch_embed.weight
        )
        x_t, t_frames = inject_first_frame(x_t, t, first_frame)
        cond, emb_t = self.condition(t_frames, motion)
        return Prepared(self.embed(x_t), cond, emb_t, self.rope(grid), grid)

    def head(self, x: torch.Tensor, p: Prepared) -> torch.Tensor:
        """The forward after the last block: x (B, N, C) -> velocity (B, C, T, H, W)."""
        return self.unpatchify(self.final(x, p.emb_t, p.grid), p.grid)

    def embed(self, x_t: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, N, hidden) tokens in (t, y, x) order. Frames are stacked
        along the height: a patch never straddles two frames because p divides H."""
        b, c, t, h, w = x_t.shape
        y = self.patch_embed(x_t.reshape(b, c, t * h, w))  # (B, hidden, T*H/p, W/p)
        return y.flatten(2).transpose(1, 2)

    def unpatchify(self, y: torch.Tensor, grid) -> torch.Tensor:
        """(B, N, C*p*p) in (c, py, px) channel order -> (B, C, T, H, W)."""
        t, hp, wp = grid
        p = self.cfg.patch_size
        b = y.shape[0]
        y = y.transpose(1, 2).reshape(b, -1, t * hp, wp)  # (B, C*p*p, T*H/p, W/p)
        if p > 1:
            y = F.pixel_shuffle(y, p)  # (B, C, T*H, W)
        return y.reshape(b, self.cfg.in_channels, t, hp * p, wp * p)


def example_inputs(
    cfg: DiTConfig, grid, batch: int = 1, seed: int = 0, device="cpu", dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded example inputs (x_t, t, first_frame, motion) for a token grid (T, H, W): the
    latent video and first frame are N(0, 1) in `dtype`, t = 0.5 and motion = 0.3 (float32,
    shape (batch,)). For timing, export and parity checks."""
    t, h, w = check_grid(grid)
    p = cfg.patch_size
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, t, h * p, w * p, generator=gen)
    ff = torch.randn(batch, cfg.in_channels, h * p, w * p, generator=gen)
    return (
        x.to(device=device, dtype=dtype),
        torch.full((batch,), 0.5, device=device),
        ff.to(device=device, dtype=dtype),
        torch.full((batch,), 0.3, device=device),
    )


def model_flops(cfg: DiTConfig, grid, batch: int = 1) -> dict[str, int]:
    """Analytic forward FLOPs (multiply and add counted separately) of the linear and conv
    layers and of attention (the zoo's var.flops), for a token grid (T, H, W). Norms,
    activations, RoPE and modulation are elementwise and left out.

    Returns {"linear": ..., "attention": ..., "total": ...}."""
    t, h, w = grid
    n = t * h * w
    c, f, p = cfg.hidden, cfg.mlp_hidden, cfg.patch_size
    tokens = batch * n
    per_block = 2 * tokens * (3 * c * c + c * c + c * 2 * f + 2 * f * 9 + f * c)
    embed = 2 * tokens * cfg.in_channels * p * p * c * 2  # patch embed and final linear
    frames = batch * t
    cond = 2 * (frames + batch) * (cfg.freq_dim * c + c * c + c * MODULATIONS * c)
    linear = cfg.depth * per_block + embed + cond
    attention = sum(
        az.get(v).flops(batch, cfg.heads, n, cfg.head_dim, **attention_options(cfg, v, grid))
        for v in cfg.attention
    )
    return {"linear": linear, "attention": attention, "total": linear + attention}
