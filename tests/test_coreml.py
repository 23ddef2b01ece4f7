"""Core ML export of every variant's ANE form: it converts, the ANE lint finds no errors,
and the MIL interpreter reproduces PyTorch (PSNR >= 35 dB in fp16, Apple's threshold;
>= 60 dB in fp32). Plus to_coreml's argument checks (output names too), its atomic write,
and inputs whose size-1 axes leave torch a non-standard dim order. The whole model's
one-step program is tested in tests/test_bundle.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import attention_zoo as az
from export.ane_report import AneAttention, psnr, variant_opts
from export.coreml import to_coreml
from export.lint import ane_lint
from export.mil import load_program, run_mil
from tests.helpers import grid_for
from tests.test_mil import ATTENTION_OPS

ANE_VARIANTS = [name for name, var in az.VARIANTS.items() if var.ane_path is not None]
HEADS, HEAD_DIM, N, CHUNK = 2, 17, 24, 10  # chunk 10 over 24 queries leaves a remainder of 4


@pytest.fixture(scope="module", params=ANE_VARIANTS)
def exported(request, tmp_path_factory):
    """One variant converted once per module, in fp16 and fp32, with its PyTorch output."""
    name = request.param
    gen = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(1, HEADS * HEAD_DIM, 1, N, generator=gen) for _ in range(3))
    module = AneAttention(name, HEADS, **variant_opts(name, grid_for(N), CHUNK))
    with torch.no_grad():
        expected = module(*inputs).numpy()
    root = tmp_path_factory.mktemp(name)
    paths = {
        p: to_coreml(module, inputs, root / f"{name}_{p}.mlpackage", precision=p)
        for p in ("fp16", "fp32")
    }
    feeds = {n: x.numpy() for n, x in zip(("q", "k", "v"), inputs, strict=True)}
    return {"name": name, "paths": paths, "expected": expected, "feeds": feeds}


def test_package_has_forward_argument_names(exported):
    prog = load_program(exported["paths"]["fp16"])
    assert [s.name for s in prog.inputs] == ["q", "k", "v"]
    assert [s.shape for s in prog.inputs] == [(1, HEADS * HEAD_DIM, 1, N)] * 3
    assert prog.outputs == ["output"]


def test_lint_finds_no_errors(exported):
    report = ane_lint(exported["paths"]["fp16"])
    assert report.ok, str(report)
    assert report.precision == "fp16"
    assert report.histogram.get("einsum", 0) >= 2 * HEADS
    assert report.histogram.get("reshape", 0) == 0
    assert 1 <= report.histogram.get("transpose", 0) <= HEADS


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_ops_are_checked_op_by_op(exported, precision):
    """Every op type in the export is one the interpreter is checked on, op by op, in
    tests/test_mil.py."""
    ops = {op.type for op in load_program(exported["paths"][precision]).operations}
    assert ops <= set(ATTENTION_OPS), ops - set(ATTENTION_OPS)


@pytest.mark.parametrize(("precision", "min_db"), [("fp16", 35.0), ("fp32", 60.0)])
def test_run_mil_reproduces_pytorch(exported, precision, min_db):
    out = run_mil(exported["paths"][precision], exported["feeds"], precision=precision)
    got = out["output"]
    assert got.dtype == (np.float16 if precision == "fp16" else np.float32)
    assert np.isfinite(got).all()
    assert psnr(exported["expected"], got) >= min_db


# -- to_coreml itself ------------------------------------------------------------------


class _Two(torch.nn.Module):
    def forward(self, x, y):
        return torch.relu(x) * y


class _Scale(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s


def _xy():
    return torch.randn(1, 4, 1, 8), torch.randn(1, 4, 1, 8)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"precision": "fp8"}, ValueError, "precision must be one of"),
        ({"target": "iOS14"}, ValueError, "target must be one of"),
        ({"target": 16}, TypeError, "target must be a str"),
        ({"path": "model.mlmodel"}, ValueError, "must end in .mlpackage"),
        ({"path": 3}, TypeError, "path must be a str"),
        ({"example_inputs": (torch.zeros(1),)}, ValueError, r"expected 2\.\.2 tensors, got 1"),
        ({"example_inputs": (torch.zeros(1), 2.0)}, TypeError, r"example_inputs\[1\]"),
        ({"example_inputs": "xy"}, TypeError, "example_inputs must be a tuple"),
        ({"module": lambda x, y: x}, TypeError, "module must be a torch.nn.Module"),
        ({"output_names": "v"}, TypeError, "output_names must be a sequence of non-empty str"),
        ({"output_names": ["v", ""]}, TypeError, "output_names must be a sequence of non-empty"),
        ({"output_names": ["a", "b"]}, ValueError, r"must name the 1 output\(s\) of module"),
        ({"output_names": ["x"]}, ValueError, r"must differ from the input names \['x', 'y'\]"),
    ],
)
def test_to_coreml_rejects_bad_arguments(tmp_path, kwargs, exc, match):
    args = {"module": _Two(), "example_inputs": _xy(), "path": tmp_path / "m.mlpackage"}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        to_coreml(**args)
    assert os.listdir(tmp_path) == []


def test_to_coreml_replaces_atomically(tmp_path):
    path = tmp_path / "m.mlpackage"
    x = torch.randn(1, 4, 1, 8)
    to_coreml(_Scale(2.0), (x,), path, precision="fp32")
    to_coreml(_Scale(3.0), x, path, precision="fp32")  # a lone tensor is one argument
    assert os.listdir(tmp_path) == ["m.mlpackage"]
    out = run_mil(path, {"x": x.numpy()}, precision="fp32")["output"]
    np.testing.assert_allclose(out, 3 * x.numpy(), rtol=1e-6)


def test_failed_write_keeps_the_old_package(tmp_path, monkeypatch):
    import export.coreml as coreml

    path = tmp_path / "m.mlpackage"
    x = torch.randn(1, 4, 1, 8)
    to_coreml(_Scale(2.0), (x,), path, precision="fp32")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst) == str(path) and not str(src).endswith(".old"):  # new package into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(coreml.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        to_coreml(_Scale(3.0), (x,), path, precision="fp32")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.mlpackage"]
    out = run_mil(path, {"x": x.numpy()}, precision="fp32")["output"]
    np.testing.assert_allclose(out, 2 * x.numpy(), rtol=1e-6)


def test_tuple_outputs_are_numbered(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, a):
            return a + 1, a * 2

    a = torch.randn(1, 2, 1, 8)
    path = to_coreml(Pair(), (a,), tmp_path / "p.mlpackage", precision="fp32")
    out = run_mil(path, {"a": a.numpy()}, precision="fp32")
    np.testing.assert_allclose(out["output_0"], a.numpy() + 1, rtol=1e-6)
    np.testing.assert_allclose(out["output_1"], a.numpy() * 2, rtol=1e-6)


def test_output_names_name_the_outputs(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, a):
            return a + 1, a * 2

    a = torch.randn(1, 2, 1, 8)
    path = to_coreml(Pair(), (a,), tmp_path / "p.mlpackage", "fp32", output_names=("u", "w"))
    assert load_program(path).outputs == ["u", "w"]
    out = run_mil(path, {"a": a.numpy()}, precision="fp32")
    np.testing.assert_allclose(out["w"], a.numpy() * 2, rtol=1e-6)


def test_inputs_with_a_non_standard_dim_order_convert(tmp_path):
    """(1, 4, 1, 8) and (1, 16, 1, 1) made by a permute are "contiguous" enough for torch
    but carry another dim order, which coremltools refuses; to_coreml copies them."""
    a = torch.randn(1, 8, 4).permute(0, 2, 1).unsqueeze(2)  # (1, 4, 1, 8)
    m = torch.randn(1, 1, 16).permute(0, 2, 1).unsqueeze(2)  # (1, 16, 1, 1)
    assert a.dim_order() != (0, 1, 2, 3) and m.dim_order() != (0, 1, 2, 3)
    path = to_coreml(_Two(), (a, torch.ones(1, 4, 1, 8)), tmp_path / "a.mlpackage", "fp32")
    out = run_mil(path, {"x": a.numpy(), "y": np.ones((1, 4, 1, 8))}, precision="fp32")
    np.testing.assert_allclose(out["output"], np.maximum(a.numpy(), 0), rtol=1e-6)
    path = to_coreml(_Scale(2.0), (m,), tmp_path / "m.mlpackage", "fp32")
    out = run_mil(path, {"x": m.numpy()}, precision="fp32")["output"]
    np.testing.assert_allclose(out, 2 * m.numpy(), rtol=1e-6)


@pytest.mark.parametrize("progress", [True, False])
def test_progress_false_silences_coremltools_bars(tmp_path, capfd, progress):
    from coremltools.converters.mil.mil.passes import pass_pipeline

    before = pass_pipeline.tqdm
    a = torch.randn(1, 2, 1, 8)
    to_coreml(_Scale(3.0), (a,), tmp_path / "s.mlpackage", "fp32", progress=progress)
    err = capfd.readouterr().err
    assert ("Running MIL" in err) is progress, err[-500:]
    assert pass_pipeline.tqdm is before  # the library's own tqdm is put back
