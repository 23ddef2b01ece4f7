"""Reading a saved Core ML ML Program without coremltools' compiled helpers: the protobuf
spec (`Data/com.apple.CoreML/model.mlmodel`, parsed with coremltools' generated protobuf
classes), the program's inputs, outputs and operations, and the weight blob file
(`weights/weight.bin`), whose format is parsed here with numpy: a 64-byte header, then per
blob a 64-byte metadata record (sentinel 0xDEADBEEF, data type, size, data offset).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
