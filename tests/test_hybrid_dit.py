"""HybridDiT: presets, config validation, odd grids, every zoo variant in one model, the
documented per-block forward, the channels-first twin and the sampler."""

from __future__ import annotations

import pytest
import torch

import attention_zoo as az
import hybrid_dit.model as model_mod
from hybrid_dit import PRESETS, DiTConfig, HybridDiT, format_pattern, parse_pattern, sample, to_ane
from hybrid_dit.model import apply_rope, inject_first_frame, rope_tables

TINY = PRESETS["tiny"]
ALL_VARIANTS = tuple(az.VARIANTS)  # generated from the registry: a new variant is covered


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def perturbed(cfg: DiTConfig, seed: int = 0) -> HybridDiT:
    """A model whose every parameter (norm gains and tables included) is moved off its
    initial value, so a weight that a twin maps wrongly cannot pass unnoticed."""
    torch.manual_seed(seed)
    model = HybridDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(cfg: DiTConfig, b: int, t: int, h: int, w: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_channels, t, h, w, generator=gen)
    ff = torch.randn(b, cfg.in_channels, h, w, generator=gen)
    ts = torch.rand(b, generator=gen)
    motion = torch.rand(b, generator=gen)
    return x, ts, ff, motion


# -- presets and config ---------------------------------------------------------------------


def test_mobilei2v_parameter_count_is_about_270m():
    cfg = PRESETS["mobilei2v"]
    with torch.device("meta"):
        model = HybridDiT(cfg)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 270e6) / 270e6 < 0.05, count
    assert cfg.attention == ("relu_linear",) * 7 + ("softmax",) + ("relu_linear",) * 7 + (
        "softmax",
    )
    assert cfg.mlp_hidden == 2880 and cfg.rope_split == (24, 24, 24)


def test_presets_build_and_small_is_a_softmax_teacher():
    small = PRESETS["small"]
    assert set(small.attention) == {"softmax"}
    assert TINY.depth == 2 and TINY.heads == 2
    for name, cfg in PRESETS.items():
        assert DiTConfig.from_dict(cfg.to_dict()) == cfg, name


@pytest.mark.parametrize(
    "field,value",
    [
        ("in_channels", 0),
        ("patch_size", 1.5),
        ("hidden", 0),
        ("depth", -1),
        ("heads", True),
        ("head_dim", 4),  # too small for 3D RoPE (with heads=8)
        ("head_dim", 15),  # heads * head_dim != hidden
        ("mlp_ratio", 0.0),
        ("attention", ("softmax", "no_such_variant")),
        ("attention", ("softmax",) * 3),
        ("attention", "L*x"),
        ("qk_norm", 1),
        ("qkv_bias", "yes"),
        ("attention_impl", "cuda"),
        ("attention_opts", {"relu_linear": {"eps": -1.0}}),
        ("attention_opts", {"softmax": {"p": 3.0}}),
        ("attention_opts", {"softmax_frame": {"grid": (1, 1, 1)}}),
        ("attention_opts", {"nope": {}}),
        ("freq_dim", 7),
        ("rope_theta", float("inf")),
        ("norm_eps", -1e-6),
    ],
)
def test_config_errors_name_the_field(field, value):
    changes = {field: value}
    if field == "depth":
        changes["attention"] = "softmax"
    if field == "head_dim" and value < 6:
        changes.update(heads=8)
    with pytest.raises((ValueError, TypeError), match=f"DiTConfig.{field}"):
        TINY.replace(**changes)


def test_unknown_variant_gets_the_zoo_message():
    with pytest.raises(ValueError, match=r"known variants: .*softmax"):
        TINY.with_attention("softmax,nope")


def test_patterns_parse_and_round_trip():
    pattern = "L*7,S,L*7,S"
    names = parse_pattern(pattern, depth=16)
    assert names == PRESETS["mobilei2v"].attention
    assert parse_pattern(format_pattern(names), depth=16) == names
    assert parse_pattern("relu_linear*7,softmax,relu_linear*7,softmax") == names
    assert parse_pattern("performer", depth=3) == ("performer",) * 3
    with pytest.raises(ValueError, match="one variant per block"):
        parse_pattern("L*2", depth=3)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_pattern("L,,S")
    cfg = TINY.replace(attention_opts={"relu_linear": {"eps": 1e-6}})
    assert cfg.opts_for("relu_linear") == {"eps": 1e-6} and cfg.opts_for("softmax") == {}
    assert hash(cfg) == hash(TINY.replace(attention_opts={"relu_linear": {"eps": 1e-6}}))


# -- forward --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch,thw",
    [(1, (3, 5, 7)), (1, (1, 1, 1)), (2, (3, 6, 10)), (3, (2, 9, 3))],
    ids=["p1-3x5x7", "p1-1x1x1", "p2-3x6x10", "p3-2x9x3"],
)
def test_forward_on_odd_grids_is_per_sample(patch, thw):
    cfg = TINY.replace(patch_size=patch, attention="L,softmax_frame")
    model = perturbed(cfg)
    x, t, ff, motion = inputs(cfg, 2, *thw)
    with torch.no_grad():
        v = model(x, t, ff, motion)
        v1 = model(x[1:], t[1:], ff[1:], motion[1:])
    assert v.shape == x.shape
    assert torch.isfinite(v).all()
    # samples do not mix: the second sample alone gives the same output
    assert rel_err(v[1:], v1) < 1e-5


def test_grid_is_derived_and_checked():
    cfg = TINY.replace(patch_size=2)
    model = HybridDiT(cfg)
    x, t, ff, motion = inputs(cfg, 1, 2, 5, 6)
    with pytest.raises(ValueError, match=r"divisible by patch_size=2.*H=5"):
        model(x, t, ff, motion)
    with pytest.raises(ValueError, match="x_t must be a latent video"):
        model(x[:, :2], t, None, motion)
    x, t, ff, motion = inputs(cfg, 1, 2, 4, 6)
    with pytest.raises(ValueError, match="first_frame must be"):
        model(x, t, ff[..., :2], motion)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(1,\)"):
        model(x, torch.zeros(3), ff, motion)


def test_every_zoo_variant_in_one_model_matches_its_twin():
    cfg = TINY.replace(depth=len(ALL_VARIANTS), attention=ALL_VARIANTS)
    model = perturbed(cfg)
    assert tuple(b.attn.variant for b in model.blocks) == ALL_VARIANTS
    x, t, ff, motion = inputs(cfg, 2, 3, 5, 7)
    twin = to_ane(model, attention_impl="reference")
    with torch.no_grad():
        v, v_twin = model(x, t, ff, motion), twin(x, t, ff, motion)
    assert torch.isfinite(v).all()
    assert rel_err(v_twin, v) < 1e-4


def test_blocks_have_the_documented_forward():
    """Running model.blocks by hand through block(x, cond, rope, grid) gives the forward."""
    cfg = TINY.replace(attention="softmax_frame,L")
    model = perturbed(cfg)
    x, t, ff, motion = inputs(cfg, 1, 3, 4, 5)
    with torch.no_grad():
        grid = cfg.token_grid(x.shape[2:])
        x0, t_frames = inject_first_frame(x, t, ff)
        cond, emb_t = model.condition(t_frames, motion)
        h = model.embed(x0)
        rope = model.rope(grid)
        for block in model.blocks:
            h = block(h, cond, rope, grid)
        manual = model.unpatchify(model.final(h, emb_t, grid), grid)
        assert torch.equal(manual, model(x, t, ff, motion))


def test_first_frame_replaces_frame_zero_at_timestep_zero():
    cfg = TINY
    model = perturbed(cfg)
    x, t, ff, motion = inputs(cfg, 2, 3, 4, 4)
    _, t_frames = inject_first_frame(x, t, ff)
    assert torch.equal(t_frames[:, 0], torch.zeros(2))
    assert torch.equal(t_frames[:, 1:], t[:, None].expand(2, 2))
    garbage = x.clone()
    garbage[:, :, 0] = 1e3
    with torch.no_grad():
        assert torch.equal(model(x, t, ff, motion), model(garbage, t, ff, motion))
        # without conditioning, frame 0 of x_t does matter
        assert not torch.allclose(model(x, t, None, motion), model(garbage, t, None, motion))


def test_rope_is_relative():
    """q.k after RoPE depends only on the offset between the two tokens' positions."""
    cfg = TINY.replace(hidden=2 * 20, head_dim=20)  # 20 = 3 * 6 rotated + 2 unrotated
    grid = (4, 5, 6)
    rope = rope_tables(cfg, grid, dtype=torch.float64)
    n, d = rope.cos.shape[0], cfg.head_dim
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    rq = apply_rope(q.expand(1, n, 1, d), rope).view(n, d)  # q placed at every token
    rk = apply_rope(k.expand(1, n, 1, d), rope).view(n, d)
    scores = (rq @ rk.T).view(*grid, *grid)
    # shift both tokens by (1, 2, 3): the score is unchanged
    assert torch.allclose(scores[:-1, :-2, :-3, :-1, :-2, :-3], scores[1:, 2:, 3:, 1:, 2:, 3:])
    assert torch.allclose(rq.norm(dim=1), q.norm().expand(n))  # a rotation keeps the norm
    assert not torch.allclose(scores[0, 0, 0, 0, 0, 0], scores[0, 0, 0, 0, 0, 1])


def test_state_dict_does_not_depend_on_the_pattern():
    a = HybridDiT(TINY.with_attention("softmax"))
    b = HybridDiT(TINY.with_attention("performer,softmax_frame"))
    b.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(b.blocks[0].attn.qkv.weight, a.blocks[0].attn.qkv.weight)


def test_attention_impl_reaches_the_zoo(monkeypatch):
    seen = []
    real = az.attention

    def spy(q, k, v, variant, impl, **opts):
        seen.append((variant, impl, "grid" in opts))
        return real(q, k, v, variant=variant, impl="reference", **opts)

    monkeypatch.setattr(model_mod.az, "attention", spy)
    cfg = TINY.replace(attention="softmax_frame,L", attention_impl="reference")
    x, t, ff, motion = inputs(cfg, 1, 2, 3, 3)
    HybridDiT(cfg)(x, t, ff, motion)
    assert seen == [("softmax_frame", "reference", True), ("relu_linear", "reference", False)]


@pytest.mark.skipif(not az.triton_usable(), reason="needs Triton (CUDA or TRITON_INTERPRET=1)")
def test_triton_impl_gives_the_reference_output():
    cfg = TINY.replace(attention="L,S")
    model = perturbed(cfg)
    fast = HybridDiT(cfg.replace(attention_impl="triton")).eval()
    fast.load_state_dict(model.state_dict())
    x, t, ff, motion = inputs(cfg, 1, 3, 5, 7)
    with torch.no_grad():
        assert rel_err(fast(x, t, ff, motion), model(x, t, ff, motion)) < 1e-4


# -- the channels-first twin ----------------------------------------------------------------


def test_twin_loads_the_same_state_dict_and_is_channels_first():
    model = perturbed(TINY)
    twin = to_ane(model, attention_impl="reference")
    assert set(twin.state_dict()) == set(model.state_dict())
    w = model.blocks[0].attn.qkv.weight
    assert torch.equal(twin.blocks[0].attn.qkv.weight, w[:, :, None, None])
    assert all(
        isinstance(m, torch.nn.Conv2d)
        for m in twin.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    )


@pytest.mark.parametrize("variant", [v for v in ALL_VARIANTS if az.get(v).ane is not None])
def test_twin_with_the_zoo_ane_form_equals_the_model(variant):
    cfg = TINY.replace(patch_size=2, attention=f"{variant},softmax")
    model = perturbed(cfg)
    x, t, ff, motion = inputs(cfg, 2, 3, 6, 10)
    twin = to_ane(model)  # attention_impl="ane"
    with torch.no_grad():
        assert rel_err(twin(x, t, ff, motion), model(x, t, ff, motion)) < 1e-4


# -- sampler --------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_sampler_keeps_the_first_frame(steps):
    model = perturbed(TINY)
    grid = (3, 4, 5)
    _, _, ff, motion = inputs(TINY, 2, *grid)
    gen = torch.Generator().manual_seed(0)
    video = sample(model, ff, motion, steps, grid, generator=gen)
    assert video.shape == (2, TINY.in_channels, *grid)
    assert torch.equal(video[:, :, 0], ff)
    assert torch.isfinite(video).all()
    again = sample(model, ff, motion, steps, grid, generator=torch.Generator().manual_seed(0))
    assert torch.equal(video, again)


def test_sampler_is_euler_from_noise():
    model = perturbed(TINY)
    grid = (2, 3, 3)
    x, _, ff, motion = inputs(TINY, 1, *grid)
    video = sample(model, ff, motion, 1, grid, noise=x)
    start = x.clone()
    start[:, :, 0] = ff
    with torch.no_grad():
        expect = start - model(start, torch.ones(1), ff, motion)  # x_0 = x_1 + (0 - 1) v
    assert torch.allclose(video[:, :, 1:], expect[:, :, 1:], atol=1e-6)


def test_sampler_validates_its_arguments():
    model = HybridDiT(TINY)
    ff = torch.randn(1, TINY.in_channels, 4, 4)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        sample(model, ff, 0.0, 0, (2, 4, 4))
    with pytest.raises(ValueError, match="grid must"):
        sample(model, ff, 0.0, 1, (2, 4))
    with pytest.raises(ValueError, match="first_frame must have shape"):
        sample(model, ff, 0.0, 1, (2, 4, 5))
    with pytest.raises(TypeError, match="model must be"):
        sample(object(), ff, 0.0, 1, (2, 4, 4))
    with pytest.raises(TypeError, match="generator must be"):
        sample(model, ff, 0.0, 1, (2, 4, 4), generator=0)
