"""The MIL interpreter (export/mil.py): op by op against coremltools' own numbers (its MIL
ops' value_inference, i.e. constant folding) where it has them and against PyTorch where it
does not; fp16 storage; blob reading; clear errors for corrupt packages, unknown ops and bad
inputs."""

from __future__ import annotations

import shutil

import coremltools as ct
import numpy as np
import pytest
import torch
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function

from export.mil import (
    MILFormatError,
    UnsupportedOpError,
    load_program,
    run_mil,
)

SHAPE = (2, 3, 4, 5)
rng = np.random.default_rng(0)
X = rng.standard_normal(SHAPE).astype(np.float32)
Y = rng.standard_normal(SHAPE).astype(np.float32)
P = rng.uniform(0.5, 2.0, SHAPE).astype(np.float32)  # positive
U = rng.uniform(-0.9, 0.9, SHAPE).astype(np.float32)  # inside (-1, 1)
W = rng.standard_normal((7, 5)).astype(np.float32)
B7 = rng.standard_normal(7).astype(np.float32)
C3 = rng.uniform(0.5, 1.5, 3).astype(np.float32)
G35 = rng.standard_normal((3, 5)).astype(np.float32)
IDX = rng.integers(0, 4, (2, 3, 2, 5)).astype(np.int32)
CONV_W = {
    "1x1_grouped": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
    "3x3_same": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
    "strided_dilated": rng.standard_normal((2, 3, 2, 2)).astype(np.float32),
    "1d": rng.standard_normal((4, 3, 3)).astype(np.float32),
}
T = [True, False, False, False]

# name -> builder(x, y, p, u): the same code builds the program (on program inputs) and the
# value-inference reference (on numpy constants, where coremltools folds it).
VALUE_INFERENCE_CASES = {
    "add": lambda x, y, p, u: mb.add(x=x, y=y),
    "sub": lambda x, y, p, u: mb.sub(x=x, y=y),
    "mul": lambda x, y, p, u: mb.mul(x=x, y=y),
    "real_div": lambda x, y, p, u: mb.real_div(x=x, y=p),
    "floor_div": lambda x, y, p, u: mb.floor_div(x=x, y=p),
    "mod": lambda x, y, p, u: mb.mod(x=x, y=p),
    "pow": lambda x, y, p, u: mb.pow(x=p, y=y),
    "maximum": lambda x, y, p, u: mb.maximum(x=x, y=y),
    "minimum": lambda x, y, p, u: mb.minimum(x=x, y=y),
    "greater": lambda x, y, p, u: mb.greater(x=x, y=y),
    "less_equal": lambda x, y, p, u: mb.less_equal(x=x, y=y),
    "logical_and": lambda x, y, p, u: mb.logical_and(
        x=mb.greater(x=x, y=0.0), y=mb.less(x=y, y=0.5)
    ),
    "abs": lambda x, y, p, u: mb.abs(x=x),
    "acos": lambda x, y, p, u: mb.acos(x=u),
    "asin": lambda x, y, p, u: mb.asin(x=u),
    "atan": lambda x, y, p, u: mb.atan(x=x),
    "atanh": lambda x, y, p, u: mb.atanh(x=u),
    "ceil": lambda x, y, p, u: mb.ceil(x=x),
    "cos": lambda x, y, p, u: mb.cos(x=x),
    "cosh": lambda x, y, p, u: mb.cosh(x=x),
    "erf": lambda x, y, p, u: mb.erf(x=x),
    "exp": lambda x, y, p, u: mb.exp(x=x),
    "exp2": lambda x, y, p, u: mb.exp2(x=x),
    "floor": lambda x, y, p, u: mb.floor(x=x),
    "round": lambda x, y, p, u: mb.round(x=mb.mul(x=x, y=3.0)),
    "sign": lambda x, y, p, u: mb.sign(x=x),
    "sin": lambda x, y, p, u: mb.sin(x=x),
    "sinh": lambda x, y, p, u: mb.sinh(x=x),
    "sqrt": lambda x, y, p, u: mb.sqrt(x=p),
    "square": lambda x, y, p, u: mb.square(x=x),
    "tan": lambda x, y, p, u: mb.tan(x=u),
    "tanh": lambda x, y, p, u: mb.tanh(x=x),
    "inverse": lambda x, y, p, u: mb.inverse(x=p, epsilon=1e-3),
    "log": lambda x, y, p, u: mb.log(x=p),
    "rsqrt": lambda x, y, p, u: mb.rsqrt(x=p, epsilon=1e-6),
    "clip": lambda x, y, p, u: mb.clip(x=x, alpha=-0.5, beta=0.7),
    "threshold": lambda x, y, p, u: mb.threshold(x=x, alpha=0.2),
    "cast_fp16": lambda x, y, p, u: mb.cast(x=x, dtype="fp16"),
    "cast_int32": lambda x, y, p, u: mb.cast(x=mb.mul(x=x, y=10.0), dtype="int32"),
    "relu": lambda x, y, p, u: mb.relu(x=x),
    "relu6": lambda x, y, p, u: mb.relu6(x=mb.mul(x=x, y=4.0)),
    "elu": lambda x, y, p, u: mb.elu(x=x, alpha=0.7),
    "leaky_relu": lambda x, y, p, u: mb.leaky_relu(x=x, alpha=0.2),
    "prelu": lambda x, y, p, u: mb.prelu(x=x, alpha=C3),
    "sigmoid": lambda x, y, p, u: mb.sigmoid(x=x),
    "softplus": lambda x, y, p, u: mb.softplus(x=x),
    "softsign": lambda x, y, p, u: mb.softsign(x=x),
    "gelu_exact": lambda x, y, p, u: mb.gelu(x=x, mode="EXACT"),
    "gelu_tanh": lambda x, y, p, u: mb.gelu(x=x, mode="TANH_APPROXIMATION"),
    "gelu_sigmoid": lambda x, y, p, u: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
    "sigmoid_hard": lambda x, y, p, u: mb.sigmoid_hard(x=x, alpha=0.3, beta=0.4),
    "linear_activation": lambda x, y, p, u: mb.linear_activation(x=x, alpha=1.5, beta=-0.5),
    "scaled_tanh": lambda x, y, p, u: mb.scaled_tanh(x=x, alpha=2.0, beta=0.5),
    "clamped_relu": lambda x, y, p, u: mb.clamped_relu(x=x, alpha=0.1, beta=0.8),
    "thresholded_relu": lambda x, y, p, u: mb.thresholded_relu(x=x, alpha=0.3),
    "softmax_channels": lambda x, y, p, u: mb.softmax(x=x, axis=1),
    "softmax_last": lambda x, y, p, u: mb.softmax(x=x, axis=-1),
    "reduce_sum": lambda x, y, p, u: mb.reduce_sum(x=x, axes=[1, 3], keep_dims=True),
    "reduce_mean": lambda x, y, p, u: mb.reduce_mean(x=x, axes=[-1]),
    "reduce_max": lambda x, y, p, u: mb.reduce_max(x=x, axes=[0, 2]),
    "reduce_min": lambda x, y, p, u: mb.reduce_min(x=x),
    "reduce_prod": lambda x, y, p, u: mb.reduce_prod(x=p, axes=[1]),
    "reduce_l1_norm": lambda x, y, p, u: mb.reduce_l1_norm(x=x, axes=[2]),
    "reduce_l2_norm": lambda x, y, p, u: mb.reduce_l2_norm(x=x, axes=[1], keep_dims=True),
    "reduce_sum_square": lambda x, y, p, u: mb.reduce_sum_square(x=x, axes=[3]),
    "reduce_log_sum": lambda x, y, p, u: mb.reduce_log_sum(x=p, axes=[1]),
    "reduce_log_sum_exp": lambda x, y, p, u: mb.reduce_log_sum_exp(x=x, axes=[1, 2]),
    "reduce_argmax": lambda x, y, p, u: mb.reduce_argmax(x=x, axis=2, keep_dims=True),
    "transpose": lambda x, y, p, u: mb.transpose(x=x, perm=[0, 3, 1, 2]),
    "reshape": lambda x, y, p, u: mb.reshape(x=x, shape=[2, -1, 5]),
    "expand_dims": lambda x, y, p, u: mb.expand_dims(
        x=mb.reshape(x=x, shape=[6, 20]), axes=[0, -1]
    ),
    "squeeze": lambda x, y, p, u: mb.squeeze(x=mb.reshape(x=x, shape=[2, 3, 1, 20]), axes=[2]),
    "concat": lambda x, y, p, u: mb.concat(values=[x, y], axis=2),
    "split_sizes": lambda x, y, p, u: mb.split(x=x, split_sizes=[1, 3], axis=2),
    "split_num": lambda x, y, p, u: mb.split(x=x, num_splits=5, axis=-1),
    "slice_by_index": lambda x, y, p, u: mb.slice_by_index(
        x=x, begin=[0, 1, 0, 1], end=[2, 3, 4, 5], stride=[1, 1, 2, 2]
    ),
    "slice_by_index_masks": lambda x, y, p, u: mb.slice_by_index(
        x=x,
        begin=[1, 0, -1, 0],
        end=[0, 2, 0, -1],
        begin_mask=T,
        end_mask=[True, False, True, False],
        squeeze_mask=[False, False, True, False],
    ),
    "slice_by_size": lambda x, y, p, u: mb.slice_by_size(
        x=x, begin=[0, 1, 1, 0], size=[2, -1, 2, 3]
    ),
    "tile": lambda x, y, p, u: mb.tile(x=x, reps=[1, 2, 1, 2]),
    "pad_constant": lambda x, y, p, u: mb.pad(x=x, pad=[1, 2, 0, 1], constant_val=0.5),
    "pad_reflect": lambda x, y, p, u: mb.pad(x=x, pad=[1, 1, 2, 2], mode="reflect"),
    "pad_replicate": lambda x, y, p, u: mb.pad(x=x, pad=[0, 2, 1, 0], mode="replicate"),
    "select": lambda x, y, p, u: mb.select(cond=mb.greater(x=x, y=0.0), a=x, b=y),
    "fill_like": lambda x, y, p, u: mb.fill_like(ref_tensor=x, value=2.5),
    "gather": lambda x, y, p, u: mb.gather(x=x, indices=np.array([2, 0, 1], np.int32), axis=1),
    "gather_along_axis": lambda x, y, p, u: mb.gather_along_axis(x=x, indices=IDX, axis=2),
    "stack": lambda x, y, p, u: mb.stack(values=[x, y], axis=1),
    "matmul": lambda x, y, p, u: mb.matmul(x=x, y=mb.transpose(x=y, perm=[0, 1, 3, 2])),
    "matmul_transpose_y": lambda x, y, p, u: mb.matmul(x=x, y=y, transpose_y=True),
    "matmul_transpose_x": lambda x, y, p, u: mb.matmul(x=x, y=y, transpose_x=True),
    "linear": lambda x, y, p, u: mb.linear(x=x, weight=W, bias=B7),
    "einsum": lambda x, y, p, u: mb.einsum(
        values=(x, mb.transpose(x=y, perm=[0, 3, 2, 1])), equation="nchw,nwhu->nchu"
    ),
    "layer_norm": lambda x, y, p, u: mb.layer_norm(
        x=x, axes=[1, 3], gamma=G35, beta=G35 * 0.5, epsilon=1e-3
    ),
    "layer_norm_last": lambda x, y, p, u: mb.layer_norm(x=x, axes=[-1]),
}


def _torch(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# Ops coremltools has no value_inference for: the reference is PyTorch (or numpy).
TORCH_CASES = {
    # coremltools' concat value_inference ignores interleave; this is the documented rule
    # (out[:, 0::2] = x, out[:, 1::2] = y)
    "concat_interleave": (
        lambda x, y, p, u: mb.concat(values=[x, y], axis=1, interleave=True),
        lambda: torch.from_numpy(np.stack([X, Y], axis=2).reshape(2, 6, 4, 5)),
    ),
    "conv_1x1_grouped": (
        lambda x, y, p, u: mb.conv(
            x=mb.concat(values=[x, y], axis=1), weight=CONV_W["1x1_grouped"], groups=2
        ),
        lambda: torch.nn.functional.conv2d(
            _torch(np.concatenate([X, Y], 1)), _torch(CONV_W["1x1_grouped"]), groups=2
        ),
    ),
    "conv_3x3_same": (
        lambda x, y, p, u: mb.conv(x=x, weight=CONV_W["3x3_same"], bias=C3[:2], pad_type="same"),
        lambda: torch.nn.functional.conv2d(
            _torch(X), _torch(CONV_W["3x3_same"]), _torch(C3[:2]), padding="same"
        ),
    ),
    "conv_strided_dilated": (
        lambda x, y, p, u: mb.conv(
            x=x,
            weight=CONV_W["strided_dilated"],
            strides=[2, 1],
            dilations=[1, 2],
            pad_type="custom",
            pad=[1, 1, 2, 2],
        ),
        lambda: torch.nn.functional.conv2d(
            _torch(X),
            _torch(CONV_W["strided_dilated"]),
            stride=(2, 1),
            dilation=(1, 2),
            padding=(1, 2),
        ),
    ),
    "conv_1d": (
        lambda x, y, p, u: mb.conv(x=mb.reshape(x=x, shape=[2, 3, 20]), weight=CONV_W["1d"]),
        lambda: torch.nn.functional.conv1d(_torch(X.reshape(2, 3, 20)), _torch(CONV_W["1d"])),
    ),
    "silu": (lambda x, y, p, u: mb.silu(x=x), lambda: torch.nn.functional.silu(_torch(X))),
    "batch_norm": (
        lambda x, y, p, u: mb.batch_norm(
            x=x, mean=C3 - 1, variance=C3, gamma=C3 * 2, beta=-C3, epsilon=1e-3
        ),
        lambda: torch.nn.functional.batch_norm(
            _torch(X), _torch(C3 - 1), _torch(C3), _torch(C3 * 2), _torch(-C3), eps=1e-3
        ),
    ),
    "instance_norm": (
        lambda x, y, p, u: mb.instance_norm(x=x, gamma=C3, beta=C3 - 1, epsilon=1e-4),
        lambda: torch.nn.functional.instance_norm(
            _torch(X), weight=_torch(C3), bias=_torch(C3 - 1), eps=1e-4
        ),
    ),
}

# The op types the exported attention programs hold (tests/test_coreml.py keeps this honest).
ATTENTION_OPS = (
    "add",
    "concat",
    "const",
    "conv",
    "einsum",
    "elu",
    "exp",
    "greater",
    "maximum",
    "mul",
    "pow",
    "real_div",
    "reduce_max",
    "reduce_sum",
    "relu",
    "select",
    "sigmoid",
    "softmax",
    "split",
    "sqrt",
    "sub",
    "transpose",
)

ALL_CASES = {**VALUE_INFERENCE_CASES, **{k: b for k, (b, _) in TORCH_CASES.items()}}


def _flat(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _save(prog, path, precision=ct.precision.FLOAT32, passes=False):
    """Converts a MIL program and saves it; without passes the program keeps its ops as
    written (no fusion, no folding, no fp16 casts)."""
    model = ct.convert(
        prog,
        convert_to="mlprogram",
        pass_pipeline=ct.PassPipeline.DEFAULT if passes else ct.PassPipeline.EMPTY,
        minimum_deployment_target=ct.target.iOS16,
        compute_precision=precision,
    )
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def case_program(tmp_path_factory):
    """Every case in one program (one conversion), run once in fp32:
    {"results": {case: [interpreter outputs]}, "op_types": set of the program's op types}."""
    spans = {}

    @mb.program(
        input_specs=[mb.TensorSpec(shape=SHAPE) for _ in range(4)],
        opset_version=ct.target.iOS16,
    )
    def prog(x, y, p, u):
        outs = []
        for name, build in ALL_CASES.items():
            vals = _flat(build(x, y, p, u))
            spans[name] = (len(outs), len(outs) + len(vals))
            outs.extend(vals)
        return tuple(outs)

    path = _save(prog, tmp_path_factory.mktemp("ops") / "ops.mlpackage")
    loaded = load_program(path)
    names = [s.name for s in loaded.inputs]
    out = run_mil(path, dict(zip(names, (X, Y, P, U), strict=True)), precision="fp32")
    order = loaded.outputs
    return {
        "results": {name: [out[order[i]] for i in range(a, b)] for name, (a, b) in spans.items()},
        "op_types": {op.type for op in loaded.operations},
    }


@pytest.fixture(scope="module")
def op_results(case_program):
    return case_program["results"]


@pytest.mark.parametrize("name", list(VALUE_INFERENCE_CASES))
def test_op_matches_coremltools_value_inference(op_results, name):
    # copies: coremltools' thresholded_relu value_inference writes into its input
    args = (X.copy(), Y.copy(), P.copy(), U.copy())
    with Function({}):
        expected = [v.val for v in _flat(VALUE_INFERENCE_CASES[name](*args))]
    got = op_results[name]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert e is not None, f"coremltools has no value for {name}"
        e = np.asarray(e)
        assert g.shape == e.shape
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e.astype(np.float64), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_op_matches_pytorch(op_results, name):
    (got,) = op_results[name]
    expected = TORCH_CASES[name][1]().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_cases_cover_every_op_of_the_attention_exports(case_program):
    """Every op type the exported attention programs hold is checked here op by op
    (tests/test_coreml.py checks that the exports hold no other op type)."""
    assert set(ATTENTION_OPS) <= case_program["op_types"]


# -- precision -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rounding_package(tmp_path_factory):
    """(x + 0.1) - x: 0.1 in fp32, but 0 in fp16 storage at x = 1000 (fp16 spacing 0.5)."""

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.sub(x=mb.add(x=x, y=0.1), y=x)

    return _save(prog, tmp_path_factory.mktemp("round") / "r.mlpackage")


def test_fp16_mode_rounds_every_op(rounding_package):
    x = np.full((1, 4), 1000.0, np.float32)
    (fp16,) = run_mil(rounding_package, {"x": x}, precision="fp16").values()
    (fp32,) = run_mil(rounding_package, {"x": x}, precision="fp32").values()
    assert fp16.dtype == np.float16 and fp32.dtype == np.float32
    np.testing.assert_array_equal(fp16, np.zeros((1, 4), np.float16))
    np.testing.assert_allclose(fp32, 0.1, rtol=1e-3)


# -- weights and errors ----------------------------------------------------------------


@pytest.fixture(scope="module")
def weighted_package(tmp_path_factory):
    """linear with a (32, 16) weight (stored in the blob file) and an fp16 program."""
    w = rng.standard_normal((32, 16)).astype(np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(3, 16))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.linear(x=x, weight=w)

    path = _save(prog, tmp_path_factory.mktemp("w") / "w.mlpackage", ct.precision.FLOAT16, True)
    return path, w


def test_blob_weights_round_trip(weighted_package):
    path, w = weighted_package
    x = rng.standard_normal((3, 16)).astype(np.float32)
    (out,) = run_mil(path, {"x": x}, precision="fp32").values()
    w16 = w.astype(np.float16).astype(np.float32)  # the package stores fp16 weights
    x16 = x.astype(np.float16).astype(np.float32)  # and takes fp16 inputs (iOS16)
    np.testing.assert_allclose(out, x16 @ w16.T, rtol=1e-5, atol=1e-5)


def test_blob_reader_agrees_with_coremltools(weighted_package):
    import coremltools.libmilstoragepython as reader_mod

    from export.mil.program import _Weights

    path, _ = weighted_package
    prog = load_program(path)
    blobs = [
        op.attributes["val"]
        for op in prog.operations
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"
    ]
    assert blobs, "the weight should live in the blob file"
    reader = reader_mod._BlobStorageReader(str(prog.weights_dir / "weight.bin"))
    mine = _Weights(prog.weights_dir, str(path))
    for val in blobs:
        off = val.blobFileValue.offset
        shape = tuple(d.constant.size for d in val.type.tensorType.dimensions)
        assert val.type.tensorType.dataType == 10  # FLOAT16
        ours = mine.read(val.blobFileValue.fileName, off, np.float16, shape)
        theirs = np.asarray(reader.read_fp16_data(off)).view(np.float16).reshape(shape)
        np.testing.assert_array_equal(ours, theirs)


def _corrupt_copy(src, tmp_path):
    dst = tmp_path / "c.mlpackage"
    shutil.copytree(src, dst)
    return dst


def test_missing_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Core ML package"):
        run_mil(tmp_path / "nope.mlpackage", {})


def test_folder_without_manifest(tmp_path):
    (tmp_path / "x.mlpackage").mkdir()
    with pytest.raises(MILFormatError, match=r"no Manifest\.json"):
        run_mil(tmp_path / "x.mlpackage", {})


def test_corrupt_spec(weighted_package, tmp_path):
    pkg = _corrupt_copy(weighted_package[0], tmp_path)
    spec = pkg / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec.write_bytes(b"\xff\xfe not a protobuf" * 10)
    with pytest.raises(MILFormatError, match="spec is corrupt"):
        run_mil(pkg, {"x": np.zeros((3, 16), np.float32)})


def test_missing_spec(weighted_package, tmp_path):
    pkg = _corrupt_copy(weighted_package[0], tmp_path)
    (pkg / "Data" / "com.apple.CoreML" / "model.mlmodel").unlink()
    with pytest.raises(MILFormatError, match=r"model spec .* is missing"):
        run_mil(pkg, {"x": np.zeros((3, 16), np.float32)})


def test_corrupt_weight_blob(weighted_package, tmp_path):
    pkg = _corrupt_copy(weighted_package[0], tmp_path)
    blob = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    data[64:68] = b"\x00\x00\x00\x00"  # the first blob's sentinel
    blob.write_bytes(bytes(data))
    with pytest.raises(MILFormatError, match="bad sentinel"):
        run_mil(pkg, {"x": np.zeros((3, 16), np.float32)})


def test_truncated_weight_file(weighted_package, tmp_path):
    pkg = _corrupt_copy(weighted_package[0], tmp_path)
    blob = pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    blob.write_bytes(blob.read_bytes()[:200])
    with pytest.raises(MILFormatError, match=r"truncated|past the end"):
        run_mil(pkg, {"x": np.zeros((3, 16), np.float32)})


def test_missing_weight_file(weighted_package, tmp_path):
    pkg = _corrupt_copy(weighted_package[0], tmp_path)
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").unlink()
    with pytest.raises(MILFormatError, match=r"weight file .* is missing"):
        run_mil(pkg, {"x": np.zeros((3, 16), np.float32)})


def test_unknown_op_is_named(tmp_path):
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.cumsum(x=x, axis=1)

    path = _save(prog, tmp_path / "u.mlpackage")
    with pytest.raises(UnsupportedOpError, match="MIL op 'cumsum'"):
        run_mil(path, {"x": np.zeros((2, 3), np.float32)})


@pytest.mark.parametrize(
    ("inputs", "exc", "match"),
    [
        ({}, ValueError, "missing 'x'"),
        ({"x": np.zeros((3, 16)), "y": np.zeros(1)}, ValueError, "unknown 'y'"),
        ({"x": np.zeros((16, 3))}, ValueError, r"must have shape \(3, 16\), got \(16, 3\)"),
        ({"x": np.array([["a"] * 16] * 3)}, TypeError, "must be numeric"),
        ([np.zeros((3, 16))], TypeError, "inputs must be a dict"),
    ],
)
def test_bad_inputs(weighted_package, inputs, exc, match):
    with pytest.raises(exc, match=match):
        run_mil(weighted_package[0], inputs)


def test_bad_precision(weighted_package):
    with pytest.raises(ValueError, match="precision must be one of"):
        run_mil(weighted_package[0], {"x": np.zeros((3, 16))}, precision="int8")


def test_torch_inputs_accepted(weighted_package):
    path, _ = weighted_package
    x = torch.randn(3, 16)
    (a,) = run_mil(path, {"x": x}).values()
    (b,) = run_mil(path, {"x": x.numpy()}).values()
    np.testing.assert_array_equal(a, b)
