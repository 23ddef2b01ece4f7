"""The channels-first twin of HybridDiT for Core ML / the Apple Neural Engine.

    twin = to_ane(model)                     # same weights, same outputs
    v = twin(x_t, t, first_frame, motion)    # HybridDiT's video contract, for checking
    step = twin.step_module(grid)            # one denoising step: the Core ML program
    v_tok = step(x, t_freq, motion_freq)     # rank-4 in and out, no sin/cos inside

The exported unit is one denoising step on tokens (batch, C_in*p*p, 1, N): channel
c*p*p + py*p + px holds latent channel c at patch offset (py, px), token t*H*W + y*W + x the
patch at (t, y, x) of the token grid (T, H, W), the sequence last. The host (numpy,
export/host.py) does the rest: noise, Euler steps, first-frame re-injection, the
space-to-depth layout change in and out, and the sinusoid features of the timestep and
motion score (P5), which it passes in as t_freq (batch, F, 1, T) and motion_freq
(batch, F, 1, 1).

Apple's ml-ane-transformers principles, each cited where a line serves it:
  (P1) activations are rank-4 (batch, channels, 1, seq): the sequence sits last, which the
       ANE pads to 64 bytes, so the long axis wastes nothing;
  (P2) nn.Conv2d 1x1 in place of nn.Linear; the reference's Linear weights load unchanged
       through a load_state_dict pre-hook (w -> w[:, :, None, None]);
  (P3) norms reduce over the channel axis (dim 1);
  (P4) no transposes, and few reshapes, on the hot path: per-frame modulation reaches the
       tokens through an einsum with a frame indicator, RoPE's pair swap is a grouped 1x1
       conv, not per-head views;
  (P5) no sin/cos in the program: at t * time_scale ~ 1000 rad fp16's spacing is 0.5 rad,
       so sinusoid features computed in an fp16 program would be noise; the host computes
       them in float64 and passes them in (the embedding MLPs stay in the program, so the
       host needs no weights).
Attention is the zoo's ANE form (`az.attention(..., impl="ane", heads=H)`), which splits
heads off the channel axis and runs them one after another.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import attention_zoo as az
from attention_zoo.checks import FLOAT_DTYPES
from hybrid_dit.config import DiTConfig, check_grid
from hybrid_dit.model import (
    MODULATIONS,
    HybridDiT,
    RMSNorm,
    _rope_arrays,
    attention_options,
    check_inputs,
    inject_first_frame,
    sinusoid,
)

ATTENTION_IMPLS = ("ane", "reference")
STEP_INPUTS = ("x", "t_freq", "motion_freq")  # ANEStep.forward's names: the program's inputs
# The largest dimension a tensor may have and stay on the ANE, as reported (export.lint
# checks programs against this same number, as its MAX_DIM).
ANE_MAX_DIM = 16384


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
    reshape that changes the last axis moves the whole tensor on the ANE). Exact in fp16:
    each output is one product with 1."""
    grid = tuple(int(g) for g in grid)
    e = torch.tensor(_frame_indicator(grid), dtype=z.dtype, device=z.device)
    return torch.einsum("nchw,nwhu->nchu", z, e.expand(z.shape[0], -1, -1, -1))


def video_to_tokens(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, T, H*p, W*p) latent video -> (B, C*p*p, 1, T*H*W) step tokens: space-to-depth
    within each frame, channel c*p*p + py*p + px, tokens in (t, y, x) raster order. The
    torch twin of export.host.tokens_from_video."""
    b, c, t, h, w = x.shape
    p = patch
    y = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 3, 5)
    return y.reshape(b, c * p * p, 1, t * (h // p) * (w // p))


def tokens_to_video(y: torch.Tensor, grid, patch: int) -> torch.Tensor:
    """The inverse of video_to_tokens: (B, C*p*p, 1, N) -> (B, C, T, H*p, W*p)."""
    t, h, w = grid
    p = patch
    b = y.shape[0]
    y = y.reshape(b, -1, p, p, t, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return y.reshape(b, -1, t, h * p, w * p)


class LinearConv(nn.Conv2d):
    """A 1x1 Conv2d standing in for an nn.Linear of the reference model (P2)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__(c_in, c_out, 1, bias=bias)


def modulate_cf(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """hybrid_dit.model.modulate in two ops: coremltools 9.0 cannot convert addcmul."""
    return x * (1 + scale) + shift


def layer_norm_cf(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer norm without affine over the channel axis (P3). x: (batch, C, 1, seq)."""
    mu = x.mean(dim=1, keepdim=True)
    xc = x - mu
    return xc * torch.rsqrt(xc.pow(2).mean(dim=1, keepdim=True) + eps)


class RopeCF:
    """RoPE tables in the channels-first layout: cos, sin (1, H*D, 1, N), the per-head tables
    tiled over heads (head-major), and the pair swap as a grouped 1x1 conv (one group per
    head, a 0/1 permutation of its D channels, exact in fp16): no per-head view, slices or
    concat (P4), and no gather (not an ANE op)."""

    def __init__(self, cfg: DiTConfig, grid, dtype, device):
        grid = tuple(int(g) for g in grid)
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.pairs = cfg.rope_split[0] // 2
        cos, sin, perm = _rope_arrays(cfg.head_dim, self.pairs, cfg.rope_theta, grid)
        n, h, d = cos.shape[0], cfg.heads, cfg.head_dim
        # tiled and transposed in numpy, so exporters see constants
        self.cos = torch.tensor(np.tile(cos.T, (h, 1)), dtype=dtype, device=device)
        self.cos = self.cos.view(1, h * d, 1, n)
        self.sin = torch.tensor(np.tile(sin.T, (h, 1)), dtype=dtype, device=device)
        self.sin = self.sin.view(1, h * d, 1, n)
        swap = np.zeros((d, d))
        swap[np.arange(d), perm] = 1.0  # output channel i reads its partner perm[i]
        swap = np.tile(swap, (h, 1))[:, :, None, None]  # (H*D, D, 1, 1): a group per head
        self.swap = torch.tensor(swap, dtype=dtype, device=device)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, H*D, 1, N) -> rotated, same shape. Unrotated channels have sin = 0."""
        return x * self.cos + F.conv2d(x, self.swap, groups=self.heads) * self.sin


class ScalarEmbedderCF(nn.Module):
    """The MLP of a scalar embedder, channels-first: sinusoid features (B, F, 1, S) ->
    (B, hidden, 1, S). The features themselves come from the host in the exported step
    (P5); `features` computes them in torch for the twin's video forward."""

    def __init__(self, freq_dim: int, hidden: int, scale: float):
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.fc1 = LinearConv(freq_dim, hidden)
        self.fc2 = LinearConv(hidden, hidden)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Scalars (B, S) -> (B, F, 1, S) [cos | sin] features, as HybridDiT's embedder."""
        e = sinusoid(x * self.scale, self.freq_dim)  # (B, S, F) float32
        return e.permute(0, 2, 1).unsqueeze(2).to(self.fc1.weight.dtype)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(e)))


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


def _split_sizes(total: int, pieces: int) -> list[int]:
    """`total` channels in `pieces` near-equal parts that sum to it (none dropped)."""
    base, extra = divmod(total, pieces)
    return [base + (i < extra) for i in range(pieces)]


class GLUMBConvCF(nn.Module):
    """GLUMBConv channels-first. The per-frame depthwise 3x3 runs on the view
    (batch, K, 1, T*H*W) -> (batch, K*T, H, W), rank 4 with no transpose: channel c*T + t
    holds channel c of frame t, so the depthwise weights are repeated T times along the
    channels. That reshape pair is the one the block keeps: a 3x3 within each frame on the
    flat token axis needs its row and frame borders masked (three masked, shifted copies of
    the 2F-channel tensor), more data movement than the two views. Where K*T for all 2F
    channels would exceed ANE_MAX_DIM (mobilei2v at T = 3: 17280), each GLU half goes
    through its own views, split further if need be."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        c, f = cfg.hidden, cfg.mlp_hidden
        self.inverted = LinearConv(c, 2 * f)
        self.depthwise = nn.Conv2d(2 * f, 2 * f, 3, padding=1, groups=2 * f)
        self.point = LinearConv(f, c, bias=False)

    def pieces(self, frames: int) -> list[int]:
        """Channel counts of the depthwise views for `frames` latent frames: all 2F in one,
        or each GLU half in as few near-equal pieces as keep K*T <= ANE_MAX_DIM."""
        two_f = self.depthwise.in_channels
        if two_f * frames <= ANE_MAX_DIM:
            return [two_f]
        if frames > ANE_MAX_DIM:
            raise ValueError(
                f"grid: {frames} latent frames exceed {ANE_MAX_DIM}, the most the depthwise "
                "view can hold even one channel at a time"
            )
        f = two_f // 2
        per_half = -(-f * frames // ANE_MAX_DIM)
        while -(-f // per_half) * frames > ANE_MAX_DIM:  # the largest piece must fit too
            per_half += 1
        return _split_sizes(f, per_half) * 2

    def forward(self, x: torch.Tensor, grid) -> torch.Tensor:
        """x: (batch, C, 1, N) -> (batch, C, 1, N)."""
        b, _, _, n = x.shape
        t, h, w = grid
        y = F.silu(self.inverted(x))  # (batch, 2F, 1, N)
        sizes = self.pieces(t)
        dw = self.depthwise
        parts = [(y, dw.weight, dw.bias)]
        if len(sizes) > 1:
            ys, ws, bs = y.split(sizes, dim=1), dw.weight.split(sizes), dw.bias.split(sizes)
            parts = list(zip(ys, ws, bs, strict=True))
        outs = []
        for y_i, w_i, b_i in parts:
            k = y_i.shape[1]
            z = F.conv2d(
                y_i.view(b, k * t, h, w),
                w_i.repeat_interleave(t, dim=0),
                b_i.repeat_interleave(t, dim=0),
                padding=1,
                groups=k * t,
            )
            outs.append(z.view(b, k, 1, n))
        half = len(outs) // 2
        if half == 0:  # one view of all 2F channels
            val, gate = outs[0].chunk(2, dim=1)
        else:  # the pieces split each half: no concat where a half is one piece
            val, gate = (
                o[0] if len(o) == 1 else torch.cat(o, dim=1) for o in (outs[:half], outs[half:])
            )
        return self.point(val * F.silu(gate))


class DiTBlockCF(nn.Module):
    """Channels-first DiTBlock.

    forward(x, mod, rope, grid) -> x
        x:    (batch, C, 1, N) tokens in (t, y, x) order
        mod:  (batch, 6C, 1, N) the shared adaLN-single modulation, already spread from
              frames to tokens (`ANEHybridDiT.step`); this block adds its own table
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

    def forward(self, x: torch.Tensor, mod: torch.Tensor, rope: RopeCF, grid) -> torch.Tensor:
        c = x.shape[1]
        eps = self.cfg.norm_eps
        # spread(cond) + table == spread(cond + table): every token belongs to one frame
        mod = mod + self.table.view(1, MODULATIONS * c, 1, 1)  # (batch, 6C, 1, N)
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = mod.chunk(MODULATIONS, dim=1)
        x = x + gate_a * self.attn(modulate_cf(layer_norm_cf(x, eps), shift_a, scale_a), rope, grid)
        return x + gate_f * self.ffn(modulate_cf(layer_norm_cf(x, eps), shift_f, scale_f), grid)


class FinalLayerCF(nn.Module):
    """Channels-first FinalLayer: modulated channel norm, 1x1 conv to p*p*C_out channels."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.table = nn.Parameter(torch.zeros(2, cfg.hidden))
        self.linear = LinearConv(cfg.hidden, cfg.patch_size**2 * cfg.in_channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (batch, C, 1, N), emb: (batch, C, 1, N) the timestep embedding spread to the
        tokens -> (batch, p*p*C_out, 1, N), channels (c, py, px)."""
        c = x.shape[1]
        shift = emb + self.table[0].view(1, c, 1, 1)
        scale = emb + self.table[1].view(1, c, 1, 1)
        return self.linear(modulate_cf(layer_norm_cf(x, self.eps), shift, scale))


def _check_step_tensor(name: str, x, shape: tuple[int, ...], layout: str, like: torch.Tensor):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} {layout}, got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name} must have the model's dtype {like.dtype}, got {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{name} must be on the model's device {like.device}, got {x.device}")


class ANEHybridDiT(nn.Module):
    """Channels-first twin of HybridDiT: same parameters (by name), same forward signature
    and outputs; every activation of `step` is (batch, C, 1, seq) or a free view of it.

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

    def features(self, t_frames: torch.Tensor, motion: torch.Tensor):
        """The step's conditioning inputs in torch (the host computes them in numpy):
        t_frames (B, T), motion (B,) -> t_freq (B, F, 1, T), motion_freq (B, F, 1, 1)."""
        return self.t_embed.features(t_frames), self.motion_embed.features(motion[:, None])

    def condition(self, t_freq: torch.Tensor, motion_freq: torch.Tensor):
        """t_freq (B, F, 1, T), motion_freq (B, F, 1, 1) -> cond (B, 6C, 1, T) per-frame
        modulation, emb_t (B, C, 1, T) timestep embedding."""
        emb_t = self.t_embed(t_freq)
        emb_m = self.motion_embed(motion_freq)  # (B, C, 1, 1)
        return self.t_mod(F.silu(emb_t)) + self.motion_mod(F.silu(emb_m)), emb_t

    def step(
        self, x: torch.Tensor, t_freq: torch.Tensor, motion_freq: torch.Tensor, grid
    ) -> torch.Tensor:
        """One denoising step on tokens: the velocity of the conditioned noisy video.

        Args:
            x: (B, C_in*p*p, 1, N) tokens of x_t with the clean first frame in latent frame
                0 (video_to_tokens; export.host.tokens_from_video).
            t_freq: (B, F, 1, T) sinusoid features of each latent frame's timestep (frame 0
                gets t = 0), F = cfg.freq_dim.
            motion_freq: (B, F, 1, 1) sinusoid features of the motion score.
            grid: token grid (T, H, W), T * H * W == N.
        Returns:
            (B, C_in*p*p, 1, N) velocity tokens (tokens_to_video gives the video).
        """
        cond, emb_t = self.condition(t_freq, motion_freq)  # (B, 6C, 1, T), (B, C, 1, T)
        mod = spread_frames(cond, grid)  # (B, 6C, 1, N): spread once, shared by the blocks
        w = self.patch_embed.weight  # (C, C_in, p, p) -> a 1x1 conv over (c, py, px)
        h = F.conv2d(x, w.reshape(w.shape[0], -1, 1, 1), self.patch_embed.bias)  # (B, C, 1, N)
        rope = self.rope(grid)
        for block in self.blocks:
            h = block(h, mod, rope, grid)
        return self.final(h, spread_frames(emb_t, grid))

    def check_step_inputs(self, x, t_freq, motion_freq, grid) -> tuple[int, int, int]:
        """Checks step's arguments against the config and the token grid; returns the grid."""
        grid = check_grid(grid)
        cfg, like = self.cfg, self.patch_embed.weight
        b = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() >= 1 else 1
        n, f = grid[0] * grid[1] * grid[2], cfg.freq_dim
        cpp = cfg.in_channels * cfg.patch_size**2
        _check_step_tensor("x", x, (b, cpp, 1, n), "(B, C_in*p*p, 1, N) tokens", like)
        _check_step_tensor("t_freq", t_freq, (b, f, 1, grid[0]), "(B, F, 1, T)", like)
        _check_step_tensor("motion_freq", motion_freq, (b, f, 1, 1), "(B, F, 1, 1)", like)
        return grid

    def step_module(self, grid) -> ANEStep:
        """This twin's step for the token grid (T, H, W) as a module with the program's
        inputs as its forward's arguments (what to_coreml exports)."""
        return ANEStep(self, grid)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        first_frame: torch.Tensor | None = None,
        motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same contract as HybridDiT.forward: (B, C, T, H, W) -> velocity (B, C, T, H, W),
        through `step` with the layout change and features the host does in export."""
        t, motion, grid = check_inputs(
            self.cfg, x_t, t, first_frame, motion, like=self.patch_embed.weight
        )
        x_t, t_frames = inject_first_frame(x_t, t, first_frame)
        t_freq, motion_freq = self.features(t_frames, motion)
        p = self.cfg.patch_size
        v = self.step(video_to_tokens(x_t, p), t_freq, motion_freq, grid)
        return tokens_to_video(v, grid, p)


class ANEStep(nn.Module):
    """One denoising step of a twin for a fixed token grid: forward(x, t_freq, motion_freq)
    -> velocity tokens, all (B, channels, 1, seq) (see ANEHybridDiT.step). Shares the
    twin's weights."""

    def __init__(self, twin: ANEHybridDiT, grid):
        super().__init__()
        if not isinstance(twin, ANEHybridDiT):
            raise TypeError(f"twin must be an ANEHybridDiT, got {type(twin).__name__}")
        self.twin, self.grid = twin, check_grid(grid)

    def forward(
        self, x: torch.Tensor, t_freq: torch.Tensor, motion_freq: torch.Tensor
    ) -> torch.Tensor:
        grid = self.twin.check_step_inputs(x, t_freq, motion_freq, self.grid)
        return self.twin.step(x, t_freq, motion_freq, grid)


def to_ane(model: HybridDiT, attention_impl: str = "ane") -> ANEHybridDiT:
    """The channels-first twin of `model`, holding a copy of its weights, on its device and
    dtype, in eval mode. attention_impl: see ANEHybridDiT."""
    if not isinstance(model, HybridDiT):
        raise TypeError(f"model must be a HybridDiT, got {type(model).__name__}")
    ref = next(model.parameters())
    twin = ANEHybridDiT(model.cfg, attention_impl=attention_impl).to(ref.device, ref.dtype)
    twin.load_state_dict(model.state_dict())
    return twin.eval()
