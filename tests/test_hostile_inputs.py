"""Hostile inputs to every public entry point, as one table: each malformed call must raise
the stated exception type with a message that names the argument and what was expected
(the CLI: exit code 2 and that message on one line of stderr, no traceback).

Entry points: the zoo (az.get, az.attention, Variant.reference / triton / ane, flops,
bytes), the model config (DiTConfig fields, parse_pattern, PRESETS), HybridDiT's forward,
the sampler, the exporters (to_onnx, to_coreml), ane_lint, run_mil, the search, the data
(seeds, motion, codec), the quality harness (load_model), the study config (the JSON files
of `mobileattn run --config`) and every CLI command's flags. Many cases also live in the
module's own tests; this file is the one table. CLI cases run in-process with tripwires
on every heavy stage, so a flag that slips through validation fails fast instead of
starting a study.
"""
# ruff: noqa: E501  (the table reads best one case a line, as tests/test_zoo_errors.py)

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import attention_zoo as az
from export import ane_lint, run_mil, to_coreml, to_onnx
from export.mil import MILFormatError
from hybrid_dit import PRESETS, DiTConfig, HybridDiT, parse_pattern, sample, to_ane
from mobileattn.cli import main
from study import search as S
from study import task as D
from study.driver import StudyConfig
from study.models import load_model

TINY = PRESETS["tiny"]  # in_channels 4, depth 2, hidden 32 = 2 x 16, attention L,S


@dataclass
class Ctx:
    """What the cases call into: a tiny model and its inputs, files of every kind."""

    tmp: Path
    model: HybridDiT
    pkg: Path  # a valid Core ML package: relu_linear's ANE form, q, k, v (1, 32, 1, 8)

    def x(self, *shape, dtype=torch.float32):
        return torch.zeros(*shape, dtype=dtype)

    @property
    def xt(self):
        return torch.randn(1, 4, 2, 3, 4)

    @property
    def ff(self):
        return torch.randn(1, 4, 3, 4)

    @property
    def qkv(self):
        return [torch.randn(1, 2, 8, 16) for _ in range(3)]


class _Ane(torch.nn.Module):
    def forward(self, q, k, v):
        return az.get("relu_linear").ane(q, k, v, 2)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    tmp = tmp_path_factory.mktemp("hostile")
    ex = tuple(torch.randn(1, 32, 1, 8) for _ in range(3))
    pkg = to_coreml(_Ane(), ex, tmp / "attn.mlpackage", precision="fp32")
    (tmp / "notpkg").mkdir()
    (tmp / "text.txt").write_text("not a package")
    corrupt = tmp / "corrupt.mlpackage"
    corrupt.mkdir()
    (corrupt / "Manifest.json").write_text("{not json")
    (tmp / "junk.safetensors").write_bytes(b"junk")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp / "nometa.safetensors"))
    save_file(
        {"a": torch.zeros(2)},
        str(tmp / "badcfg.safetensors"),
        metadata={"config": json.dumps({"hidden": 3})},
    )
    save_file(
        {"a": torch.zeros(2)},
        str(tmp / "badstate.safetensors"),
        metadata={"config": json.dumps(TINY.to_dict())},
    )
    for name, text in {
        "list.json": "[1]",
        "broken.json": "{x",
        "unknown.json": '{"foo": 1}',
        "notes.json": '{"notes": 3}',
        "grid.json": '{"latency_grid": "2x3x4"}',
        "variants.json": '{"variants": ["flash"]}',
        "nosoftmax.json": '{"variants": ["relu_linear"]}',
        "repeats.json": '{"block_repeats": 0}',
        "eval.json": '{"eval_ts": [0, 2]}',
        "budget.json": '{"budget": "fast"}',
        "backends.json": '{"backends": ["tpu"]}',
        "export.json": '{"export": "yes"}',
        "teacher.json": '{"teacher": 3}',
        "lat.json": '{"blocks": 3}',
        "q.json": '{"teacher": {}}',
    }.items():
        (tmp / name).write_text(text)
    (tmp / "afile").write_text("x")
    torch.manual_seed(0)
    return Ctx(tmp=tmp, model=HybridDiT(TINY).eval(), pkg=pkg)


@dataclass
class Case:
    id: str
    call: Any  # ctx -> result (an API case), or ctx -> argv (a CLI case)
    exc: type[BaseException] | None  # None: a CLI case
    match: str


def api(id_, call, exc, match):
    return Case(id_, call, exc, match)


def cli(id_, argv, match):
    return Case(f"cli-{id_}", argv, None, match)


def _t(c, *rest):
    return torch.tensor([0.5])


CASES = [
    # -- the zoo --------------------------------------------------------------------------
    api("az.get-int", lambda c: az.get(3), TypeError, r"variant must be a str, got int"),
    api("az.get-unknown", lambda c: az.get("flash"), KeyError, r"unknown attention variant 'flash'; known variants: .*softmax"),
    api("attention-impl", lambda c: az.attention(*c.qkv, impl="cuda"), ValueError, r"impl must be one of .*'auto'.*got 'cuda'"),
    api("attention-variant-none", lambda c: az.attention(*c.qkv, variant=None), TypeError, r"variant must be a str, got NoneType"),
    api("attention-ane-heads", lambda c: az.attention(*c.qkv, impl="ane"), ValueError, r"impl='ane' .*needs heads="),
    api("reference-q-numpy", lambda c: az.get("softmax").reference(c.qkv[0].numpy(), *c.qkv[1:]), TypeError, r"q must be a torch.Tensor, got ndarray"),
    api("reference-complex", lambda c: az.get("softmax").reference(*(t.to(torch.complex64) for t in c.qkv)), TypeError, r"q must have a floating dtype .*complex64"),
    api("reference-rank", lambda c: az.get("relu_linear").reference(c.qkv[0][0], *c.qkv[1:]), ValueError, r"q must have rank 4"),
    api("reference-option", lambda c: az.get("softmax").reference(*c.qkv, heads=2), ValueError, r"does not take option\(s\) heads; it accepts: scale, chunk"),
    api("reference-chunk", lambda c: az.get("softmax").reference(*c.qkv, chunk=0), ValueError, r"chunk must be >= 1, got 0"),
    api("reference-eps", lambda c: az.get("relu_linear").reference(*c.qkv, eps=-1.0), ValueError, r"eps must be >= 0, got -1.0"),
    api("reference-grid", lambda c: az.get("softmax_frame").reference(*c.qkv, grid=(3, 1, 1)), ValueError, r"grid \(3, 1, 1\) holds 3 tokens but the sequence has N=8"),
    api("triton-positional", lambda c: az.get("softmax").triton(*c.qkv, 2), TypeError, r"triton form is called as fn\(q, k, v, \*\*opts\)"),
    api("triton-float64", lambda c: az.get("softmax").triton(*(t.double() for t in c.qkv)), TypeError, r"float16, bfloat16 or float32, got torch.float64"),
    api("triton-head-dim", lambda c: az.get("relu_linear").triton(*(t[..., :8] for t in c.qkv)), ValueError, r"head dim D must be in \[16, 128\], got D=8"),
    api("ane-no-heads", lambda c: az.get("softmax").ane(*c.qkv), TypeError, r"ane form is called as ane\(q, k, v, heads"),
    api("ane-layout", lambda c: az.get("softmax").ane(*c.qkv, 2), ValueError, r"q must be channels-first \(B, H\*D, 1, N\)"),
    api("ane-heads-zero", lambda c: az.get("softmax").ane(*(c.x(1, 32, 1, 8) for _ in range(3)), 0), ValueError, r"heads must be a positive int, got 0"),
    api("ane-heads-str", lambda c: az.get("softmax").ane(*(c.x(1, 32, 1, 8) for _ in range(3)), "2"), ValueError, r"heads must be a positive int, got '2'"),
    api("ane-heads-divide", lambda c: az.get("softmax").ane(*(c.x(1, 32, 1, 8) for _ in range(3)), 3), ValueError, r"q's channels \(32\) must be divisible by heads=3"),
    api("flops-zero", lambda c: az.get("softmax").flops(0, 1, 2, 3), ValueError, r"B must be a positive int, got 0"),
    api("flops-float", lambda c: az.get("softmax").flops(1, 1, 2.5, 3), ValueError, r"N must be a positive int, got 2.5"),
    api("flops-bool", lambda c: az.get("softmax").flops(1, True, 2, 3), ValueError, r"H must be a positive int, got True"),
    api("flops-grid", lambda c: az.get("softmax_frame").flops(1, 1, 12, 3), ValueError, r"variant 'softmax_frame' needs option grid="),
    api("bytes-dtype-str", lambda c: az.get("softmax").bytes(1, 1, 2, 3, "fp16"), TypeError, r"dtype must be a torch.dtype, got str 'fp16'"),
    api("bytes-option", lambda c: az.get("softmax").bytes(1, 1, 2, 3, eps=1.0), ValueError, r"does not take option\(s\) eps"),
    # -- the model config -----------------------------------------------------------------
    api("config-hidden-str", lambda c: TINY.replace(hidden="32"), TypeError, r"DiTConfig.hidden must be an int, got str '32'"),
    api("config-depth-zero", lambda c: TINY.replace(depth=0), ValueError, r"DiTConfig.depth must be >= 1, got 0"),
    api("config-heads", lambda c: TINY.replace(heads=3), ValueError, r"DiTConfig.head_dim: heads \* head_dim must equal hidden \(32\)"),
    api("config-mlp-nan", lambda c: TINY.replace(mlp_ratio=float("nan")), ValueError, r"DiTConfig.mlp_ratio must be finite and > 0, got nan"),
    api("config-head-dim-small", lambda c: DiTConfig(4, 1, 8, 1, 2, 4, 2.0, "softmax"), ValueError, r"DiTConfig.head_dim must be >= 6"),
    api("config-freq-odd", lambda c: TINY.replace(freq_dim=7), ValueError, r"DiTConfig.freq_dim must be even"),
    api("config-bool", lambda c: TINY.replace(qk_norm=1), TypeError, r"DiTConfig.qk_norm must be a bool, got int 1"),
    api("config-attention-length", lambda c: TINY.replace(attention=("softmax",)), ValueError, r"DiTConfig.attention must name one variant per block \(depth=2\), got 1"),
    api("config-attention-unknown", lambda c: TINY.replace(attention="flash"), ValueError, r"DiTConfig.attention: unknown attention variant 'flash'"),
    api("config-attention-int", lambda c: TINY.replace(attention=3), TypeError, r"DiTConfig.attention must be a pattern string or a sequence of variant names, got int"),
    api("config-impl", lambda c: TINY.replace(attention_impl="cuda"), ValueError, r"DiTConfig.attention_impl must be one of .*got 'cuda'"),
    api("config-opts-type", lambda c: TINY.replace(attention_opts=3), TypeError, r"DiTConfig.attention_opts must be a dict"),
    api("config-opts-inner", lambda c: TINY.replace(attention_opts={"softmax": 3}), TypeError, r"DiTConfig.attention_opts\['softmax'\] must be a dict \{option: value\}, got int 3"),
    api("config-opts-pairs", lambda c: TINY.replace(attention_opts={"softmax": [1, 2]}), TypeError, r"DiTConfig.attention_opts\['softmax'\] must be a dict \{option: value\}, got \[1, 2\]"),
    api("config-opts-option", lambda c: TINY.replace(attention_opts={"softmax": {"eps": 1}}), ValueError, r"DiTConfig.attention_opts\['softmax'\]: variant 'softmax' does not take option\(s\) eps"),
    api("config-opts-grid", lambda c: TINY.replace(attention_opts={"softmax_frame": {"grid": (1, 1, 1)}}), ValueError, r"attention_opts\['softmax_frame'\]: grid is set by the model"),
    api("config-unknown-field", lambda c: TINY.replace(width=3), TypeError, r"unexpected keyword argument 'width'"),
    api("config-from-dict-list", lambda c: DiTConfig.from_dict([1]), TypeError, r"config must be a dict, got list"),
    api("config-from-dict-unknown", lambda c: DiTConfig.from_dict({**TINY.to_dict(), "x": 1}), ValueError, r"config has unknown field\(s\): x"),
    api("pattern-empty", lambda c: parse_pattern(""), ValueError, r"attention pattern must be comma-separated NAME or NAME\*K entries, got ''"),
    api("pattern-count", lambda c: parse_pattern("L*0"), ValueError, r"entry 'L\*0': the count after '\*' must be a positive int, got '0'"),
    api("pattern-depth", lambda c: parse_pattern("L,S", depth=3), ValueError, r"must name one variant per block \(depth=3\), got 2"),
    api("pattern-none", lambda c: parse_pattern(None), TypeError, r"attention must be a pattern string or a sequence of variant names, got NoneType"),
    api("pattern-entry-int", lambda c: parse_pattern([1, 2]), TypeError, r"attention entries must be str, got int 1"),
    api("presets-unknown", lambda c: PRESETS["huge"], KeyError, r"huge"),
    api("presets-frozen", lambda c: setattr(PRESETS["tiny"], "depth", 3), AttributeError, r"cannot assign to field 'depth'"),
    # -- HybridDiT ------------------------------------------------------------------------
    api("model-cfg-dict", lambda c: HybridDiT({"hidden": 32}), TypeError, r"cfg must be a DiTConfig, got dict"),
    api("forward-x-4d", lambda c: c.model(c.x(1, 4, 3, 4), 0.5), ValueError, r"x_t must be a latent video \(B, C=4, T, H, W\), got shape \(1, 4, 3, 4\)"),
    api("forward-x-channels", lambda c: c.model(c.x(1, 3, 2, 3, 4), 0.5), ValueError, r"x_t must be a latent video \(B, C=4, T, H, W\)"),
    api("forward-x-int", lambda c: c.model(c.x(1, 4, 2, 3, 4, dtype=torch.int64), 0.5), TypeError, r"x_t must have a floating dtype, got torch.int64"),
    api("forward-x-empty", lambda c: c.model(c.x(1, 4, 0, 3, 4), 0.5), ValueError, r"x_t must have no empty dimension"),
    api("forward-x-dtype", lambda c: c.model(c.xt.double(), 0.5), TypeError, r"x_t must have the model's dtype torch.float32 .*got torch.float64"),
    api("forward-x-device", lambda c: c.model(torch.empty(1, 4, 2, 3, 4, device="meta"), 0.5), ValueError, r"x_t must be on the model's device cpu, got meta"),
    api("forward-grid", lambda c: HybridDiT(TINY.replace(patch_size=2)).eval()(c.xt, 0.5), ValueError, r"x_t: latent height and width must be divisible by patch_size=2, got H=3, W=4"),
    api("forward-t-shape", lambda c: c.model(c.xt, torch.tensor([0.5, 0.5])), ValueError, r"t must be a scalar or have shape \(1,\), got \(2,\)"),
    api("forward-t-str", lambda c: c.model(c.xt, "0.5"), TypeError, r"t must be a float or a tensor of shape \(B,\), got str"),
    api("forward-first-frame", lambda c: c.model(c.xt, 0.5, c.x(1, 4, 3, 5)), ValueError, r"first_frame must be the clean first latent frame of shape \(1, 4, 3, 4\), got \(1, 4, 3, 5\)"),
    api("forward-first-frame-numpy", lambda c: c.model(c.xt, 0.5, np.zeros((1, 4, 3, 4))), TypeError, r"first_frame must be a torch.Tensor or None, got ndarray"),
    api("forward-motion", lambda c: c.model(c.xt, 0.5, c.ff, torch.ones(3)), ValueError, r"motion must be a scalar or have shape \(1,\), got \(3,\)"),
    api("twin-x-dtype", lambda c: to_ane(c.model)(c.xt.double(), 0.5), TypeError, r"x_t must have the model's dtype torch.float32"),
    api("to-ane-junk", lambda c: to_ane("model"), TypeError, r"model must be a HybridDiT, got str"),
    # -- the sampler ----------------------------------------------------------------------
    api("sample-steps-zero", lambda c: sample(c.model, c.ff, 0.3, 0, (2, 3, 4)), ValueError, r"steps must be a positive int, got 0"),
    api("sample-steps-float", lambda c: sample(c.model, c.ff, 0.3, 1.5, (2, 3, 4)), ValueError, r"steps must be a positive int, got 1.5"),
    api("sample-grid-short", lambda c: sample(c.model, c.ff, 0.3, 1, (3, 4)), ValueError, r"grid must be a token grid \(T, H, W\) of 3 positive ints, got \(3, 4\)"),
    api("sample-grid-wrong", lambda c: sample(c.model, c.ff, 0.3, 1, (2, 5, 4)), ValueError, r"first_frame must have shape \(B, C, H, W\) = \(B, 4, 5, 4\) for grid \(2, 5, 4\)"),
    api("sample-first-frame-5d", lambda c: sample(c.model, c.xt, 0.3, 1, (2, 3, 4)), ValueError, r"first_frame must have shape \(B, C, H, W\)"),
    api("sample-first-frame-int", lambda c: sample(c.model, c.ff.long(), 0.3, 1, (2, 3, 4)), TypeError, r"first_frame must have a floating dtype, got torch.int64"),
    api("sample-noise-shape", lambda c: sample(c.model, c.ff, 0.3, 1, (2, 3, 4), noise=c.x(1, 4, 2, 3, 5)), ValueError, r"noise must be a tensor of shape \(1, 4, 2, 3, 4\), got \(1, 4, 2, 3, 5\)"),
    api("sample-noise-list", lambda c: sample(c.model, c.ff, 0.3, 1, (2, 3, 4), noise=[1]), ValueError, r"noise must be a tensor of shape \(1, 4, 2, 3, 4\), got list"),
    api("sample-generator", lambda c: sample(c.model, c.ff, 0.3, 1, (2, 3, 4), generator=0), TypeError, r"generator must be a torch.Generator, got int"),
    api("sample-model", lambda c: sample(lambda *a: a[0], c.ff, 0.3, 1, (2, 3, 4)), TypeError, r"model must be a HybridDiT or its twin, got function"),
    api("sample-motion", lambda c: sample(c.model, c.ff, "fast", 1, (2, 3, 4)), TypeError, r"motion must be a float or a tensor of shape \(B,\), got str"),
    # -- exporters ------------------------------------------------------------------------
    api("onnx-model", lambda c: to_onnx("m", (c.xt,), c.tmp / "a.onnx"), TypeError, r"model must be a torch.nn.Module, got str"),
    api("onnx-inputs-none", lambda c: to_onnx(c.model, None, c.tmp / "a.onnx"), TypeError, r"example_inputs must be a non-empty tuple of tensors"),
    api("onnx-inputs-numpy", lambda c: to_onnx(c.model, (c.xt.numpy(),), c.tmp / "a.onnx"), TypeError, r"example_inputs\[0\] must be a torch.Tensor .*got ndarray"),
    api("onnx-inputs-many", lambda c: to_onnx(c.model, (c.xt,) * 5, c.tmp / "a.onnx"), ValueError, r"example_inputs has 5 tensors but HybridDiT.forward takes 4 positional arguments"),
    api("onnx-inputs-shape", lambda c: to_onnx(c.model, (c.x(1, 3, 2, 3, 4), _t(c)), c.tmp / "a.onnx"), ValueError, r"example_inputs rejected by the model: x_t must be a latent video"),
    api("onnx-suffix", lambda c: to_onnx(c.model, (c.xt, _t(c)), c.tmp / "a.onx"), ValueError, r"path must end in .onnx, got '.*a.onx'"),
    api("onnx-folder", lambda c: to_onnx(c.model, (c.xt, _t(c)), c.tmp / "nope" / "a.onnx"), FileNotFoundError, r"path's folder does not exist: '.*nope'"),
    api("onnx-path-int", lambda c: to_onnx(c.model, (c.xt, _t(c)), 3), TypeError, r"path must be a str or os.PathLike, got int"),
    api("onnx-opset", lambda c: to_onnx(c.model, (c.xt, _t(c)), c.tmp / "a.onnx", opset=5), ValueError, r"opset must be >= 18 \(dynamo exporter\), got 5"),
    api("onnx-opset-str", lambda c: to_onnx(c.model, (c.xt, _t(c)), c.tmp / "a.onnx", opset="20"), TypeError, r"opset must be an int or None, got str"),
    api("onnx-external-data", lambda c: to_onnx(c.model, (c.xt, _t(c)), c.tmp / "a.onnx", external_data="yes"), TypeError, r"external_data must be a bool or None, got 'yes'"),
    api("coreml-module", lambda c: to_coreml("m", (c.xt,), c.tmp / "a.mlpackage"), TypeError, r"module must be a torch.nn.Module, got str"),
    api("coreml-precision", lambda c: to_coreml(c.model, (c.xt,), c.tmp / "a.mlpackage", precision="int8"), ValueError, r"precision must be one of \('fp16', 'fp32'\), got 'int8'"),
    api("coreml-target", lambda c: to_coreml(c.model, (c.xt, _t(c)), c.tmp / "a.mlpackage", target="iOS13"), ValueError, r"target must be one of iOS15, .* got 'iOS13'"),
    api("coreml-target-int", lambda c: to_coreml(c.model, (c.xt, _t(c)), c.tmp / "a.mlpackage", target=16), TypeError, r"target must be a str or coremltools.target, got int"),
    api("coreml-suffix", lambda c: to_coreml(c.model, (c.xt, _t(c)), c.tmp / "a.mlmodel"), ValueError, r"path must end in .mlpackage .*got '.*a.mlmodel'"),
    api("coreml-path-none", lambda c: to_coreml(c.model, (c.xt, _t(c)), None), TypeError, r"path must be a str or os.PathLike, got NoneType"),
    api("coreml-inputs-str", lambda c: to_coreml(c.model, "x", c.tmp / "a.mlpackage"), TypeError, r"example_inputs must be a tuple or list of tensors"),
    api("coreml-inputs-many", lambda c: to_coreml(c.model, (c.xt,) * 5, c.tmp / "a.mlpackage"), ValueError, r"example_inputs must match module.forward\(x_t, t, first_frame, motion\): expected 2..4 tensors, got 5"),
    api("coreml-inputs-shape", lambda c: to_coreml(c.model, (c.x(1, 3, 2, 3, 4), _t(c)), c.tmp / "a.mlpackage"), ValueError, r"x_t must be a latent video"),
    # -- ANE lint and the MIL interpreter -------------------------------------------------
    api("lint-missing", lambda c: ane_lint(c.tmp / "missing.mlpackage"), FileNotFoundError, r"no Core ML package at '.*missing.mlpackage'"),
    api("lint-not-a-package", lambda c: ane_lint(c.tmp / "notpkg"), MILFormatError, r"notpkg is not an .mlpackage: it has no Manifest.json"),
    api("lint-a-file", lambda c: ane_lint(c.tmp / "text.txt"), MILFormatError, r"text.txt is not an .mlpackage folder"),
    api("lint-corrupt", lambda c: ane_lint(c.tmp / "corrupt.mlpackage"), MILFormatError, r"corrupt.mlpackage: Manifest.json is corrupt"),
    api("lint-int", lambda c: ane_lint(3), TypeError, r"expected a path to an .mlpackage, a coremltools MLModel or a Model spec, got int"),
    api("mil-missing", lambda c: run_mil(c.tmp / "missing.mlpackage", {}), FileNotFoundError, r"no Core ML package at"),
    api("mil-corrupt", lambda c: run_mil(c.tmp / "corrupt.mlpackage", {}), MILFormatError, r"Manifest.json is corrupt"),
    api("mil-precision", lambda c: run_mil(c.pkg, {}, precision="int8"), ValueError, r"precision must be one of \('fp16', 'fp32'\), got 'int8'"),
    api("mil-inputs-type", lambda c: run_mil(c.pkg, [1, 2, 3]), TypeError, r"inputs must be a dict \{name: array\}, got list"),
    api("mil-inputs-missing", lambda c: run_mil(c.pkg, {"q": np.zeros((1, 32, 1, 8))}), ValueError, r"inputs: missing 'k', 'v'; the program takes: q"),
    api("mil-inputs-unknown", lambda c: run_mil(c.pkg, {n: np.zeros((1, 32, 1, 8)) for n in "qkvx"}), ValueError, r"inputs: unknown 'x'"),
    api("mil-inputs-shape", lambda c: run_mil(c.pkg, {n: np.zeros((1, 32, 1, 9)) for n in "qkv"}), ValueError, r"input 'q' must have shape \(1, 32, 1, 8\), got \(1, 32, 1, 9\)"),
    api("mil-inputs-dtype", lambda c: run_mil(c.pkg, {n: np.array([["a"]]) for n in "qkv"}), TypeError, r"input 'q' must be numeric, got dtype <U1"),
    # -- search ---------------------------------------------------------------------------
    api("search-empty", lambda c: S.search([], []), ValueError, r"latency table is empty: it needs one entry per block"),
    api("search-str", lambda c: S.search("x", "y"), TypeError, r"latency must be a sequence \(one mapping variant -> value per block\), got str"),
    api("search-rows", lambda c: S.search([{"a": 1.0}], [{"a": 0.0}] * 2), ValueError, r"latency and quality tables must have one entry per block each; got 1 latency rows and 2 quality rows"),
    api("search-nan", lambda c: S.search([{"a": float("nan")}], [{"a": 0.0}]), ValueError, r"latency\[0\]\['a'\] must be finite, got nan"),
    api("search-negative", lambda c: S.search([{"a": -1.0}], [{"a": 0.0}]), ValueError, r"latency\[0\]\['a'\] must be >= 0 ms, got -1.0"),
    api("search-value-str", lambda c: S.search([{"a": "1"}], [{"a": 0.0}]), TypeError, r"latency\[0\]\['a'\] must be a real number, got str"),
    api("search-row-int", lambda c: S.search([3], [{"a": 0.0}]), TypeError, r"latency\[0\] must be a mapping variant -> value, got int"),
    api("search-variants", lambda c: S.search([{"a": 1.0}], [{"b": 0.0}]), ValueError, r"block 0: the latency and quality tables name different variants"),
    api("search-budget", lambda c: S.search([{"a": 1.0}], [{"a": 0.0}], budget="fast"), ValueError, r"budget must be milliseconds \('40ms'\), .*got 'fast'"),
    api("search-budget-infeasible", lambda c: S.search([{"a": 1.0}], [{"a": 0.0}], budget="0.1ms"), ValueError, r"budget 0.1ms = 0.1 ms is infeasible: the fastest config takes 1 ms"),
    api("search-allowed-str", lambda c: S.pareto_front([{"a": 1.0}], [{"a": 0.0}], allowed="a"), TypeError, r"allowed must be a collection of variant names, not a single string"),
    api("search-config", lambda c: S.config_totals([{"a": 1.0}], [{"a": 0.0}], ["a", "a"]), ValueError, r"config must name one variant per block \(1\), got 2"),
    api("budget-none", lambda c: S.Budget.parse(None), TypeError, r"budget must be a string such as '40ms' or '0.5x', got NoneType"),
    api("spearman-short", lambda c: S.spearman([1], [2]), ValueError, r"spearman needs at least 2 pairs, got 1"),
    # -- data -----------------------------------------------------------------------------
    api("data-seeds-empty", lambda c: D.make_batch([], [], 2, 8, 8), ValueError, r"seeds must name at least one clip"),
    api("data-seed-negative", lambda c: D.make_batch([-1], [0.5], 2, 8, 8), ValueError, r"seed must be a non-negative int, got -1"),
    api("data-seed-float", lambda c: D.make_batch([1.5], [0.5], 2, 8, 8), ValueError, r"seed must be a non-negative int, got 1.5"),
    api("data-motion-range", lambda c: D.make_batch([1], [2.0], 2, 8, 8), ValueError, r"motion must be in \[0, 1\], got 2.0"),
    api("data-motion-str", lambda c: D.make_batch([1], ["x"], 2, 8, 8), TypeError, r"motion must be a real number in \[0, 1\], got 'x'"),
    api("data-motions-length", lambda c: D.make_batch([1, 2], [0.5], 2, 8, 8), ValueError, r"motions must have one value per seed \(2\), got 1"),
    api("data-frames", lambda c: D.make_batch([1], [0.5], 0, 8, 8), ValueError, r"frames must be a positive int, got 0"),
    api("codec-numpy", lambda c: D.encode(np.zeros((1, 3, 2, 8, 8))), TypeError, r"video must be a torch.Tensor, got ndarray"),
    api("codec-indivisible", lambda c: D.encode(c.x(1, 3, 2, 10, 8), factor=4), ValueError, r"video height and width \(10x8\) must be divisible by factor=4"),
    api("codec-factor", lambda c: D.encode(c.x(1, 3, 2, 8, 8), factor=0), ValueError, r"factor must be a positive int, got 0"),
    api("codec-channels", lambda c: D.decode(c.x(1, 5, 2, 2, 2), factor=4), ValueError, r"latent channels \(5\) must be divisible by factor\^2=16"),
    api("codec-rank", lambda c: D.decode(c.x(5, 2, 2), factor=4), ValueError, r"latent must be \(B, C, T, H, W\) or \(C, T, H, W\), got shape \(5, 2, 2\)"),
    api("video-spec", lambda c: D.VideoSpec(frames=2, height=13, width=16, factor=4), ValueError, r"height \(13\) must be divisible by factor=4"),
    api("split-seeds", lambda c: D.split_seeds(-1, 2), ValueError, r"n_train must be a non-negative int, got -1"),
    # -- quality: load_model on junk --------------------------------------------------------
    api("load-missing", lambda c: load_model(c.tmp / "none.safetensors"), FileNotFoundError, r"no model at .*none.safetensors; the teacher is made by `mobileattn train-teacher`"),
    api("load-folder", lambda c: load_model(c.tmp), FileNotFoundError, r"no model at"),
    api("load-junk", lambda c: load_model(c.tmp / "junk.safetensors"), ValueError, r"junk.safetensors is not a mobileattn model file"),
    api("load-no-config", lambda c: load_model(c.tmp / "nometa.safetensors"), ValueError, r"nometa.safetensors is not a mobileattn model file \('config'\)"),
    api("load-bad-config", lambda c: load_model(c.tmp / "badcfg.safetensors"), ValueError, r"badcfg.safetensors is not a mobileattn model file: its config: .*missing"),
    api("load-bad-weights", lambda c: load_model(c.tmp / "badstate.safetensors"), ValueError, r"badstate.safetensors: the weights do not fit its config"),
    # -- the study config (mobileattn run --config files) -----------------------------------
    api("study-list", lambda c: StudyConfig.from_dict([1]), TypeError, r"study config must be a JSON object, got list"),
    api("study-unknown", lambda c: StudyConfig.from_dict({"foo": 1}), ValueError, r"study config: unknown field\(s\) foo; known: act_batches"),
    api("study-preset", lambda c: StudyConfig.from_dict({"latency_preset": "huge"}), ValueError, r"study config: latency_preset must be one of mobilei2v, small, tiny, got 'huge'"),
    api("study-grid", lambda c: StudyConfig.from_dict({"latency_grid": [1, 2]}), ValueError, r"study config: latency_grid must be \[T, H, W\] positive ints, got \(1, 2\)"),
    api("study-variants", lambda c: StudyConfig.from_dict({"variants": ["flash"]}), ValueError, r"study config: variants has unknown variant 'flash'"),
    api("study-variants-str", lambda c: StudyConfig.from_dict({"variants": "softmax"}), ValueError, r"study config: variants must be a non-empty list, got 'softmax'"),
    api("study-backends", lambda c: StudyConfig.from_dict({"backends": ["tpu"]}), ValueError, r"study config: backends must be a list of"),
    api("study-repeats", lambda c: StudyConfig.from_dict({"block_repeats": 1.5}), ValueError, r"study config: block_repeats must be an int >= 1, got 1.5"),
    api("study-joint", lambda c: StudyConfig.from_dict({"joint_steps": -1}), ValueError, r"study config: joint_steps must be an int >= 0, got -1"),
    api("study-eval-ts", lambda c: StudyConfig.from_dict({"eval_ts": [0, 2]}), ValueError, r"study config: eval_ts must be numbers in \(0, 1\]"),
    api("study-budget", lambda c: StudyConfig.from_dict({"budget": 40}), ValueError, r"study config: budget: budget must be a string"),
    api("study-teacher", lambda c: StudyConfig.from_dict({"teacher": 3}), TypeError, r"study config: teacher must be a path string, got 3"),
    api("study-export", lambda c: StudyConfig.from_dict({"export": "yes"}), TypeError, r"study config: export must be true or false, got 'yes'"),
    api("study-notes", lambda c: StudyConfig.from_dict({"notes": 3}), TypeError, r"study config: notes must be a list of strings, got 3"),
    api("study-zoo-grids", lambda c: StudyConfig.from_dict({"zoo_grids": []}), ValueError, r"study config: zoo_grids must be a non-empty list"),
    # -- the CLI --------------------------------------------------------------------------
    cli("run-config-missing", lambda c: ["run", "--config", str(c.tmp / "none.json"), "--out", str(c.tmp / "o")], r"--config: no such file '.*none.json'"),
    cli("run-config-broken", lambda c: ["run", "--config", str(c.tmp / "broken.json"), "--out", str(c.tmp / "o")], r"--config: .*broken.json is not valid JSON"),
    cli("run-config-list", lambda c: ["run", "--config", str(c.tmp / "list.json"), "--out", str(c.tmp / "o")], r"study config must be a JSON object, got list"),
    cli("run-config-unknown", lambda c: ["run", "--config", str(c.tmp / "unknown.json"), "--out", str(c.tmp / "o")], r"study config: unknown field\(s\) foo"),
    cli("run-config-notes", lambda c: ["run", "--config", str(c.tmp / "notes.json"), "--out", str(c.tmp / "o")], r"study config: notes must be a list of strings, got 3"),
    cli("run-config-grid", lambda c: ["run", "--config", str(c.tmp / "grid.json"), "--out", str(c.tmp / "o")], r"study config: latency_grid must be \[T, H, W\] positive ints, got '2x3x4'"),
    cli("run-config-variants", lambda c: ["run", "--config", str(c.tmp / "variants.json"), "--out", str(c.tmp / "o")], r"study config: variants has unknown variant 'flash'"),
    cli("run-config-no-softmax", lambda c: ["run", "--config", str(c.tmp / "nosoftmax.json"), "--out", str(c.tmp / "o")], r"study config: variants must include softmax"),
    cli("run-config-repeats", lambda c: ["run", "--config", str(c.tmp / "repeats.json"), "--out", str(c.tmp / "o")], r"study config: block_repeats must be an int >= 1, got 0"),
    cli("run-config-eval", lambda c: ["run", "--config", str(c.tmp / "eval.json"), "--out", str(c.tmp / "o")], r"study config: eval_ts must be numbers in \(0, 1\]"),
    cli("run-config-budget", lambda c: ["run", "--config", str(c.tmp / "budget.json"), "--out", str(c.tmp / "o")], r"study config: budget: budget must be milliseconds"),
    cli("run-config-backends", lambda c: ["run", "--config", str(c.tmp / "backends.json"), "--out", str(c.tmp / "o")], r"study config: backends must be a list of"),
    cli("run-config-export", lambda c: ["run", "--config", str(c.tmp / "export.json"), "--out", str(c.tmp / "o")], r"study config: export must be true or false"),
    cli("run-config-teacher", lambda c: ["run", "--config", str(c.tmp / "teacher.json"), "--out", str(c.tmp / "o")], r"study config: teacher must be a path string"),
    cli("run-config-full", lambda c: ["run", "--config", str(c.tmp / "unknown.json"), "--full"], r"--config and --full do not go together"),
    cli("run-budget", lambda c: ["run", "--budget", "fast", "--out", str(c.tmp / "o")], r"--budget: budget must be milliseconds"),
    cli("run-teacher", lambda c: ["run", "--teacher", str(c.tmp / "none.safetensors"), "--out", str(c.tmp / "o")], r"--teacher: no such file"),
    cli("run-out-file", lambda c: ["run", "--out", str(c.tmp / "afile")], r"--out must be a folder, got the file"),
    cli("run-flag", lambda c: ["run", "--bogus"], r"unrecognized arguments: --bogus"),
    cli("zoo-flag", lambda c: ["zoo", "--bogus"], r"unrecognized arguments: --bogus"),
    cli("bench-preset", lambda c: ["bench", "--preset", "huge"], r"--preset must be one of mobilei2v, small, tiny, got 'huge'"),
    cli("bench-grid", lambda c: ["bench", "--grid", "3x0x4"], r"--grid must be TxHxW with three positive ints .*got '3x0x4'"),
    cli("bench-repeats", lambda c: ["bench", "--repeats", "0"], r"--repeats must be >= 1, got 0"),
    cli("bench-repeats-int", lambda c: ["bench", "--repeats", "x"], r"argument --repeats: invalid int value: 'x'"),
    cli("bench-variants", lambda c: ["bench", "--variants", "flash"], r"--variants: unknown attention variant 'flash'"),
    cli("bench-gemm-probe", lambda c: ["bench", "--gemm-probe", "-1"], r"--gemm-probe must be >= 0 \(0: none\), got -1"),
    cli("bench-backend", lambda c: ["bench", "--preset", "tiny", "--grid", "2x3x4", "--backend", "tpu"], r"backend must be one of .*got 'tpu'"),
    cli("bench-patterns", lambda c: ["bench", "--preset", "tiny", "--grid", "2x3x4", "--patterns", "L,S,S"], r"--patterns: attention must name one variant per block \(depth=2\), got 3"),
    cli("bench-out-folder", lambda c: ["bench", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp)], r"--out must be a file path, got the folder"),
    cli("quality-variants", lambda c: ["quality", "--variants", "flash"], r"unknown attention variant 'flash'"),
    cli("quality-variants-empty", lambda c: ["quality", "--variants", ""], r"--variants must name at least one variant"),
    cli("quality-blocks", lambda c: ["quality", "--blocks", "99"], r"--blocks must lie in \[0, 16\), got \[99\]"),
    cli("quality-blocks-int", lambda c: ["quality", "--blocks", "a"], r"--blocks must be comma-separated ints, got 'a'"),
    cli("quality-steps", lambda c: ["quality", "--distill-steps", "0"], r"--distill-steps and --heldout must be >= 1"),
    cli("quality-teacher", lambda c: ["quality", "--teacher", str(c.tmp / "none.safetensors")], r"no model at .*none.safetensors"),
    cli("quality-teacher-junk", lambda c: ["quality", "--teacher", str(c.tmp / "junk.safetensors")], r"junk.safetensors is not a mobileattn model file"),
    cli("quality-out-folder", lambda c: ["quality", "--out", str(c.tmp)], r"--out must be a file path, got the folder"),
    cli("search-required", lambda c: ["search"], r"the following arguments are required: --latency, --quality"),
    cli("search-missing", lambda c: ["search", "--latency", str(c.tmp / "lat.json"), "--quality", str(c.tmp / "none.json")], r"--quality: no such file"),
    cli("search-broken", lambda c: ["search", "--latency", str(c.tmp / "broken.json"), "--quality", str(c.tmp / "q.json")], r"--latency: .*broken.json is not valid JSON"),
    cli("search-fields", lambda c: ["search", "--latency", str(c.tmp / "lat.json"), "--quality", str(c.tmp / "q.json")], r"--latency \(from `mobileattn bench` or a run's latency.json\) and --quality \(from `mobileattn quality` or a run's quality.json\) must hold those commands' tables"),
    cli("search-out-folder", lambda c: ["search", "--latency", str(c.tmp / "lat.json"), "--quality", str(c.tmp / "q.json"), "--out", str(c.tmp)], r"--out must be a file path, got the folder"),
    cli("export-preset", lambda c: ["export", "--preset", "huge", "--grid", "2x3x4", "--out", str(c.tmp / "e")], r"--preset must be one of mobilei2v, small, tiny, got 'huge'"),
    cli("export-grid", lambda c: ["export", "--preset", "tiny", "--grid", "2x3", "--out", str(c.tmp / "e")], r"--grid must be TxHxW with three positive ints .*got '2x3'"),
    cli("export-out-file", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "afile")], r"--out must be a folder, got the file"),
    cli("export-attention", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "e"), "--attention", "L,L,L"], r"--attention: attention must name one variant per block \(depth=2\), got 3"),
    cli("export-repeats", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "e"), "--repeats", "0"], r"--repeats must be >= 1, got 0"),
    cli("export-opset", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "e"), "--opset", "5"], r"--opset must be >= 18 \(dynamo exporter\), got 5"),
    cli("export-weights-missing", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "e"), "--weights", str(c.tmp / "none.safetensors")], r"--weights: no such file"),
    cli("export-weights-junk", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "e"), "--weights", str(c.tmp / "junk.safetensors")], r"--weights: .*junk.safetensors is not a safetensors state dict of this config"),
    cli("export-precision", lambda c: ["export", "--preset", "tiny", "--grid", "2x3x4", "--out", str(c.tmp / "e"), "--precision", "int8"], r"argument --precision: invalid choice: 'int8'"),
    cli("lint-missing", lambda c: ["lint", str(c.tmp / "none.mlpackage")], r"no Core ML package at"),
    cli("lint-folder", lambda c: ["lint", str(c.tmp / "notpkg")], r"is not an .mlpackage: it has no Manifest.json"),
    cli("lint-corrupt", lambda c: ["lint", str(c.tmp / "corrupt.mlpackage")], r"Manifest.json is corrupt"),
    cli("lint-required", lambda c: ["lint"], r"the following arguments are required: model"),
    cli("teacher-steps", lambda c: ["train-teacher", "--steps", "0"], r"--steps must be >= 1, got 0"),
    cli("teacher-lr", lambda c: ["train-teacher", "--lr", "-1"], r"--lr must be > 0, got -1.0"),
    cli("teacher-out", lambda c: ["train-teacher", "--out", "x.pt"], r"--out must end in .safetensors, got x.pt"),
    cli("teacher-threads", lambda c: ["train-teacher", "--threads", "0"], r"--threads must be >= 1, got 0"),
    cli("teacher-batch", lambda c: ["train-teacher", "--batch", "abc"], r"argument --batch: invalid int value: 'abc'"),
]  # fmt: skip


class HeavyWorkStarted(BaseException):
    """A CLI case got past validation into real work (a BaseException, so that no
    `except Exception` in the code under test can swallow it)."""


@pytest.fixture
def tripwires(monkeypatch):
    import bench.latency
    import export.bundle
    import study.dataset
    import study.driver
    import study.training

    def trip(*args, **kwargs):
        raise HeavyWorkStarted("validation let the case through to real work")

    monkeypatch.setattr(study.driver.Study, "__init__", trip)
    for mod, name in (
        (bench.latency, "block_table"),
        (study.dataset, "load_task"),
        (study.training, "train_teacher"),
        (export.bundle, "onnx_stage"),
    ):
        monkeypatch.setattr(mod, name, trip)


def test_every_case_has_a_unique_id():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gets_a_clear_error(case, ctx, tripwires, capsys):
    if case.exc is not None:
        with pytest.raises(case.exc) as info:
            case.call(ctx)
        msg = info.value.args[0] if isinstance(info.value, KeyError) else str(info.value)
        assert re.search(case.match, msg), f"message {msg!r} does not match {case.match!r}"
        return
    try:
        rc = main(case.call(ctx))
    except SystemExit as e:  # argparse's own errors (bad int, unknown flag, missing flag)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert re.search(case.match, err), f"stderr {err!r} does not match {case.match!r}"
