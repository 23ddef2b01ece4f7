"""The ANE lint (export/lint.py) and `mobileattn lint`: deliberately bad programs are flagged
(rank 5, a dimension above 16384, an op off the allow-list, fp32 inside fp16, a short last
axis, transposes) and a clean channels-first program passes."""

from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

from export.lint import MAX_DIM, ane_lint
from mobileattn.cli import main


def _convert(prog, precision=ct.precision.FLOAT16):
    return ct.convert(
        prog,
        convert_to="mlprogram",
        pass_pipeline=ct.PassPipeline.EMPTY,  # keep the ops exactly as written
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=precision,
    )


def _fp16(shape):
    return mb.TensorSpec(shape=shape, dtype=types.fp16)


@pytest.fixture(scope="module")
def clean_path(tmp_path_factory):
    @mb.program(input_specs=[_fp16((1, 8, 1, 64))], opset_version=ct.target.iOS16)
    def prog(x):
        w = np.ones((8, 8, 1, 1), np.float16)
        return mb.relu(x=mb.conv(x=x, weight=w))

    path = tmp_path_factory.mktemp("clean") / "clean.mlpackage"
    _convert(prog).save(str(path))
    return path


@pytest.fixture(scope="module")
def bad_path(tmp_path_factory):
    """Rank 5, a dimension above 16384 with a transpose of it, a gather."""

    @mb.program(
        input_specs=[_fp16((2, 3, 4, 5)), _fp16((1, 4, 1, MAX_DIM + 1))],
        opset_version=ct.target.iOS16,
    )
    def prog(x, big):
        five = mb.reshape(x=x, shape=[1, 2, 3, 4, 5])
        back = mb.reshape(x=five, shape=[2, 3, 4, 5])
        picked = mb.gather(x=back, indices=np.array([0, 2], np.int32), axis=1)
        turned = mb.transpose(x=big, perm=[0, 3, 2, 1])
        return picked, turned

    path = tmp_path_factory.mktemp("bad") / "bad.mlpackage"
    _convert(prog).save(str(path))
    return path


def _checks(findings):
    return {(f.check, f.op_type) for f in findings}


def test_clean_program_passes(clean_path):
    report = ane_lint(clean_path)
    assert report.ok
    assert report.errors == [] and report.warnings == []
    assert report.histogram["conv"] == 1 and report.histogram["relu"] == 1
    assert report.precision == "fp16"
    assert "OK: no errors" in str(report)


def test_bad_program_is_flagged(bad_path):
    report = ane_lint(bad_path)
    assert not report.ok
    errors = _checks(report.errors)
    assert ("rank", "reshape") in errors
    assert ("op", "gather") in errors
    assert ("dim", "input") in errors
    assert ("dim", "transpose") in errors
    assert ("layout", "transpose") in _checks(report.warnings)
    assert sum(f.check == "layout" for f in report.warnings) == 3  # 2 reshapes, 1 transpose
    text = str(report)
    assert "FAILED" in text and "not ANE-friendly" in text and "gather" in text


def test_fp32_op_in_fp16_program():
    @mb.program(input_specs=[_fp16((1, 4, 1, 64))], opset_version=ct.target.iOS16)
    def prog(x):
        y = mb.exp(x=mb.cast(x=x, dtype="fp32"))
        return mb.cast(x=y, dtype="fp16")

    report = ane_lint(_convert(prog))  # a loaded MLModel works too
    assert ("fp32", "exp") in _checks(report.errors)
    assert ("fp32", "cast") in _checks(report.errors)  # the cast into fp32 is inside


def test_short_last_axis_wastes_padding():
    @mb.program(input_specs=[_fp16((1, 4096, 1, 4))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.relu(x=x)

    report = ane_lint(_convert(prog))
    assert report.ok
    assert ("padding", "relu") in _checks(report.warnings)
    assert ("padding", "input") in _checks(report.warnings)


def test_fp32_program_is_a_warning():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 1, 64))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.relu(x=x)

    report = ane_lint(_convert(prog, ct.precision.FLOAT32))
    assert report.ok and report.precision == "fp32"
    assert ("precision", "program") in _checks(report.warnings)


def test_cli_exit_codes(clean_path, bad_path, capsys, tmp_path):
    assert main(["lint", str(clean_path)]) == 0
    assert "OK: no errors" in capsys.readouterr().out
    assert main(["lint", str(bad_path)]) == 1
    out = capsys.readouterr().out
    assert "error: [rank] reshape" in out
    assert main(["lint", str(tmp_path / "missing.mlpackage")]) == 2
    assert "no Core ML package" in capsys.readouterr().err


def test_lint_rejects_non_models():
    with pytest.raises(TypeError, match=r"expected a path to an \.mlpackage"):
        ane_lint(42)
