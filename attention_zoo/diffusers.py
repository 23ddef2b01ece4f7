"""Any zoo variant as the self-attention of a diffusers transformer, chosen per block.

    from diffusers import SanaVideoTransformer3DModel
    from attention_zoo.diffusers import set_attention

    model = SanaVideoTransformer3DModel(**config)      # your weights or random ones
    set_attention(model, "L*7,S,L*7,S")                 # one variant per block, in block order

diffusers runs one processor per attention module (`Attention.set_processor`; the model's
`attn_processors` keys are "{name}.processor"). Its newer attention-backend dispatcher is a
closed enum, so a processor is the supported way in. `ZooProcessor` repeats, step for step,
what the module's own processor does around the attention (projections, q/k norms, rotary,
output projection, fp16 clipping) and computes only the attention itself with the zoo,
`az.attention(q, k, v, variant=..., impl=...)` on (B, H, N, D). Which steps those are is
looked up from the module's own processor class in `RECIPES` (copied from diffusers 0.42);
a module whose processor is not there is refused, not guessed.

Only self-attention is swapped. Cross-attention modules (`is_cross_attention`) keep the
processor the model gave them.

The one place the attention is not a plain `az.attention` call: SANA-Video's processor
(`SanaLinearAttnProcessor3_0`) rotates the ReLU *features* and normalises with the
un-rotated ones, so for the variants in `FEATURE_ROTARY` it computes
(R phi(q)) ((R phi(k))^T v) / (phi(q) . sum phi(k) + eps) with the zoo's feature map phi;
every other variant gets the rotary on q and k, then `az.attention`.

This module imports nothing of diffusers: it works on the modules it is given (the zoo
imports on a machine without diffusers).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import attention_zoo as az
from attention_zoo.checks import check_grid
from attention_zoo.patterns import ALIASES, parse_pattern

# Implementations a processor can run: the zoo's, in SDPA's (B, H, N, D) layout ("ane" is
# channels-first and belongs to the Core ML export).
PROCESSOR_IMPLS = ("auto", "reference", "fast", "triton")

# Linear variants whose feature map keeps the head's D coordinates (elementwise, up to a
# per-token scale): under SANA-Video's processor the rotary acts on these features, as it
# does on ReLU's. Every other variant gets the rotary on q and k, the usual place.
FEATURE_ROTARY = ("relu_linear", "elu_linear", "focused_linear")

# The eps SANA's linear-attention processors add to the normaliser (a literal in diffusers).
SANA_EPS = 1e-15


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """SANA-Video's (Wan's) rotary: channel pairs (2i, 2i+1) of x turned by the angle whose
    cosine is cos[..., 2i] and sine sin[..., 2i+1]; computed in the tables' dtype (float64
    in diffusers) and returned in x's, as diffusers does.

    x: (..., N, ..., D) broadcastable against cos, sin (SANA-Video: x (B, N, H, D), tables
    (1, N, 1, D))."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).to(x.dtype)


def rotary_linear_attention(phi_q, phi_k, rot_q, rot_k, v, eps: float) -> torch.Tensor:
    """Linear attention whose products use rotated features and whose normaliser uses the
    un-rotated ones (SANA-Video):

        out_i = rot_q_i (rot_k^T v) / (phi_q_i . sum_j phi_k_j + eps)

    phi_q, rot_q (B, H, Nq, F); phi_k, rot_k (B, H, Nk, F); v (B, H, Nk, Dv); all in the
    compute dtype -> (B, H, Nq, Dv). O(N F Dv) per head, keys times values first."""
    num = rot_q @ (rot_k.transpose(-1, -2) @ v)  # (B, H, Nq, Dv)
    den = phi_q @ phi_k.sum(dim=-2).unsqueeze(-1)  # (B, H, Nq, 1)
    return num / (den + eps)


# -- recipes: each diffusers processor's own steps around the attention ------------------


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, N, H*D) -> (B, H, N, D)


def _heads_last(o: torch.Tensor) -> torch.Tensor:
    return o.transpose(1, 2).flatten(2)  # (B, H, N, D) -> (B, N, H*D)


def _qkv_heads_across(attn, hidden_states):
    """Projections, then q/k norms over all heads' channels (SANA's "across heads")."""
    q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    return q, k, v  # (B, N, H*D) each


def _attn_processor_2_0(proc, attn, hidden_states, temb, rotary_emb):
    """diffusers' AttnProcessor2_0 (self-attention path): optional spatial norm, 4D input,
    group norm, per-head q/k norms, residual connection, output rescale."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch = hidden_states.shape[0]
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    head_dim = k.shape[-1] // attn.heads
    q, k, v = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (q, k, v))
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    o = proc.attend(q, k, v)  # (B, H, N, D)
    o = o.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
    o = attn.to_out[1](attn.to_out[0](o))
    if input_ndim == 4:
        o = o.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        o = o + residual
    return o / attn.rescale_output_factor


def _sana_attn_processor_2_0(proc, attn, hidden_states, temb, rotary_emb):
    """SANA's softmax processor (SanaAttnProcessor2_0): q/k norms across heads, rescale."""
    q, k, v = _qkv_heads_across(attn, hidden_states)
    o = proc.attend(*(_heads_first(x, attn.heads) for x in (q, k, v)))
    o = attn.to_out[1](attn.to_out[0](_heads_last(o).to(q.dtype)))
    return o / attn.rescale_output_factor


def _sana_linear_2_0(proc, attn, hidden_states, temb, rotary_emb):
    """SANA's SanaLinearAttnProcessor2_0: q/k norms across heads, fp32 attention, the output
    in the input dtype, fp16 clipped to +-65504 after the output projection."""
    dtype = hidden_states.dtype
    q, k, v = _qkv_heads_across(attn, hidden_states)
    o = proc.attend(*(_heads_first(x, attn.heads) for x in (q, k, v)))
    o = attn.to_out[1](attn.to_out[0](_heads_last(o).to(dtype)))
    if dtype == torch.float16:
        o = o.clip(-65504, 65504)
    return o


def _sana_linear_3_0(proc, attn, hidden_states, temb, rotary_emb):
    """SANA-Video's SanaLinearAttnProcessor3_0: q/k norms across heads, the model's rotary
    (cos, sin) tables of shape (1, N, 1, D), fp32 attention, the output in the input dtype."""
    if rotary_emb is None:
        raise ValueError(
            "rotary_emb: SANA-Video's self-attention needs the model's rotary tables "
            "(cos, sin), as its own processor does; got None"
        )
    dtype = hidden_states.dtype
    q, k, v = _qkv_heads_across(attn, hidden_states)
    q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))  # (B, N, H, D)
    o = proc.attend_rotary(q, k, v, rotary_emb)  # (B, H, N, D)
    return attn.to_out[1](attn.to_out[0](_heads_last(o).to(dtype)))


@dataclass(frozen=True)
class Recipe:
    """What a diffusers processor does around its attention, repeated by ZooProcessor.

    Attributes:
        processor: the diffusers processor class name this recipe repeats.
        forward: f(zoo_processor, attn, hidden_states, temb, rotary_emb) -> output, the
            processor's own steps with `zoo_processor.attend` (or `.attend_rotary`) where
            the processor computes its attention.
        eps: the normaliser eps the processor uses (linear attention), passed to every zoo
            variant that takes `eps` unless the caller sets one; None: the zoo's default.
        rotary_on_features: the processor rotates feature-mapped q/k (SANA-Video).
    """

    processor: str
    forward: Callable
    eps: float | None = None
    rotary_on_features: bool = False


RECIPES: dict[str, Recipe] = {
    r.processor: r
    for r in (
        Recipe("AttnProcessor2_0", _attn_processor_2_0),
        Recipe("SanaAttnProcessor2_0", _sana_attn_processor_2_0),
        Recipe("SanaLinearAttnProcessor2_0", _sana_linear_2_0, eps=SANA_EPS),
        Recipe(
            "SanaLinearAttnProcessor3_0", _sana_linear_3_0, eps=SANA_EPS, rotary_on_features=True
        ),
    )
}


def recipe_for(processor: Any) -> Recipe | None:
    """The recipe of a processor in use: a diffusers processor known to RECIPES, or the
    recipe a ZooProcessor already follows; None for anything else."""
    if isinstance(processor, ZooProcessor):
        return processor.recipe
    cls = type(processor)
    if cls.__module__.split(".")[0] == "diffusers":
        return RECIPES.get(cls.__name__)
    return None


# -- the processor ---------------------------------------------------------------------


class _BlockGrid:
    """The token grid (frames, height, width) a transformer block was last called with,
    read from its forward's arguments by a forward pre-hook and shared by the processors
    inside it: the model's own patch grid and frame count, as the model computed them.
    `value` is None until the block runs, or when it is called without them."""

    FRAMES = ("frames", "num_frames")

    def __init__(self, block: nn.Module):
        self.signature = inspect.signature(block.forward)
        names = self.signature.parameters
        self.frames = next((n for n in self.FRAMES if n in names), None)
        self.value: tuple[int, int, int] | None = None
        self.handle = block.register_forward_pre_hook(self._read, with_kwargs=True)

    @classmethod
    def available(cls, block: nn.Module) -> bool:
        """Whether the block's forward takes height and width (and maybe frames)."""
        names = inspect.signature(block.forward).parameters
        return "height" in names and "width" in names

    def _read(self, block, args, kwargs):
        try:
            bound = self.signature.bind_partial(*args, **kwargs).arguments
        except TypeError:  # the block's own call will say what is wrong
            self.value = None
            return
        dims = (
            bound.get(self.frames, 1) if self.frames else 1,
            bound.get("height"),
            bound.get("width"),
        )
        self.value = None if any(d is None for d in dims) else tuple(int(d) for d in dims)


class ZooProcessor:
    """A diffusers attention processor computing zoo variant `variant` inside a diffusers
    attention module, with the steps of the module's own processor (`recipe`) around it.

    Args:
        variant: zoo variant name (or the alias L / S).
        recipe: the diffusers processor whose steps to repeat: a RECIPES key, a processor
            instance or class.
        impl: zoo implementation, "auto" (the fastest exact one: Triton on CUDA, SDPA and
            matmul forms on CPU), "reference", "fast" or "triton".
        grid: a fixed token grid (T, H, W) for variants that need one; None: the grid of
            the block the processor runs in (set_attention wires it), else an error.
        **opts: the variant's options (e.g. eps; the recipe's own eps by default).

    Called by diffusers as processor(attn, hidden_states, encoder_hidden_states=None,
    attention_mask=None, temb=None, rotary_emb=None) on self-attention: a mask or encoder
    states are refused (no zoo variant takes a mask; cross-attention is not swapped).
    """

    def __init__(
        self,
        variant: str,
        recipe: str | Any,
        *,
        impl: str = "auto",
        grid: Sequence[int] | None = None,
        **opts,
    ):
        if isinstance(variant, str):
            variant = ALIASES.get(variant, variant)
        self.var = az.get(variant)
        self.variant = self.var.name
        self.recipe = _check_recipe(recipe)
        if impl not in PROCESSOR_IMPLS:
            raise ValueError(f"impl must be one of {PROCESSOR_IMPLS}, got {impl!r}")
        if self.rotary_on_features and impl == "triton":
            raise ValueError(
                f"impl: under {self.recipe.processor} {self.variant} runs one exact PyTorch "
                "form (rotary on the features, un-rotated normaliser); use impl='auto', "
                "'reference' or 'fast', got 'triton'"
            )
        self.impl = impl
        self.needs_grid = "grid" in self.var.defaults
        self.grid = None if grid is None else check_grid(grid, None)
        if self.recipe.eps is not None and "eps" in self.var.defaults:
            opts = {"eps": self.recipe.eps, **opts}
        probe = {"grid": (1, 1, 1)} if self.needs_grid else {}
        self.var.resolve_opts(None, None, {**opts, **probe})  # a bad option fails here
        self.opts = dict(opts)
        self.block_grid: _BlockGrid | None = None

    @property
    def rotary_on_features(self) -> bool:
        return self.recipe.rotary_on_features and self.variant in FEATURE_ROTARY

    def __repr__(self) -> str:
        return (
            f"ZooProcessor({self.variant!r}, recipe={self.recipe.processor!r}, impl={self.impl!r})"
        )

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        rotary_emb: Any = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(
                "encoder_hidden_states: ZooProcessor replaces self-attention only; got "
                f"encoder states of shape {tuple(encoder_hidden_states.shape)}"
            )
        if attention_mask is not None:
            raise ValueError(
                "attention_mask: zoo variants attend over every token and take no mask; got "
                f"a mask of shape {tuple(attention_mask.shape)}"
            )
        return self.recipe.forward(self, attn, hidden_states, temb, rotary_emb)

    def token_grid(self, n: int) -> tuple[int, int, int]:
        """The (T, H, W) grid of the N tokens being attended: the fixed one, else the block's."""
        grid = self.grid
        source = "grid="
        if grid is None and self.block_grid is not None:
            grid, source = self.block_grid.value, "the block's (frames, height, width)"
        if grid is None:
            raise ValueError(
                f"grid: {self.variant} needs the token grid (T, H, W) and none is known: pass "
                "grid=(T, H, W), or run it inside a block whose forward takes height and width"
            )
        try:
            return check_grid(grid, n)
        except ValueError as e:
            raise ValueError(f"grid from {source}: {e}") from None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The zoo's attention on the module's q, k (B, H, N, D) and v (B, H, N, Dv)."""
        opts = self.opts
        if self.needs_grid:
            opts = {**opts, "grid": self.token_grid(q.shape[-2])}
        return az.attention(q, k, v, variant=self.variant, impl=self.impl, **opts)

    def attend_rotary(self, q, k, v, rotary_emb) -> torch.Tensor:
        """Attention under SANA-Video's rotary. q, k, v: (B, N, H, D), as SANA-Video holds
        them; rotary_emb: (cos, sin) of shape (1, N, 1, D) -> (B, H, N, Dv)."""
        cos, sin = rotary_emb
        if not self.rotary_on_features:
            q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
            return self.attend(*(x.transpose(1, 2) for x in (q, k, v)))
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, N, D)
        o = self.var.resolve_opts(q, k, self.opts)
        eps = o.pop("eps")
        phi_q, phi_k = self.var.feature_fn(q, k, **o)  # compute dtype, >= fp32
        cos, sin = cos.transpose(1, 2), sin.transpose(1, 2)  # (1, 1, N, D)
        rot_q, rot_k = rotate_pairs(phi_q, cos, sin), rotate_pairs(phi_k, cos, sin)
        out = rotary_linear_attention(phi_q, phi_k, rot_q, rot_k, v.to(phi_q.dtype), eps)
        return out.to(v.dtype)


def _check_recipe(recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    name = recipe if isinstance(recipe, str) else getattr(recipe, "__name__", None)
    if name is None:  # a processor instance
        found = recipe_for(recipe)
        if found is not None:
            return found
        name = type(recipe).__name__
    if name not in RECIPES:
        raise ValueError(
            f"recipe must be a diffusers processor this knows ({', '.join(RECIPES)}), got {name!r}"
        )
    return RECIPES[name]


# -- finding blocks and swapping -------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A transformer block holding self-attention: its name in the model, the module, and
    its self-attention modules (name, module, recipe) in definition order."""

    name: str
    module: nn.Module
    attentions: tuple[tuple[str, nn.Module, Recipe], ...]


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "set_processor") and hasattr(module, "processor")


def _block_name(name: str) -> str:
    """The block an attention module belongs to: its path up to the first list index
    ("transformer_blocks.3.attn1" -> "transformer_blocks.3"), else the module itself."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return name


def self_attention_blocks(model: nn.Module) -> list[Block]:
    """The blocks of `model` that hold self-attention, in block (module definition) order.

    Attention modules are those with a diffusers processor (`set_processor`); the ones with
    `is_cross_attention` set are cross-attention and left out. A self-attention module whose
    processor RECIPES does not know is refused (ValueError naming it), as is a model with
    no self-attention module at all."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module (a diffusers model), got {type(model).__name__}"
        )
    found: dict[str, list] = {}
    seen = []
    for name, module in model.named_modules():
        if not name or not _is_attention(module):
            continue
        seen.append(f"{name} ({type(module.processor).__name__})")
        if getattr(module, "is_cross_attention", False):
            continue
        recipe = recipe_for(module.processor)
        if recipe is None:
            raise ValueError(
                f"model: self-attention module {name!r} of {type(model).__name__} runs "
                f"{type(module.processor).__name__}, whose steps this does not know; known "
                f"processors: {', '.join(RECIPES)}"
            )
        found.setdefault(_block_name(name), []).append((name, module, recipe))
    if not found:
        raise ValueError(
            f"model: {type(model).__name__} has no self-attention module with a diffusers "
            f"processor to swap; attention modules found: {', '.join(seen) or 'none'}"
        )
    return [Block(b, model.get_submodule(b), tuple(a)) for b, a in found.items()]


def set_attention(
    model: nn.Module,
    pattern: str | Sequence[str],
    *,
    impl: str = "auto",
    grid: Sequence[int] | None = None,
    opts: dict[str, dict] | None = None,
) -> nn.Module:
    """Puts a zoo variant into every self-attention module of a diffusers model, one
    variant per transformer block, and returns the model (changed in place).

    Args:
        model: a diffusers model (or any module holding diffusers attention modules, e.g. a
            list of its blocks).
        pattern: one variant name for every block, or one per block in block order, in
            DiTConfig's pattern strings ("L*7,S,L*7,S"; L = relu_linear, S = softmax) or as
            a sequence of names. Blocks are those holding self-attention
            (`self_attention_blocks`).
        impl: the zoo implementation every processor runs ("auto": the fastest exact one).
        grid: a fixed token grid (T, H, W) for variants that need one (softmax_frame);
            None: each block's grid as the model computes it (its patch grid and frame
            count, the `frames`/`height`/`width` its blocks are called with).
        opts: options per variant, {variant: {option: value}}, e.g. {"relu_linear":
            {"eps": 1e-8}}; by default linear variants get the eps of the module's own
            processor (SANA: 1e-15) and everything else the zoo's defaults.

    Only self-attention is swapped; cross-attention keeps the model's processors. Projections,
    q/k norms, rotary and output steps stay those of each module's own processor. Refused
    with a ValueError naming the problem, before anything is changed: a pattern of the wrong
    length, an unknown variant, a model without self-attention modules (or with one whose
    processor is unknown), a variant that needs a grid the blocks cannot give.
    """
    blocks = self_attention_blocks(model)
    names = parse_pattern(
        pattern,
        len(blocks),
        name="pattern",
        unit="transformer block with self-attention",
        expected=f"{len(blocks)} blocks",
    )
    opts = _check_opts(opts)
    if grid is not None:
        grid = check_grid(grid, None)
    plan = []
    for i, (block, variant) in enumerate(zip(blocks, names, strict=True)):
        needs_grid = "grid" in az.get(variant).defaults
        if needs_grid and grid is None and not _BlockGrid.available(block.module):
            raise ValueError(
                f"pattern: block {i} ({block.name}) is {variant}, which needs the token grid "
                f"(T, H, W), and {type(block.module).__name__}.forward takes no height and "
                "width to read it from; pass grid=(T, H, W)"
            )
        procs = [
            ZooProcessor(variant, recipe, impl=impl, grid=grid, **opts.get(variant, {}))
            for _, _, recipe in block.attentions
        ]
        plan.append((block, procs, needs_grid and grid is None))
    for block, procs, wire_grid in plan:  # everything checked: now change the model
        for _, module, _ in block.attentions:
            old = module.processor
            if isinstance(old, ZooProcessor) and old.block_grid is not None:
                old.block_grid.handle.remove()
        cell = _BlockGrid(block.module) if wire_grid else None
        for (_, module, _), proc in zip(block.attentions, procs, strict=True):
            proc.block_grid = cell
            module.set_processor(proc)
    return model


def _check_opts(opts) -> dict[str, dict]:
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise TypeError(
            f"opts must be a dict {{variant: {{option: value}}}}, got {type(opts).__name__}"
        )
    out = {}
    for name, o in opts.items():
        try:
            var = az.get(ALIASES.get(name, name))
        except (KeyError, TypeError) as e:
            raise ValueError(f"opts: {e.args[0]}") from None
        if not isinstance(o, dict):
            raise TypeError(
                f"opts[{name!r}] must be a dict {{option: value}}, got {type(o).__name__}"
            )
        if "grid" in o:
            raise ValueError(
                f"opts[{name!r}]: grid is the model's token grid, not an option; pass "
                "set_attention(..., grid=(T, H, W)) or let it read the grid from the model"
            )
        out[var.name] = dict(o)
    return out


def attention_pattern(model: nn.Module) -> tuple[str, ...]:
    """What each self-attention block runs, in block order: the zoo variant of its
    ZooProcessor, else the name of the diffusers processor (e.g. "SanaLinearAttnProcessor3_0")."""
    out = []
    for block in self_attention_blocks(model):
        kinds = []
        for _, module, _ in block.attentions:
            p = module.processor
            kind = p.variant if isinstance(p, ZooProcessor) else type(p).__name__
            if kind not in kinds:
                kinds.append(kind)
        out.append("+".join(kinds))
    return tuple(out)
