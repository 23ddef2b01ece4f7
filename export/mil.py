"""A numpy interpreter for Core ML ML Programs (MIL), to check a program's numbers on Linux.

    from export import run_mil
    outs = run_mil("attn.mlpackage", {"q": q, "k": k, "v": v}, precision="fp16")

coremltools converts and saves on Linux but predicts only on macOS. This module reads the
saved package itself: the protobuf spec (`Data/com.apple.CoreML/model.mlmodel`, parsed with
coremltools' generated protobuf classes) and the weight blob file (`weights/weight.bin`),
whose format it parses here with numpy (a 64-byte header, then per blob a 64-byte
metadata record: sentinel 0xDEADBEEF, data type, size, data offset), so it needs none of
coremltools' compiled helpers. Then it runs the main function op by op.

In fp16 mode every op's floating output is rounded to float16, as the device stores it
(each op computes in float32 from float16 inputs); in fp32 mode floats stay float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("fp16", "fp32")
# user-defined metadata key to_coreml writes: the precision the program was converted for
PRECISION_KEY = "com.github.mobileattn.precision"


class MILFormatError(ValueError):
    """The package or program cannot be read: missing, corrupt, or not an ML Program."""


class UnsupportedOpError(NotImplementedError):
    """The program holds an op this interpreter does not implement."""


# -- loading ---------------------------------------------------------------------------

_NP_DTYPES = {
    "FLOAT16": np.float16,
    "FLOAT32": np.float32,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}

# MIL storage's blob data-type codes for the types whose code we check; other whole-byte
# types are checked by size only.
_BLOB_CODES = {1: np.float16, 2: np.float32, 3: np.uint8, 4: np.int8}
_BLOB_SENTINEL = 0xDEADBEEF
_HEADER_BYTES = 64
_METADATA_BYTES = 64


@dataclass
class TensorSpec:
    """A program input or op output: dtype name ("FLOAT16", ...) and static shape."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None  # None where a dimension is not static

    def __str__(self) -> str:
        dims = "?" if self.shape is None else tuple(self.shape)
        return f"{self.name} {dims} {self.dtype.lower()}"


@dataclass
class Program:
    """A loaded ML Program: its protobuf spec, main block and where its weights are."""

    spec: Any  # coremltools.proto.Model_pb2.Model
    block: Any  # MIL_pb2.Block of the main function
    opset: str
    inputs: list[TensorSpec]
    outputs: list[str]
    weights_dir: Path | None
    source: str
    metadata: dict[str, str]

    @property
    def operations(self) -> list:
        return list(self.block.operations)


def tensor_spec(name: str, value_type) -> TensorSpec:
    from coremltools.proto import MIL_pb2

    kind = value_type.WhichOneof("type")
    if kind != "tensorType":
        return TensorSpec(name, (kind or "none").upper(), None)
    t = value_type.tensorType
    dims = []
    for d in t.dimensions:
        if d.WhichOneof("dimension") != "constant":
            return TensorSpec(name, MIL_pb2.DataType.Name(t.dataType), None)
        dims.append(int(d.constant.size))
    return TensorSpec(name, MIL_pb2.DataType.Name(t.dataType), tuple(dims))


def _root_model_file(pkg: Path) -> Path:
    manifest = pkg / "Manifest.json"
    if not manifest.is_file():
        raise MILFormatError(f"{pkg} is not an .mlpackage: it has no Manifest.json")
    try:
        info = json.loads(manifest.read_text())
        root = info["itemInfoEntries"][info["rootModelIdentifier"]]["path"]
    except (ValueError, KeyError, TypeError) as e:
        raise MILFormatError(f"{pkg}: Manifest.json is corrupt ({e!r})") from None
    model = pkg / "Data" / root
    if not model.is_file():
        raise MILFormatError(f"{pkg}: the model spec {model.relative_to(pkg)} is missing")
    return model


def _parse_spec(data: bytes, where: str):
    from coremltools.proto import Model_pb2
    from google.protobuf.message import DecodeError

    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(data)
    except DecodeError as e:
        raise MILFormatError(f"{where}: the model spec is corrupt ({e})") from None
    return spec


def load_program(path_or_model, function: str = "main") -> Program:
    """Loads an ML Program from an .mlpackage path, a coremltools MLModel or a Model spec.

    Raises FileNotFoundError for a missing path and MILFormatError (a ValueError) for
    anything that is not a readable ML Program.
    """
    weights_dir = None
    if isinstance(path_or_model, (str, Path)):
        pkg = Path(path_or_model)
        if not pkg.exists():
            raise FileNotFoundError(f"no Core ML package at {str(pkg)!r}")
        if not pkg.is_dir():
            raise MILFormatError(f"{pkg} is not an .mlpackage folder")
        model_file = _root_model_file(pkg)
        spec = _parse_spec(model_file.read_bytes(), str(pkg))
        weights_dir = model_file.parent / "weights"
        source = str(pkg)
    elif hasattr(path_or_model, "get_spec"):  # coremltools.models.MLModel
        spec = path_or_model.get_spec()
        wd = getattr(path_or_model, "weights_dir", None)
        weights_dir = Path(wd) if wd else None
        source = "<MLModel>"
    elif hasattr(path_or_model, "mlProgram"):  # a Model_pb2.Model
        spec = path_or_model
        source = "<spec>"
    else:
        raise TypeError(
            "expected a path to an .mlpackage, a coremltools MLModel or a Model spec, "
            f"got {type(path_or_model).__name__}"
        )
    if spec.WhichOneof("Type") != "mlProgram":
        raise MILFormatError(
            f"{source} is not an ML Program (model type {spec.WhichOneof('Type')!r}); "
            "convert with convert_to='mlprogram'"
        )
    prog = spec.mlProgram
    if function not in prog.functions:
        raise MILFormatError(f"{source}: no function {function!r} (has {list(prog.functions)})")
    fn = prog.functions[function]
    opset = fn.opset
    if opset not in fn.block_specializations:
        raise MILFormatError(f"{source}: function {function!r} has no block for opset {opset}")
    block = fn.block_specializations[opset]
    inputs = [tensor_spec(i.name, i.type) for i in fn.inputs]
    metadata = dict(spec.description.metadata.userDefined)
    return Program(spec, block, opset, inputs, list(block.outputs), weights_dir, source, metadata)


# -- values ----------------------------------------------------------------------------


class _Weights:
    """Reads tensors out of weight blob files (memory-mapped, opened once)."""

    def __init__(self, weights_dir: Path | None, source: str):
        self.dir, self.source = weights_dir, source
        self._files: dict[str, np.ndarray] = {}

    def _file(self, file_name: str) -> np.ndarray:
        if file_name not in self._files:
            rel = file_name.removeprefix("@model_path/").removeprefix("weights/")
            if self.dir is None:
                raise MILFormatError(f"{self.source}: weights {file_name!r} but no weights folder")
            path = self.dir / rel
            if not path.is_file():
                raise MILFormatError(f"{self.source}: the weight file {path} is missing")
            mm = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0)
            if mm.size < _HEADER_BYTES:
                raise MILFormatError(f"{self.source}: the weight file {path} is truncated")
            self._files[file_name] = mm
        return self._files[file_name]

    def read(self, file_name: str, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
        mm = self._file(file_name)
        where = f"{self.source}: weight blob at offset {offset} of {file_name}"
        if offset + _METADATA_BYTES > mm.size:
            raise MILFormatError(f"{where} lies past the end of the file (corrupt package)")
        meta = mm[offset : offset + _METADATA_BYTES]
        sentinel, code = np.frombuffer(meta[:8].tobytes(), dtype="<u4")
        size, data_offset = np.frombuffer(meta[8:24].tobytes(), dtype="<u8")
        if sentinel != _BLOB_SENTINEL:
            raise MILFormatError(f"{where} has no blob header (bad sentinel; corrupt package)")
        dtype = np.dtype(dtype)
        if int(code) in _BLOB_CODES and np.dtype(_BLOB_CODES[int(code)]) != dtype:
            raise MILFormatError(f"{where} holds {_BLOB_CODES[int(code)].__name__}, spec {dtype}")
        need = math.prod(shape) * dtype.itemsize
        if int(size) != need:
            raise MILFormatError(f"{where} holds {int(size)} bytes, shape {shape} needs {need}")
        if int(data_offset) + need > mm.size:
            raise MILFormatError(f"{where} is truncated")
        raw = mm[int(data_offset) : int(data_offset) + need].tobytes()
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def _decode(value, weights: _Weights) -> Any:
    """A MIL Value (immediate or blob) -> numpy array (0-d for scalars) or str."""
    spec = tensor_spec("", value.type)
    kind = value.WhichOneof("value")
    if spec.dtype == "STRING":
        strings = list(value.immediateValue.tensor.strings.values)
        return strings[0] if not spec.shape else np.array(strings, dtype=object)
    if spec.dtype not in _NP_DTYPES or spec.shape is None:
        raise UnsupportedOpError(f"constant of type {spec.dtype} / dynamic shape not supported")
    dtype = np.dtype(_NP_DTYPES[spec.dtype])
    shape = spec.shape
    if kind == "blobFileValue":
        b = value.blobFileValue
        return weights.read(b.fileName, int(b.offset), dtype, shape)
    if kind != "immediateValue" or value.immediateValue.WhichOneof("value") != "tensor":
        raise UnsupportedOpError(f"MIL value of kind {kind!r} not supported")
    t = value.immediateValue.tensor
    field = t.WhichOneof("value")
    if field == "bytes":
        arr = np.frombuffer(t.bytes.values, dtype=dtype.newbyteorder("<"))
    elif field is None:
        arr = np.zeros(0, dtype=dtype)
    else:
        arr = np.asarray(list(getattr(t, field).values)).astype(dtype)
    if arr.size != math.prod(shape):
        raise MILFormatError(f"constant holds {arr.size} values, its type {shape} needs more")
    return arr.reshape(shape)


# -- ops -------------------------------------------------------------------------------


def _axes(x: np.ndarray, axes) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(x.ndim))
    return tuple(int(a) % max(x.ndim, 1) for a in np.atleast_1d(axes))


def _reduce(fn: Callable) -> Callable:
    def op(x, axes=None, keep_dims=False):
        return fn(x, _axes(x, axes), bool(keep_dims))

    return op


def _lse(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=int(axis), keepdims=True))
    return e / np.sum(e, axis=int(axis), keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _erf(x):
    import torch  # exact erf without scipy

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _gelu(x, mode="EXACT"):
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    if mode != "EXACT":
        raise UnsupportedOpError(f"gelu mode {mode!r}")
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _channel(alpha, x):
    """A per-channel (axis 1) parameter broadcast against x."""
    return np.reshape(alpha, (1, -1) + (1,) * (x.ndim - 2))


def _reshape(x, shape):
    shape = [int(s) for s in np.atleast_1d(shape)]
    if len(shape) == x.ndim:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return np.reshape(x, shape)


def _expand_dims(x, axes):
    out_rank = x.ndim + len(np.atleast_1d(axes))
    for a in sorted(int(a) % out_rank for a in np.atleast_1d(axes)):
        x = np.expand_dims(x, a)
    return x


def _squeeze(x, axes=None):
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=_axes(x, axes))


def _concat(values, axis, interleave=False):
    axis = int(axis) % values[0].ndim
    if bool(interleave):
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


def _split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis) % x.ndim
    if split_sizes is None:
        split_sizes = [x.shape[axis] // int(num_splits)] * int(num_splits)
    bounds = np.cumsum([int(s) for s in np.atleast_1d(split_sizes)])[:-1]
    return np.split(x, bounds, axis=axis)


def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    rank = x.ndim
    begin = [int(b) for b in np.atleast_1d(begin)]
    end = [int(e) for e in np.atleast_1d(end)]
    stride = [1] * rank if stride is None else [int(s) for s in np.atleast_1d(stride)]
    bm = [False] * rank if begin_mask is None else [bool(m) for m in np.atleast_1d(begin_mask)]
    em = [False] * rank if end_mask is None else [bool(m) for m in np.atleast_1d(end_mask)]
    sm = [False] * rank if squeeze_mask is None else [bool(m) for m in np.atleast_1d(squeeze_mask)]
    index = []
    for i in range(rank):
        if sm[i]:
            index.append(begin[i])  # one element, axis removed
        else:
            index.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return np.asarray(x[tuple(index)])


def _slice_by_size(x, begin, size):
    index = []
    for i, (b, s) in enumerate(zip(np.atleast_1d(begin), np.atleast_1d(size), strict=True)):
        b = int(b) % x.shape[i] if x.shape[i] else 0
        index.append(slice(b, None if int(s) == -1 else b + int(s)))
    return x[tuple(index)]


def _pad(x, pad, mode="constant", constant_val=0.0):
    pad = [int(p) for p in np.atleast_1d(pad)]
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=float(constant_val))
    modes = {"reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise UnsupportedOpError(f"pad mode {mode!r}")
    return np.pad(x, widths, mode=modes[mode])


def _matmul(x, y, transpose_x=False, transpose_y=False):
    if bool(transpose_x) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if bool(transpose_y) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _linear(x, weight, bias=None):
    out = np.matmul(x, weight.T)
    return out if bias is None else out + bias


def _einsum(values, equation):
    """The two equations MIL's einsum supports: "nchw,nwhu->nchu" and "chw,whr->chr" (any
    letters), batch and h axes broadcasting where one side has size 1."""
    a, b = values
    eq = str(equation).replace(" ", "")
    lhs, out = eq.split("->")
    ea, eb = lhs.split(",")
    if len(ea) == 4 and (eb, out) == (ea[0] + ea[3] + ea[2] + eb[3], ea[:3] + eb[3]):
        r = np.matmul(a.transpose(0, 2, 1, 3), b.transpose(0, 2, 1, 3))  # (n, h, c, u)
        return r.transpose(0, 2, 1, 3)
    if len(ea) == 3 and (eb, out) == (ea[2] + ea[1] + eb[2], ea[:2] + eb[2]):
        r = np.matmul(a.transpose(1, 0, 2), b.transpose(1, 0, 2))  # (h, c, r)
        return r.transpose(1, 0, 2)
    raise UnsupportedOpError(f"einsum equation {equation!r} (MIL supports nchw,nwhu->nchu only)")


def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """Grouped 2D convolution on NCHW (1D convolution runs as 2D with height 1)."""
    squeeze = x.ndim == 3
    if squeeze:
        x, weight = x[:, :, None, :], weight[:, :, None, :]
    if x.ndim != 4:
        raise UnsupportedOpError(f"conv with {x.ndim - 2} spatial dims (only 1D/2D)")
    k = weight.shape[2:]
    n_sp = 1 if squeeze else 2
    strides = [1] * n_sp if strides is None else [int(s) for s in np.atleast_1d(strides)]
    dil = [1] * n_sp if dilations is None else [int(d) for d in np.atleast_1d(dilations)]
    if squeeze:
        strides, dil = [1, *strides], [1, *dil]
    eff = [(k[i] - 1) * dil[i] + 1 for i in range(2)]
    if pad_type == "valid":
        widths = [(0, 0), (0, 0)]
    elif pad_type == "custom":
        p = [int(v) for v in np.atleast_1d(pad)]
        widths = [(0, 0), (p[0], p[1])] if squeeze else [(p[0], p[1]), (p[2], p[3])]
    elif pad_type in ("same", "same_lower"):
        widths = []
        for i in range(2):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + eff[i] - size, 0)
            small = total // 2
            widths.append((small, total - small) if pad_type == "same" else (total - small, small))
    else:
        raise UnsupportedOpError(f"conv pad_type {pad_type!r}")
    xp = np.pad(x, [(0, 0), (0, 0), *widths])
    if k == (1, 1):
        win = xp[:, :, :: strides[0], :: strides[1]][..., None, None]
    else:
        win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=(2, 3))
        win = win[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]
    g = int(groups)
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, g, c // g, oh, ow, k[0], k[1])
    w = weight.reshape(g, weight.shape[0] // g, c // g, k[0], k[1])
    out = np.einsum("ngchwij,gocij->ngohw", win, w, optimize=True)
    out = out.reshape(n, weight.shape[0], oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if squeeze else out


def _layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    axes = _axes(x, axes)
    norm_shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    c = x - np.mean(x, axis=axes, keepdims=True)
    out = c / np.sqrt(np.mean(c * c, axis=axes, keepdims=True) + float(epsilon))
    if gamma is not None:
        out = out * np.reshape(gamma, norm_shape)
    if beta is not None:
        out = out + np.reshape(beta, norm_shape)
    return out


def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    out = (x - _channel(mean, x)) / np.sqrt(_channel(variance, x) + float(epsilon))
    if gamma is not None:
        out = out * _channel(gamma, x)
    if beta is not None:
        out = out + _channel(beta, x)
    return out


def _instance(x, gamma, beta, epsilon):
    sp = tuple(range(2, x.ndim))
    c = x - np.mean(x, axis=sp, keepdims=True)
    out = c / np.sqrt(np.mean(c * c, axis=sp, keepdims=True) + float(epsilon))
    if gamma is not None:
        out = out * _channel(gamma, x)
    if beta is not None:
        out = out + _channel(beta, x)
    return out


def _gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise UnsupportedOpError("gather with batch_dims != 0")
    return np.take(x, indices.astype(np.int64), axis=int(axis))


def _affine_dequantize(quantized_data, zero_point, scale, axis):
    shape = [1] * quantized_data.ndim
    q = quantized_data.astype(np.float32)
    if np.ndim(scale) == 1 and np.size(scale) > 1:
        shape[int(axis)] = -1
    zp = np.reshape(zero_point, shape) if np.ndim(zero_point) else zero_point
    sc = np.reshape(scale, shape) if np.ndim(scale) else scale
    return (q - np.asarray(zp, dtype=np.float32)) * np.asarray(sc, dtype=np.float32)


_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


def _cast(x, dtype):
    if dtype not in _CAST_DTYPES:
        raise UnsupportedOpError(f"cast to {dtype!r}")
    return np.asarray(x).astype(_CAST_DTYPES[dtype])


def _binary(fn: Callable) -> Callable:
    return lambda x, y: fn(x, y)


def _unary(fn: Callable) -> Callable:
    return lambda x: fn(x)


OPS: dict[str, Callable] = {
    # elementwise binary (numpy broadcasting, as MIL's)
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.true_divide),
    "floor_div": _binary(np.floor_divide),
    "mod": _binary(np.mod),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_xor": _binary(np.logical_xor),
    # elementwise unary
    "abs": _unary(np.abs),
    "acos": _unary(np.arccos),
    "asin": _unary(np.arcsin),
    "atan": _unary(np.arctan),
    "atanh": _unary(np.arctanh),
    "ceil": _unary(np.ceil),
    "cos": _unary(np.cos),
    "cosh": _unary(np.cosh),
    "erf": _unary(_erf),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "floor": _unary(np.floor),
    "round": _unary(np.round),
    "sign": _unary(np.sign),
    "sin": _unary(np.sin),
    "sinh": _unary(np.sinh),
    "sqrt": _unary(np.sqrt),
    "square": _unary(np.square),
    "tan": _unary(np.tan),
    "tanh": _unary(np.tanh),
    "logical_not": _unary(np.logical_not),
    "inverse": lambda x, epsilon=1e-4: 1.0 / (x + epsilon),
    "log": lambda x, epsilon=1e-45: np.log(x + epsilon),
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(x + epsilon),
    "clip": lambda x, alpha, beta: np.minimum(np.maximum(x, alpha), beta),
    "threshold": lambda x, alpha: np.maximum(x, alpha),
    "cast": _cast,
    "identity": lambda x: x,
    # activations
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "elu": lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
    "leaky_relu": lambda x, alpha=0.01: np.where(x < 0, x * alpha, x),
    "prelu": lambda x, alpha: np.maximum(x, 0) + np.minimum(x, 0) * _channel(alpha, x),
    "sigmoid": _sigmoid,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "gelu": _gelu,
    "sigmoid_hard": lambda x, alpha, beta: np.minimum(np.maximum(alpha * x + beta, 0), 1),
    "linear_activation": lambda x, alpha, beta: alpha * x + beta,
    "scaled_tanh": lambda x, alpha, beta: alpha * np.tanh(beta * x),
    "clamped_relu": lambda x, alpha, beta: (
        np.minimum(np.maximum(x, 0), beta) + np.minimum(np.minimum(x, 0) * alpha, beta)
    ),
    "thresholded_relu": lambda x, alpha=1.0: np.where(x < alpha, 0, x),
    "softmax": _softmax,
    # reductions
    "reduce_sum": _reduce(lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "reduce_mean": _reduce(lambda x, a, k: np.mean(x, axis=a, keepdims=k)),
    "reduce_max": _reduce(lambda x, a, k: np.max(x, axis=a, keepdims=k)),
    "reduce_min": _reduce(lambda x, a, k: np.min(x, axis=a, keepdims=k)),
    "reduce_prod": _reduce(lambda x, a, k: np.prod(x, axis=a, keepdims=k)),
    "reduce_sum_square": _reduce(lambda x, a, k: np.sum(x * x, axis=a, keepdims=k)),
    "reduce_l1_norm": _reduce(lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k)),
    "reduce_l2_norm": _reduce(lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k))),
    "reduce_log_sum": _reduce(lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k))),
    "reduce_log_sum_exp": _reduce(_lse),
    "reduce_argmax": lambda x, axis=-1, keep_dims=False: np.argmax(
        x, axis=int(axis), keepdims=bool(keep_dims)
    ),
    "reduce_argmin": lambda x, axis=-1, keep_dims=False: np.argmin(
        x, axis=int(axis), keepdims=bool(keep_dims)
    ),
    # layout and indexing
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "reshape": _reshape,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "concat": _concat,
    "stack": lambda values, axis: np.stack(values, axis=int(axis)),
    "split": _split,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "pad": _pad,
    "select": lambda cond, a, b: np.where(cond, a, b),
    "fill": lambda shape, value=0.0: np.full([int(s) for s in np.atleast_1d(shape)], value),
    "fill_like": lambda ref_tensor, value=0.0: np.full(ref_tensor.shape, value),
    "shape": lambda x: np.array(x.shape, dtype=np.int32),
    "range_1d": lambda end, start, step: np.arange(start, end, step),
    "gather": _gather,
    "gather_along_axis": lambda x, indices, axis=0: np.take_along_axis(
        x, indices.astype(np.int64), axis=int(axis)
    ),
    # linear algebra
    "matmul": _matmul,
    "linear": _linear,
    "einsum": _einsum,
    "conv": _conv,
    # normalisation
    "layer_norm": _layer_norm,
    "batch_norm": _batch_norm,
    "instance_norm": _instance,
    # constants
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_cast": lambda source_val, output_dtype: _cast(source_val, output_dtype),
}

# Parameters that take a tuple of values (MIL TupleInputType).
_TUPLE_PARAMS = {"concat": ("values",), "stack": ("values",), "einsum": ("values",)}
_IGNORED_ATTRIBUTES = ("name",)


def supported_ops() -> tuple[str, ...]:
    """Op types run_mil can execute (besides `const`)."""
    return tuple(sorted({"const", *OPS}))


def _first_output(op) -> str:
    return op.outputs[0].name if op.outputs else "?"


def check_supported(prog: Program) -> None:
    """Raises UnsupportedOpError naming the first op type the interpreter cannot run."""
    for op in prog.operations:
        if op.type != "const" and op.type not in OPS:
            raise UnsupportedOpError(
                f"run_mil cannot run MIL op {op.type!r} (output {_first_output(op)!r}) in "
                f"{prog.source}; export.mil.supported_ops() lists the {len(supported_ops())} "
                "it can"
            )
        if op.blocks:
            raise UnsupportedOpError(
                f"run_mil cannot run control flow: op {op.type!r} ({_first_output(op)!r}) "
                "has nested blocks"
            )


# -- the interpreter -------------------------------------------------------------------


def _to_numpy(name: str, x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"input {name!r} must be numeric, got dtype {arr.dtype}")
    return arr


def _feeds(prog: Program, inputs: Mapping[str, Any], float_dtype) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a dict {{name: array}}, got {type(inputs).__name__}")
    expected = {s.name: s for s in prog.inputs}
    listing = ", ".join(str(s) for s in prog.inputs)
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unknown {', '.join(map(repr, extra))}")
        raise ValueError(f"inputs: {'; '.join(parts)}; the program takes: {listing}")
    out = {}
    for name, spec in expected.items():
        arr = _to_numpy(name, inputs[name])
        if spec.shape is not None and tuple(arr.shape) != spec.shape:
            raise ValueError(f"input {name!r} must have shape {spec.shape}, got {tuple(arr.shape)}")
        dtype = _NP_DTYPES.get(spec.dtype)
        if dtype is None:
            raise UnsupportedOpError(f"input {name!r} of type {spec.dtype}")
        arr = arr.astype(dtype)  # what the program receives (fp16 inputs are rounded)
        out[name] = arr.astype(float_dtype) if arr.dtype.kind == "f" else arr
    return out


class _Interpreter:
    def __init__(self, prog: Program, precision: str):
        self.prog = prog
        self.float_dtype = np.float16 if precision == "fp16" else np.float32
        self.weights = _Weights(prog.weights_dir, prog.source)

    def _arg(self, env, binding):
        if binding.WhichOneof("binding") == "name":
            if binding.name not in env:
                raise MILFormatError(f"{self.prog.source}: value {binding.name!r} used undefined")
            return env[binding.name]
        return self._store(_decode(binding.value, self.weights))

    def _store(self, x):
        """Floating arrays are stored in the interpreter's precision."""
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            return x.astype(self.float_dtype)
        return x

    def _params(self, env, op) -> dict[str, Any]:
        params = {}
        for key, arg in op.inputs.items():
            vals = [self._arg(env, b) for b in arg.arguments]
            params[key] = vals if key in _TUPLE_PARAMS.get(op.type, ()) else vals[0]
        for key, val in op.attributes.items():
            if key not in _IGNORED_ATTRIBUTES and key not in params:
                params[key] = self._store(_decode(val, self.weights))
        # compute in float32 from the stored values (fp16 storage, fp32 arithmetic)
        return {k: _upcast(v) for k, v in params.items()}

    def _outputs(self, op, result) -> list[np.ndarray]:
        results = list(result) if op.type == "split" else [result]
        if len(results) != len(op.outputs):
            raise RuntimeError(
                f"op {op.type} gave {len(results)} outputs, expected {len(op.outputs)}"
            )
        out = []
        for val, spec_proto in zip(results, op.outputs, strict=True):
            spec = tensor_spec(spec_proto.name, spec_proto.type)
            arr = np.asarray(val)
            want = _NP_DTYPES.get(spec.dtype)
            if want is not None and np.dtype(want).kind == "f":
                arr = arr.astype(self.float_dtype)
            elif want is not None:
                arr = arr.astype(want)
            if spec.shape is not None and tuple(arr.shape) != spec.shape:
                raise RuntimeError(
                    f"run_mil: op {op.type!r} ({spec.name!r}) produced shape {arr.shape}, "
                    f"the program declares {spec.shape}"
                )
            out.append(arr)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ops = self.prog.operations
        keep = set(self.prog.outputs)
        last_use: dict[str, int] = {}
        for i, op in enumerate(ops):
            for arg in op.inputs.values():
                for b in arg.arguments:
                    if b.WhichOneof("binding") == "name":
                        last_use[b.name] = i
        env: dict[str, Any] = dict(feeds)
        with np.errstate(all="ignore"):  # inf / nan propagate as on the device
            for i, op in enumerate(ops):
                if op.type == "const":
                    vals = [self._store(_decode(op.attributes["val"], self.weights))]
                else:
                    vals = self._outputs(op, OPS[op.type](**self._params(env, op)))
                for spec_proto, val in zip(op.outputs, vals, strict=True):
                    env[spec_proto.name] = val
                for arg in op.inputs.values():
                    for b in arg.arguments:
                        name = b.name if b.WhichOneof("binding") == "name" else None
                        if name and last_use.get(name) == i and name not in keep:
                            env.pop(name, None)
        missing = [n for n in self.prog.outputs if n not in env]
        if missing:
            raise MILFormatError(f"{self.prog.source}: outputs {missing} are never computed")
        return {n: np.asarray(env[n]) for n in self.prog.outputs}


def _upcast(v):
    if isinstance(v, np.ndarray) and v.dtype == np.float16:
        return v.astype(np.float32)
    if isinstance(v, list):
        return [_upcast(x) for x in v]
    return v


def run_mil(path, inputs: Mapping[str, Any], precision: str = "fp16") -> dict[str, np.ndarray]:
    """Runs the main function of a saved ML Program with numpy.

    Args:
        path: an .mlpackage folder (or a loaded coremltools MLModel).
        inputs: {input name: array} (numpy arrays or torch tensors), shapes as the program's.
        precision: "fp16" (every op's floating output rounded to float16, as the device
            stores it) or "fp32" (float32 throughout).

    Returns {output name: ndarray} (float16 arrays in fp16 mode, float32 in fp32 mode).
    Raises UnsupportedOpError (a NotImplementedError) naming an op it cannot run,
    FileNotFoundError / MILFormatError (a ValueError) for a missing or corrupt package.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    prog = load_program(path)
    check_supported(prog)
    interp = _Interpreter(prog, precision)
    return interp.run(_feeds(prog, inputs, interp.float_dtype))
