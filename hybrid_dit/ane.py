"""The channels-first twin of HybridDiT for Core ML / the Apple Neural Engine.

    twin = to_ane(model)                 # same weights, same outputs
    v = twin(x_t, t, first_frame, motion)

Apple's ml-ane-transformers principles, each cited where a line serves it:
  (P1) activations are rank-4 (batch, channels, 1, seq): the sequence sits last, which the
       ANE pads to 64 bytes, so the long axis wastes nothing;
  (P2) nn.Conv2d 1x1 in place of nn.Linear; the reference's Linear weights load unchanged
       through a load_state_dict pre-hook (w -> w[:, :, None, None]);
  (P3) norms reduce over the channel axis (dim 1);
  (P4) no transposes, and few reshapes, on the hot path: per-frame modulation reaches the
       tokens through an einsum with a frame indicator, not through per-frame views.
Attention is the zoo's ANE form (`az.attention(..., impl="ane", heads=H)`), which splits
heads off the channel axis and runs them one after another.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import attention_zoo as az
from hybrid_dit.config import DiTConfig
from hybrid_dit.model import (
    MODULATIONS,
    HybridDiT,
    RMSNorm,
    _rope_arrays,
    attention_options,
    check_inputs,
    modulate,
)

ATTENTION_IMPLS = ("ane", "reference")


@functools.lru_cache(maxsize=32)
def _frame_indicator(grid: tuple[int, int, int]) -> np.ndarray:
    t, h, w = grid
    e = np.zeros((1, t, 1, t * h * w), dtype=np.float32)
    for f in range(t):
        e[0, f, 0, f * h * w : (f + 1) * h * w] = 1.0
    e.flags.writeable = False
    return e


def spread_frames(z: torch.Tensor, grid) -> torch.Tensor:
    """Per-frame values to per-token values: z (batch, K, 1, T) -> (batch, K, 1, N), token j
    taking its frame's value. A product with a 0/1 frame indicator (T, N) in the native MIL
    einsum form, "nchw,nwhu->nchu", instead of per-frame reshapes of the activations (a
    reshape that changes the last axis moves the whole tensor on the ANE)."""
    grid = tuple(int(g) for g in grid)
    e = torch.tensor(_frame_indicator(grid), dtype=z.dtype, device=z.device)
    return torch.einsum("nchw,nwhu->nchu", z, e.expand(z.shape[0], -1, -1, -1))


class LinearConv(nn.Conv2d):
    """A 1x1 Conv2d standing in for an nn.Linear of the reference model (P2)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__(c_in, c_out, 1, bias=bias)


def layer_norm_cf(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer norm without affine over the channel axis (P3). x: (batch, C, 1, seq)."""
    mu = x.mean(dim=1, keepdim=True)
    xc = x - mu
    return xc * torch.rsqrt(xc.pow(2).mean(dim=1, keepdim=True) + eps)


class RopeCF:
    """RoPE tables in the channels-first layout: cos, sin (1, H*D, 1, N), the per-head tables
    tiled over heads (head-major). The rotation partner of a channel comes from slices and
    one concat on a rank-4 view (B, H, D, N): a gather is not an ANE op."""

    def __init__(self, cfg: DiTConfig, grid, dtype, device):
        grid = tuple(int(g) for g in grid)
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.pairs = cfg.rope_split[0] // 2
        cos, sin, _ = _rope_arrays(cfg.head_dim, self.pairs, cfg.rope_theta, grid)
        n, h, d = cos.shape[0], cfg.heads, cfg.head_dim
        # tiled and transposed in numpy, so exporters see constants
        self.cos = torch.tensor(np.tile(cos.T, (h, 1)), dtype=dtype, device=device)
        self.cos = self.cos.view(1, h * d, 1, n)
        self.sin = torch.tensor(np.tile(sin.T, (h, 1)), dtype=dtype, device=device)
        self.sin = self.sin.view(1, h * d, 1, n)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, H*D, 1, N) -> rotated, same shape."""
        b, c, _, n = x.shape
        a, d = self.pairs, self.head_dim
        xh = x.view(b, self.heads, d, n)  # rank 4 (P1)
        parts = []
        for axis in range(3):  # swap the two halves of each axis block
            lo = 2 * a * axis
            parts += [xh[:, :, lo + a : lo + 2 * a], xh[:, :, lo : lo + a]]
        if d > 6 * a:
            parts.append(xh[:, :, 6 * a :])  # unrotated: sin is 0 there
        rot = torch.cat(parts, dim=2).view(b, c, 1, n)
        return x * self.cos + rot * self.sin


class ScalarEmbedderCF(nn.Module):
    """Sinusoid and MLP of scalars, channels-first: (B, T) -> (B, hidden, 1, T)."""

    def __init__(self, freq_dim: int, hidden: int, scale: float):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.fc1 = LinearConv(freq_dim, hidden)
        self.fc2 = LinearConv(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            torch.arange(half, dtype=torch.float32, device=x.device) * (-math.log(10000.0) / half)
        )
        args = freqs[None, :, None] * (x.float() * self.scale)[:, None, :]  # (B, F/2, T)
        e = torch.cat([torch.cos(args), torch.sin(args)], dim=1).unsqueeze(2)  # (B, F, 1, T)
        return self.fc2(F.silu(self.fc1(e.to(self.fc1.weight.dtype))))


class AttentionCF(nn.Module):
    """Channels-first self-attention: qkv 1x1 conv, q/k RMSNorm over channels, RoPE, the zoo's
    ANE form (or the reference through a layout change), output 1x1 conv."""

    def __init__(self, cfg: DiTConfig, variant: str, attention_impl: str):
        super().__init__()
        self.cfg, self.variant, self.attention_impl = cfg, variant, attention_impl
        c = cfg.hidden
        self.qkv = LinearConv(c, 3 * c, bias=cfg.qkv_bias)
        self.q_norm = RMSNorm(c, cfg.norm_eps, dim=1) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(c, cfg.norm_eps, dim=1) if cfg.qk_norm else nn.Identity()
        self.proj = LinearConv(c, c)

    def forward(self, x: torch.Tensor, rope: RopeCF, grid) -> torch.Tensor:
        """x: (batch, C, 1, N) -> (batch, C, 1, N)."""
        q, k, v = self.qkv(x).chunk(3, dim=1)  # (batch, C, 1, N) each
        q, k = rope.apply(self.q_norm(q)), rope.apply(self.k_norm(k))
        opts = attention_options(self.cfg, self.variant, grid)
        if self.attention_impl == "ane":
            o = az.attention(
                q, k, v, variant=self.variant, impl="ane", heads=self.cfg.heads, **opts
            )
        else:
            o = self._reference(q, k, v, opts)
        return self.proj(o)

    def _reference(self, q, k, v, opts) -> torch.Tensor:
        # Layout change at the edge: (batch, H*D, 1, N) <-> (batch, H, N, D).
        q, k, v = (az.from_channels_first(z, self.cfg.heads) for z in (q, k, v))
        o = az.attention(q, k, v, variant=self.variant, impl="reference", **opts)
        return az.to_channels_first(o)


class GLUMBConvCF(nn.Module):
    """GLUMBConv channels-first. The per-frame depthwise 3x3 runs on the view
    (batch, 2F, 1, T*H*W) -> (batch, 2F*T, H, W), rank 4 with no transpose (the one reshape
    pair a spatial conv needs): channel c*T + t holds channel c of frame t, so the depthwise
    weights are repeated T times along the channels."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        c, f = cfg.hidden, cfg.mlp_hidden
        self.inverted = LinearConv(c, 2 * f)
        self.depthwise = nn.Conv2d(2 * f, 2 * f, 3, padding=1, groups=2 * f)
        self.point = LinearConv(f, c, bias=False)

    def forward(self, x: torch.Tensor, grid) -> torch.Tensor:
        """x: (batch, C, 1, N) -> (batch, C, 1, N)."""
        b, _, _, n = x.shape
        t, h, w = grid
        y = F.silu(self.inverted(x))  # (batch, 2F, 1, N)
        ch = y.shape[1]
        dw = self.depthwise
        y = F.conv2d(
            y.view(b, ch * t, h, w),
            dw.weight.repeat_interleave(t, dim=0),
            dw.bias.repeat_interleave(t, dim=0),
            padding=1,
            groups=ch * t,
        ).view(b, ch, 1, n)
        val, gate = y.chunk(2, dim=1)
        return self.point(val * F.silu(gate))


class DiTBlockCF(nn.Module):
    """Channels-first DiTBlock.

    forward(x, cond, rope, grid) -> x
        x:    (batch, C, 1, N) tokens in (t, y, x) order
        cond: (batch, 6C, 1, T) per-latent-frame modulation from `ANEHybridDiT.condition`
        rope: `RopeCF` tables from `ANEHybridDiT.rope(grid)`
        grid: (T, H, W) token grid
    """

    def __init__(self, cfg: DiTConfig, index: int, attention_impl: str):
        super().__init__()
        self.cfg, self.index = cfg, index
        self.variant = cfg.attention[index]
        self.attn = AttentionCF(cfg, self.variant, attention_impl)
        self.ffn = GLUMBConvCF(cfg)
        self.table = nn.Parameter(torch.zeros(MODULATIONS, cfg.hidden))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, rope: RopeCF, grid) -> torch.Tensor:
        c = x.shape[1]
        eps = self.cfg.norm_eps
        mod = cond + self.table.view(1, MODULATIONS * c, 1, 1)  # (batch, 6C, 1, T)
        mod = spread_frames(mod, grid)  # (batch, 6C, 1, N)
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.chunk(MODULATIONS, dim=1)
        x = x + gate_a * self.attn(modulate(layer_norm_cf(x, eps), shift_a, scale_a), rope, grid)
        return x + gate_f * self.ffn(modulate(layer_norm_cf(x, eps), shift_f, scale_f), grid)


class FinalLayerCF(nn.Module):
    """Channels-first FinalLayer: modulated channel norm, 1x1 conv to p*p*C_out channels."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.table = nn.Parameter(torch.zeros(2, cfg.hidden))
        self.linear = LinearConv(cfg.hidden, cfg.patch_size**2 * cfg.in_channels)

    def forward(self, x: torch.Tensor, emb_t: torch.Tensor, grid) -> torch.Tensor:
        """x: (batch, C, 1, N), emb_t: (batch, C, 1, T) -> (batch, p*p*C_out, 1, N)."""
        c = x.shape[1]
        shift = spread_frames(emb_t + self.table[0].view(1, c, 1, 1), grid)  # (batch, C, 1, N)
        scale = spread_frames(emb_t + self.table[1].view(1, c, 1, 1), grid)
        return self.linear(modulate(layer_norm_cf(x, self.eps), shift, scale))


class ANEHybridDiT(nn.Module):
    """Channels-first twin of HybridDiT: same parameters (by name), same forward signature
    and outputs; every activation is (batch, C, 1, seq) or a free view of it.

    attention_impl: "ane" runs the zoo's ANE forms (what Core ML export needs); "reference"
    runs the zoo's reference through a layout change at the edge (for checking the rest of
    the twin, or a variant that has no ANE form).
    """

    def __init__(self, cfg: DiTConfig, attention_impl: str = "ane"):
        super().__init__()
        if not isinstance(cfg, DiTConfig):
            raise TypeError(f"cfg must be a DiTConfig, got {type(cfg).__name__}")
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}"
            )
        self.cfg, self.attention_impl = cfg, attention_impl
        c, p = cfg.hidden, cfg.patch_size
        self.patch_embed = nn.Conv2d(cfg.in_channels, c, p, stride=p)
        self.t_embed = ScalarEmbedderCF(cfg.freq_dim, c, cfg.time_scale)
        self.motion_embed = ScalarEmbedderCF(cfg.freq_dim, c, cfg.motion_scale)
        self.t_mod = LinearConv(c, MODULATIONS * c)
        self.motion_mod = LinearConv(c, MODULATIONS * c)
        self.blocks = nn.ModuleList(DiTBlockCF(cfg, i, attention_impl) for i in range(cfg.depth))
        self.final = FinalLayerCF(cfg)
        self._register_load_state_dict_pre_hook(self._linear_to_conv)

    def _linear_to_conv(self, state_dict, prefix, *args, **kwargs):
        # (P2) the reference's Linear weights (out, in) load as 1x1 conv weights.
        for name, module in self.named_modules():
            if isinstance(module, LinearConv):
                key = f"{prefix}{name}.weight"
                w = state_dict.get(key)
                if w is not None and w.dim() == 2:
                    state_dict[key] = w[:, :, None, None]

    def rope(self, grid) -> RopeCF:
        w = self.patch_embed.weight
        return RopeCF(self.cfg, grid, w.dtype, w.device)

    def condition(self, t_frames: torch.Tensor, motion: torch.Tensor):
        """t_frames: (B, T), motion: (B,) -> cond (B, 6C, 1, T), emb_t (B, C, 1, T)."""
        emb_t = self.t_embed(t_frames)
        emb_m = self.motion_embed(motion[:, None])  # (B, C, 1, 1)
        return self.t_mod(F.silu(emb_t)) + self.motion_mod(F.silu(emb_m)), emb_t

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        first_frame: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same contract as HybridDiT.forward: (B, C, T, H, W) -> velocity (B, C, T, H, W)."""
        t, motion, grid = check_inputs(
            self.cfg, x_t, t, first_frame, motion, like=self.patch_embed.weight
        )
        b, c_in, nt, h, w = x_t.shape
        n = grid[0] * grid[1] * grid[2]
        # Frames stacked along the height (rank 4 from here on, P1); a patch never
        # straddles two frames because p divides H.
        x4 = x_t.reshape(b, c_in, nt * h, w)
        t_frames = t[:, None].expand(b, nt)
        if first_frame is not None:  # as inject_first_frame, on the rank-4 view
            x4 = torch.cat([first_frame.to(x4.dtype), x4[:, :, h:]], dim=2)
            t_frames = torch.cat([torch.zeros_like(t_frames[:, :1]), t_frames[:, 1:]], dim=1)
        cond, emb_t = self.condition(t_frames, motion)
        x = self.patch_embed(x4).view(b, -1, 1, n)  # (B, C, 1, N)
        rope = self.rope(grid)
        for block in self.blocks:
            x = block(x, cond, rope, grid)
        y = self.final(x, emb_t, grid)  # (B, C_in*p*p, 1, N), channels (c, py, px)
        p = self.cfg.patch_size
        y = y.view(b, -1, grid[0] * grid[1], grid[2])
        if p > 1:
            y = F.pixel_shuffle(y, p)  # (B, C_in, T*H, W)
        return y.view(b, c_in, nt, h, w)


def to_ane(model: HybridDiT, attention_impl: str = "ane") -> ANEHybridDiT:
    """The channels-first twin of `model`, holding a copy of its weights, on its device and
    dtype, in eval mode. attention_impl: see ANEHybridDiT."""
    if not isinstance(model, HybridDiT):
        raise TypeError(f"model must be a HybridDiT, got {type(model).__name__}")
    ref = next(model.parameters())
    twin = ANEHybridDiT(model.cfg, attention_impl=attention_impl).to(ref.device, ref.dtype)
    twin.load_state_dict(model.state_dict())
    return twin.eval()
