"""A numpy interpreter for Core ML ML Programs (MIL), to check a program's numbers on Linux.

    from export import run_mil
    outs = run_mil("attn.mlpackage", {"q": q, "k": k, "v": v}, precision="fp16")

coremltools converts and saves on Linux but predicts only on macOS. The package is read by
export.mil.program (spec and weight blobs, no compiled helpers needed), each op runs from
the numpy table in export.mil.ops, and this module walks the main function op by op.

In fp16 mode every op's floating output is rounded to float16, as the device stores it
(each op computes in float32 from float16 inputs); in fp32 mode floats stay float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from export.mil.ops import _IGNORED_ATTRIBUTES, _TUPLE_PARAMS, OPS, check_supported
from export.mil.program import (
    _NP_DTYPES,
    MILFormatError,
    Program,
    UnsupportedOpError,
    _decode,
    _Weights,
    load_program,
    tensor_spec,
)

PRECISIONS = ("fp16", "fp32")


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
