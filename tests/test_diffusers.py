"""diffusers interop (attention_zoo.diffusers, bench.diffusers_latency, `mobileattn bench
--model`): parity with diffusers' own processors, every variant against the zoo reference
on the module's own q, k, v, the token grid, refusals, latency tables, ONNX export.

Small randomly initialised models only: nothing is downloaded."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attention_zoo as az
from tests.helpers import rel_err

diffusers = pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DiTTransformer2DModel,
    SanaTransformer2DModel,
    SanaVideoTransformer3DModel,
)
from diffusers.models.attention_processor import (  # noqa: E402
    Attention,
    AttnProcessor,
    AttnProcessor2_0,
    SanaLinearAttnProcessor2_0,
)
from diffusers.models.transformers.sana_transformer import SanaAttnProcessor2_0  # noqa: E402

from attention_zoo.diffusers import (  # noqa: E402
    FEATURE_ROTARY,
    ZooProcessor,
    attention_pattern,
    rotate_pairs,
    self_attention_blocks,
    set_attention,
)

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # relative RMS error, fp32

# A toy SANA-Video: 2 heads x 12 (RoPE splits 12 as 4 + 4 + 4), patch (1, 2, 2), three
# blocks; latent (3, 10, 14) -> token grid (3, 5, 7), 105 tokens (no power of two).
SANA_VIDEO = {
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "num_layers": 3,
    "num_cross_attention_heads": 2,
    "cross_attention_head_dim": 12,
    "cross_attention_dim": 24,
    "caption_channels": 8,
    "patch_size": [1, 2, 2],
}
SANA = {**SANA_VIDEO, "patch_size": 2, "sample_size": 8}


def sana_video(**over):
    torch.manual_seed(0)
    return SanaVideoTransformer3DModel(**{**SANA_VIDEO, **over}).eval()


def sana(qk_norm="rms_norm_across_heads", **over):
    torch.manual_seed(0)
    return SanaTransformer2DModel(**{**SANA, **over}, qk_norm=qk_norm).eval()


def dit():
    torch.manual_seed(0)
    cfg = dict(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4)
    return DiTTransformer2DModel(**cfg, num_layers=3, sample_size=10, patch_size=2).eval()


def inputs_for(model):
    gen = torch.Generator().manual_seed(1)
    if isinstance(model, SanaVideoTransformer3DModel):
        x = torch.randn(1, 4, 3, 10, 14, generator=gen)
    elif isinstance(model, SanaTransformer2DModel):
        x = torch.randn(1, 4, 10, 14, generator=gen)
    else:  # DiT: class-conditional
        return (torch.randn(1, 4, 10, 10, generator=gen), torch.tensor([500]), torch.tensor([3]))
    return (x, torch.randn(1, 6, 8, generator=gen), torch.tensor([500.0]))


def run(model):
    with torch.no_grad():
        return model(*inputs_for(model), return_dict=False)[0]


def set_processors(model, classes):
    """diffusers' own processors on the self-attention modules, one class per block."""
    for block, cls in zip(self_attention_blocks(model), classes, strict=True):
        for _, module, _ in block.attentions:
            module.set_processor(cls())
    return model


# -- parity with diffusers' own processors ----------------------------------------------


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize(
    ("build", "pattern", "own"),
    [
        pytest.param(sana, "relu_linear", None, id="sana-relu_linear=SanaLinear2_0"),
        pytest.param(sana_video, "relu_linear", None, id="sana_video-relu_linear=SanaLinear3_0"),
        pytest.param(dit, "softmax", None, id="dit-softmax=AttnProcessor2_0"),
        pytest.param(
            lambda: sana(qk_norm=None), "softmax", [AttnProcessor2_0] * 3, id="sana-softmax=2_0"
        ),
        pytest.param(
            sana,
            "L,S,L",
            [SanaLinearAttnProcessor2_0, SanaAttnProcessor2_0, SanaLinearAttnProcessor2_0],
            id="sana-mix=own-mix",
        ),
        pytest.param(
            lambda: sana(qk_norm=None),
            "softmax,relu_linear*2",
            [AttnProcessor2_0, SanaLinearAttnProcessor2_0, SanaLinearAttnProcessor2_0],
            id="sana-mix=own-mix-2_0",
        ),
    ],
)
def test_equals_diffusers_own_processors(build, pattern, own, impl):
    model = build()
    if own is not None:
        set_processors(model, own)
    ref = run(model)
    before = attention_pattern(model)
    set_attention(model, pattern, impl=impl)
    assert attention_pattern(model) != before
    assert rel_err(run(model), ref) < TOL


def test_the_sana_eps_is_the_modules_own():
    """Features small enough that the normaliser is ~1e-8: only SANA's own 1e-15 agrees."""
    torch.manual_seed(0)
    attn = Attention(query_dim=24, heads=2, dim_head=12, processor=SanaLinearAttnProcessor2_0())
    with torch.no_grad():
        attn.to_q.weight.mul_(1e-4)
        attn.to_k.weight.mul_(1e-4)
    x = torch.randn(1, 40, 24)
    with torch.no_grad():
        ref = attn(x)
        own = attn.processor
        attn.set_processor(ZooProcessor("relu_linear", own))
        assert attn.processor.opts == {"eps": 1e-15}
        assert rel_err(attn(x), ref) < TOL
        attn.set_processor(ZooProcessor("relu_linear", own, eps=1e-8))
        assert rel_err(attn(x), ref) > 1e-2


def test_fp16_output_is_clipped_like_sana():
    torch.manual_seed(0)
    attn = Attention(query_dim=24, heads=2, dim_head=12, processor=SanaLinearAttnProcessor2_0())
    with torch.no_grad():  # outputs past fp16's range, weights still inside it
        attn.to_v.weight.mul_(30)
        attn.to_out[0].weight.mul_(3e4)
    attn = attn.half()
    x = torch.randn(1, 20, 24).half()
    with torch.no_grad():
        ref = attn(x)
        attn.set_processor(ZooProcessor("relu_linear", attn.processor))
        out = attn(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (ref.abs() == 65504).float().mean() > 0.1  # diffusers clipped a good share
    assert torch.equal(out.abs() == 65504, ref.abs() == 65504)
    assert rel_err(out.float(), ref.float()) < 1e-2


def test_cross_attention_keeps_the_models_processors():
    model = sana_video()
    cross = {
        n: m.processor for n, m in model.named_modules() if getattr(m, "is_cross_attention", 0)
    }
    assert len(cross) == 3
    set_attention(model, "softmax")
    for name, proc in cross.items():
        assert model.get_submodule(name).processor is proc


# -- every variant against the zoo reference on the module's q, k, v -------------------


def _naive_feature_rotary(var, q, k, v, cos, sin, opts):
    """SANA-Video's form from its definition, O(N^2), float64: products of rotated
    features, normaliser of the un-rotated ones. q, k, v: (B, N, H, D)."""
    o = dict(opts)
    eps = o.pop("eps")
    q, k, v = (x.transpose(1, 2).double() for x in (q, k, v))
    phi_q, phi_k = var.feature_fn(q, k, **o)
    cos, sin = (t.transpose(1, 2).double() for t in (cos, sin))
    a = rotate_pairs(phi_q, cos, sin) @ rotate_pairs(phi_k, cos, sin).transpose(-1, -2)
    den = (phi_q @ phi_k.transpose(-1, -2)).sum(-1, keepdim=True)
    return (a @ v) / (den + eps)


@pytest.mark.parametrize("variant", list(az.VARIANTS))
@pytest.mark.parametrize("build", [sana, sana_video, dit], ids=["sana", "sana_video", "dit"])
def test_every_variant_matches_the_zoo_reference(build, variant, monkeypatch):
    model = build()
    grid = (1, 5, 5) if build is dit else None  # DiT's blocks do not say their grid
    set_attention(model, variant, grid=grid)
    calls, rotary = [], []
    real_attention, real_rotary = az.attention, ZooProcessor.attend_rotary

    def attention(q, k, v, **kw):
        out = real_attention(q, k, v, **kw)
        calls.append((q, k, v, kw, out))
        return out

    def attend_rotary(self, q, k, v, rotary_emb):
        out = real_rotary(self, q, k, v, rotary_emb)
        rotary.append((self, q, k, v, rotary_emb, out))
        return out

    monkeypatch.setattr(az, "attention", attention)
    monkeypatch.setattr(ZooProcessor, "attend_rotary", attend_rotary)
    out = run(model)
    assert torch.isfinite(out).all()
    var = az.get(variant)
    feature_rotary = build is sana_video and variant in FEATURE_ROTARY
    assert len(calls) == (0 if feature_rotary else 3)
    for q, k, v, kw, got in calls:
        assert kw["variant"] == variant
        opts = {o: val for o, val in kw.items() if o not in ("variant", "impl")}
        if "grid" in var.defaults:
            derived = (3, 5, 7) if build is sana_video else (1, 5, 7)
            assert opts["grid"] == (grid or derived)
        assert rel_err(got, var.reference(q, k, v, **opts)) < TOL
    if feature_rotary:
        assert len(rotary) == 3
        for proc, q, k, v, (cos, sin), got in rotary:
            ref = _naive_feature_rotary(var, q, k, v, cos, sin, proc.opts)
            assert rel_err(got, ref) < TOL


def test_feature_rotary_variants_keep_the_head_coordinates():
    q, k = torch.randn(2, 1, 2, 7, 12).unbind(0)
    for name in FEATURE_ROTARY:
        var = az.get(name)
        assert var.kind == "linear" and var.feature_fn is not None
        phi_q, _ = var.feature_fn(q, k, **{o: d for o, d in var.defaults.items() if o != "eps"})
        assert phi_q.shape == q.shape


def test_rotate_pairs_is_a_complex_rotation():
    x = torch.randn(2, 7, 3, 8, dtype=torch.float64)
    theta = torch.randn(1, 7, 1, 4, dtype=torch.float64)
    cos = theta.cos().repeat_interleave(2, -1)
    sin = theta.sin().repeat_interleave(2, -1)
    z = torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous()) * torch.polar(
        torch.ones_like(theta), theta
    )
    assert torch.allclose(rotate_pairs(x, cos, sin), torch.view_as_real(z).flatten(-2))


# -- the token grid --------------------------------------------------------------------


def test_grid_is_the_models_patch_grid_and_frames():
    for model, want in ((sana_video(), (3, 5, 7)), (sana(), (1, 5, 7))):
        set_attention(model, "softmax_frame")
        run(model)
        procs = [a[1].processor for b in self_attention_blocks(model) for a in b.attentions]
        assert {p.block_grid.value for p in procs} == {want}


def test_a_fixed_grid_is_used_and_checked():
    model = set_attention(sana_video(), "softmax_frame", grid=(1, 15, 7))
    assert all(len(b.module._forward_pre_hooks) == 0 for b in self_attention_blocks(model))
    run(model)
    set_attention(model, "softmax_frame", grid=(2, 2, 2))
    msg = r"grid from grid=: grid \(2, 2, 2\) holds 8 tokens but the sequence has N=105"
    with pytest.raises(ValueError, match=msg):
        run(model)


def test_setting_again_replaces_the_grid_hooks():
    model = sana_video()
    for _ in range(3):
        set_attention(model, "softmax_frame")
    assert all(len(b.module._forward_pre_hooks) == 1 for b in self_attention_blocks(model))
    set_attention(model, "relu_linear")
    assert all(len(b.module._forward_pre_hooks) == 0 for b in self_attention_blocks(model))


# -- refusals --------------------------------------------------------------------------


def _unknown_processor():
    model = sana()
    model.transformer_blocks[1].attn1.set_processor(AttnProcessor())
    return model


def _cross_only():
    return torch.nn.ModuleList([sana().transformer_blocks[0].attn2])


BAD = [
    ("wrong-length", sana, "L,S", {}, ValueError,
     r"pattern must name one variant per transformer block with self-attention \(3 blocks\), "
     r"got 2: 'L,S'"),
    ("unknown-variant", sana, "L,flash,S", {}, ValueError,
     r"pattern: unknown attention variant 'flash'; known variants: cosformer"),
    ("bad-count", sana, "L*x", {}, ValueError,
     r"pattern entry 'L\*x': the count after '\*' must be a positive int, got 'x'"),
    ("pattern-type", sana, 3, {}, TypeError,
     r"pattern must be a pattern string or a sequence of variant names, got int"),
    ("not-a-module", lambda: "model", "L", {}, TypeError,
     r"model must be a torch.nn.Module \(a diffusers model\), got str"),
    ("no-attention", lambda: torch.nn.Linear(2, 2), "L", {}, ValueError,
     r"model: Linear has no self-attention module with a diffusers processor to swap; "
     r"attention modules found: none"),
    ("cross-only", _cross_only, "L", {}, ValueError,
     r"model: ModuleList has no self-attention module .*found: 0 \(SanaAttnProcessor2_0\)"),
    ("unknown-processor", _unknown_processor, "L", {}, ValueError,
     r"model: self-attention module 'transformer_blocks.1.attn1' of SanaTransformer2DModel "
     r"runs AttnProcessor, whose steps this does not know; known processors: AttnProcessor2_0"),
    ("no-grid", dit, "S,softmax_frame,S", {}, ValueError,
     r"pattern: block 1 \(transformer_blocks.1\) is softmax_frame, which needs the token grid "
     r"\(T, H, W\), and BasicTransformerBlock.forward takes no height and width to read it "
     r"from; pass grid=\(T, H, W\)"),
    ("bad-grid", sana, "softmax_frame", {"grid": (3, 0, 2)}, ValueError,
     r"grid must hold positive ints, got \(3, 0, 2\)"),
    ("impl", sana, "L", {"impl": "ane"}, ValueError,
     r"impl must be one of \('auto', 'reference', 'fast', 'triton'\), got 'ane'"),
    ("impl-rotary", sana_video, "S,L,S", {"impl": "triton"}, ValueError,
     r"impl: under SanaLinearAttnProcessor3_0 relu_linear runs one exact PyTorch form"),
    ("opts-type", sana, "L", {"opts": [1]}, TypeError,
     r"opts must be a dict \{variant: \{option: value\}\}, got list"),
    ("opts-variant", sana, "L", {"opts": {"flash": {}}}, ValueError,
     r"opts: unknown attention variant 'flash'"),
    ("opts-option", sana, "L", {"opts": {"L": {"p": 2}}}, ValueError,
     r"variant 'relu_linear' does not take option\(s\) p; it accepts: eps"),
    ("opts-eps", sana, "L", {"opts": {"relu_linear": {"eps": -1}}}, ValueError, r"eps"),
    ("opts-grid", sana, "softmax_frame", {"opts": {"softmax_frame": {"grid": (1, 5, 7)}}},
     ValueError, r"opts\['softmax_frame'\]: grid is the model's token grid, not an option"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "pattern", "kw", "exc", "match"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_refusals_name_the_problem_and_change_nothing(build, pattern, kw, exc, match):
    model = build()
    try:
        before = attention_pattern(model)
    except (TypeError, ValueError):
        before = None
    with pytest.raises(exc, match=match):
        set_attention(model, pattern, **kw)
    if before is not None:
        assert attention_pattern(model) == before


def test_a_mask_encoder_states_or_missing_rotary_are_refused():
    model = set_attention(sana_video(), "softmax")
    attn = model.transformer_blocks[0].attn1
    x = torch.randn(1, 6, 24)
    mask = r"attention_mask: zoo variants .* take no mask; got a mask of shape \(1, 6\)"
    with pytest.raises(ValueError, match=mask):
        attn(x, attention_mask=torch.ones(1, 6))
    with pytest.raises(ValueError, match=r"encoder_hidden_states: .* self-attention only"):
        attn(x, encoder_hidden_states=x)
    with pytest.raises(ValueError, match=r"rotary_emb: SANA-Video's self-attention needs"):
        attn(x)
    with pytest.raises(ValueError, match=r"recipe must be a diffusers processor this knows"):
        ZooProcessor("softmax", AttnProcessor())
    with pytest.raises(KeyError, match="unknown attention variant 'flash'"):
        ZooProcessor("flash", "AttnProcessor2_0")


def test_the_zoo_imports_without_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "import attention_zoo, attention_zoo.diffusers as d\n"
        "assert 'relu_linear' in attention_zoo.VARIANTS and d.set_attention\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# -- export ----------------------------------------------------------------------------


def test_onnx_export_of_a_zoo_pattern_runs_under_onnxruntime(tmp_path):
    from export import to_onnx
    from export.onnx import session

    model = set_attention(sana_video(), "L,softmax_frame,S")
    x, text, t = inputs_for(model)
    ref = run(model)
    path = to_onnx(model, (x, text, t), tmp_path / "sana_video.onnx")
    names = ("hidden_states", "encoder_hidden_states", "timestep")
    feed = {n: a.numpy() for n, a in zip(names, (x, text, t), strict=True)}
    out = session(path).run(None, feed)[0]
    assert rel_err(torch.from_numpy(out), ref) < TOL


# -- latency tables --------------------------------------------------------------------

TINY = {**SANA_VIDEO, "num_layers": 2}


@pytest.mark.parametrize("backend", ["torch-cpu", "onnxruntime-cpu"])
def test_block_and_model_tables_read_like_the_presets(backend):
    from bench import diffusers_latency as dl
    from bench.latency import per_block_latency

    cls = SanaVideoTransformer3DModel
    common = {"text_tokens": 3, "progress": False}
    blocks = dl.block_table(cls, TINY, (2, 3, 4), backend, ["softmax", "relu_linear"], 1, **common)
    assert blocks["depth"] == 2 and blocks["N"] == 24 and blocks["backend"] == backend
    assert [r["variant"] for r in blocks["variants"]] == ["softmax", "relu_linear"]
    for r in [*blocks["variants"], blocks["overhead"]]:
        assert 0 < r["ci_low_ms"] <= r["median_ms"] <= r["ci_high_ms"]
        assert r["p10_ms"] <= r["p90_ms"]
    per = {r["variant"]: r["median_ms"] for r in blocks["variants"]}
    assert per_block_latency(blocks) == [per, per]
    if backend == "onnxruntime-cpu":
        assert blocks["runtime"]["allow_spinning"] == 0
        return
    models = dl.model_table(cls, TINY, (2, 3, 4), backend, ["L,S", "S"], blocks, 1, **common)
    assert [m["pattern"] for m in models["models"]] == ["relu_linear,softmax", "softmax*2"]
    for m in models["models"]:
        want = blocks["overhead"]["median_ms"] + sum(per[a] for a in m["attention"])
        assert m["predicted_ms"] == pytest.approx(want)
        assert math.isfinite(m["prediction_error"])


def test_block_stack_runs_the_models_first_blocks():
    """A stack of all blocks, fed what the model passes its first block, gives the model's
    hidden states after its blocks."""
    from bench import diffusers_latency as dl

    model = set_attention(sana_video(), "L,softmax_frame,S")
    inputs = inputs_for(model)
    call = dl.first_block_call(model, inputs)
    stack = dl.BlockStack(list(model.transformer_blocks), call)
    after = []
    handle = model.norm_out.register_forward_pre_hook(lambda m, a: after.append(a[0]))
    run(model)
    handle.remove()
    with torch.no_grad():
        assert rel_err(stack(*stack.inputs()), after[0]) < TOL


def test_closing_note_run_writes_its_table(tmp_path, capsys):
    from bench import diffusers_latency as dl

    out = tmp_path / "dl.json"
    argv = ["--size", "tiny", "--backends", "torch-cpu", "--repeats", "1", "--model-repeats", "1"]
    assert dl.main([*argv, "--no-progress", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["machine"]["load_average_1min"] is not None and res["gemm_gflops"] > 0
    assert set(res["runs"]["torch-cpu"]) == {"diffusers", "ours"}
    got = {(r["model"], r["pattern"]) for r in res["summary"]}
    assert {("diffusers", "softmax*2"), ("ours", "relu_linear*2")} <= got
    assert "sum of blocks ms" in capsys.readouterr().out


# -- the command line ------------------------------------------------------------------


def test_bench_command_on_a_diffusers_model(tmp_path, capsys):
    from mobileattn.cli import main

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({"_class_name": "SanaVideoTransformer3DModel", **TINY}))
    out = tmp_path / "lat.json"
    argv = ["bench", "--model", "diffusers:SanaVideoTransformer3DModel", "--config", str(cfg)]
    argv += ["--grid", "2x3x4", "--variants", "softmax,relu_linear", "--patterns", "L,S"]
    argv += ["--repeats", "1", "--model-repeats", "1", "--text-tokens", "3", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["blocks"]["model"] == "diffusers:SanaVideoTransformer3DModel"
    assert [r["pattern"] for r in table["models"]["models"]] == ["relu_linear,softmax"]
    assert "95% CI ms" in capsys.readouterr().out


MODEL = ["--model", "diffusers:SanaVideoTransformer3DModel"]
GOOD = ["--config", "{tmp}/good.json"]
CLI_BAD = [
    ("no-config", MODEL, r"--model needs --config CONFIG.json"),
    ("with-preset", [*MODEL, *GOOD, "--preset", "tiny"], r"--preset and --model do not go"),
    ("class", ["--model", "diffusers:FluxTransformer2DModel", *GOOD],
     r"--model must be diffusers:CLASS with CLASS one of SanaVideoTransformer3DModel, "
     r"SanaTransformer2DModel"),
    ("missing", [*MODEL, "--config", "{tmp}/none.json"], r"--config: no such file '.*none.json'"),
    ("broken", [*MODEL, "--config", "{tmp}/broken.json"],
     r"--config: '.*broken.json' is not valid JSON"),
    ("list", [*MODEL, "--config", "{tmp}/list.json"],
     r"--config must be a JSON object of SanaVideoTransformer3DModel's arguments, got list"),
    ("unknown-key", [*MODEL, "--config", "{tmp}/unknown.json"],
     r"--config: SanaVideoTransformer3DModel takes no heads; it takes attention_bias"),
    ("image-grid", ["--model", "diffusers:SanaTransformer2DModel", "--config", "{tmp}/sana.json"],
     r"--grid: SanaTransformer2DModel is an image model, so T must be 1, got \(2, 3, 4\)"),
    ("patterns", [*MODEL, *GOOD, "--patterns", "L,S,S"],
     r"--patterns: pattern must name one variant per transformer block with self-attention "
     r"\(2 blocks\), got 3"),
    ("text-tokens", [*MODEL, *GOOD, "--text-tokens", "0"], r"--text-tokens must be >= 1, got 0"),
    ("config-alone", ["--config", "x.json"], r"--config goes with --model diffusers:CLASS"),
    ("gemm-probe", [*MODEL, *GOOD, "--gemm-probe", "64"],
     r"--gemm-probe goes with a preset: a diffusers model has no analytic FLOP count"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "match"), [c[1:] for c in CLI_BAD], ids=[c[0] for c in CLI_BAD])
def test_bench_command_refusals(args, match, tmp_path, capsys, monkeypatch):
    import bench.diffusers_latency
    from mobileattn.cli import main

    def trip(*a, **k):
        raise AssertionError("validation let the case through to timing")

    monkeypatch.setattr(bench.diffusers_latency, "block_table", trip)
    (tmp_path / "good.json").write_text(json.dumps(TINY))
    (tmp_path / "sana.json").write_text(json.dumps({**SANA, "num_layers": 2}))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "unknown.json").write_text(json.dumps({**TINY, "heads": 2}))
    argv = ["bench", "--grid", "2x3x4", *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err


# -- the README section runs as written ------------------------------------------------


def test_readme_section_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it on your diffusers model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:  # in order, sharing names, as a reader pastes them
        exec(compile(code, "README.md", "exec"), namespace)
