"""Core ML export: a PyTorch module to an ML Program `.mlpackage`, written atomically.

    from export import to_coreml
    to_coreml(module, (q, k, v), "attn.mlpackage", precision="fp16", target="iOS16")

Core ML input names are the module's forward argument names; outputs are named "output"
(one tensor) or "output_0", "output_1", ... (a tuple), unless output_names says otherwise.
With precision="fp16" and an iOS16+ target the program's inputs and outputs are float16.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from export.files import TEMP_SUFFIX, temp_prefix
from export.mil import PRECISION_KEY

PRECISIONS = ("fp16", "fp32")
# ML Programs need iOS15 / macOS12 or newer; each name is a coremltools `ct.target` member.
TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
DEFAULT_TARGET = "iOS16"  # fp16 inputs/outputs without casts (iOS16+), as Apple's SD models


def _forward_params(module: torch.nn.Module) -> list[inspect.Parameter]:
    params = list(inspect.signature(module.forward).parameters.values())
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY):
            raise ValueError(
                f"module.forward must take named positional arguments only (they become the "
                f"Core ML input names); got parameter {p}"
            )
    return params


def _check_inputs(module, example_inputs) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, Sequence) or isinstance(example_inputs, str):
        raise TypeError(
            "example_inputs must be a tuple or list of tensors (one per forward argument), "
            f"got {type(example_inputs).__name__}"
        )
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"example_inputs[{i}] must be a torch.Tensor, got {type(x).__name__}")
    params = _forward_params(module)
    required = [p for p in params if p.default is p.empty]
    if not len(required) <= len(example_inputs) <= len(params):
        names = ", ".join(p.name for p in params)
        raise ValueError(
            f"example_inputs must match module.forward({names}): expected "
            f"{len(required)}..{len(params)} tensors, got {len(example_inputs)}"
        )
    names = [p.name for p in params[: len(example_inputs)]]
    return tuple(example_inputs), names


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"path must end in .mlpackage (an ML Program package), got {str(path)!r}")
    return path


def _target(target):
    import coremltools as ct

    if isinstance(target, ct.target):
        name = target.name
    elif isinstance(target, str):
        name = target
    else:
        raise TypeError(f"target must be a str or coremltools.target, got {type(target).__name__}")
    if name not in TARGETS:
        raise ValueError(
            f"target must be one of {', '.join(TARGETS)} (ML Programs need iOS15/macOS12+), "
            f"got {target!r}"
        )
    return getattr(ct.target, name)


def _capture(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]):
    """Captures `module` for coremltools with torch.export, not torch.jit.trace.

    Why (torch 2.13, coremltools 9.0): under jit.trace, Python arithmetic on shapes
    (`n ** -0.5`, `-log(n)`) is recorded as int32 tensor ops that coremltools rejects
    ("inverse expects fp16/fp32, got int32"), and the performer's seeded projection is traced
    with its torch.Generator, which coremltools cannot convert. torch.export evaluates shape
    arithmetic to constants and keeps `aten.einsum` intact, so coremltools still lowers
    "nchw,nwhu->nchu" to the native MIL einsum. run_decompositions({}) turns the export's
    training IR into the ATen inference IR coremltools' frontend reads, decomposing nothing.
    """
    with torch.no_grad():
        ep = torch.export.export(module, example_inputs)
    return ep.run_decompositions({})


def _write_atomic(mlmodel, path: Path) -> None:
    """Saves to a temporary folder beside `path`, then renames; an existing package is moved
    aside first and removed only after the new one is in place (moved back on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent))
    keep_tmp = False  # True only if the old package could not be moved back: never delete it
    try:
        staged = tmp_dir / path.name
        mlmodel.save(str(staged))
        old = None
        if path.exists() or path.is_symlink():
            old = tmp_dir / (path.name + ".old")
            os.replace(path, old)
        try:
            os.replace(staged, path)
        except BaseException:
            if old is not None:
                try:
                    os.replace(old, path)
                except OSError as err:
                    keep_tmp = True
                    msg = f"could not restore {path}; the old package is at {old}"
                    raise OSError(msg) from err
            raise
    finally:
        if not keep_tmp:
            shutil.rmtree(tmp_dir, ignore_errors=True)


# Where coremltools 9 draws its tqdm bars during ct.convert (module, name of its tqdm).
_COREMLTOOLS_BARS = (
    ("coremltools.converters.mil.frontend.torch.ops", "_tqdm"),
    ("coremltools.converters.mil.mil.passes.pass_pipeline", "tqdm"),
)


@contextlib.contextmanager
def _coremltools_bars(show: bool):
    """coremltools has no switch for its progress bars: with show False, the tqdm it draws
    them with is swapped for a disabled one while the context runs, then restored."""
    swapped = []
    if not show:
        from tqdm import tqdm

        for module_name, attr in _COREMLTOOLS_BARS:
            try:
                mod = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(mod, attr):
                swapped.append((mod, attr, getattr(mod, attr)))
                setattr(mod, attr, functools.partial(tqdm, disable=True))
    try:
        yield
    finally:
        for mod, attr, original in swapped:
            setattr(mod, attr, original)


def to_coreml(
    module: torch.nn.Module,
    example_inputs,
    path,
    precision: str = "fp16",
    target=DEFAULT_TARGET,
    output_names: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Converts `module` to a Core ML ML Program and saves it as `path` (a .mlpackage).

    Args:
        module: the PyTorch module; its forward's positional argument names become the
            Core ML input names. Put it in eval mode (done here) with static shapes.
        example_inputs: one tensor per forward argument, in order (a single tensor is
            accepted for a one-argument forward); their shapes are the program's shapes.
        path: where to write, must end in .mlpackage; an existing package is replaced.
        precision: "fp16" (ANE: weights and activations in float16) or "fp32".
        target: minimum deployment target, a name from TARGETS or a coremltools.target.
        output_names: the program's output names, one per output of forward (default
            "output", or "output_0", "output_1", ... for a tuple).
        progress: show coremltools' own progress bars (conversion, pass pipeline).

    Returns the written path.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    example_inputs, names = _check_inputs(module, example_inputs)
    if output_names is not None and (
        isinstance(output_names, str)
        or not isinstance(output_names, Sequence)
        or not all(isinstance(n, str) and n for n in output_names)
    ):
        raise TypeError(f"output_names must be a sequence of non-empty str, got {output_names!r}")
    path = _check_path(path)
    ct_target = _target(target)

    import coremltools as ct

    module = module.eval()
    # torch.export records each input's dim order; coremltools takes the standard one only
    # (a size-1 axis can leave a "contiguous" tensor with another order, e.g. after a permute)
    example_inputs = tuple(x.clone(memory_format=torch.contiguous_format) for x in example_inputs)
    ep = _capture(module, example_inputs)
    n_out = len(ep.graph_signature.user_outputs)
    if output_names is None:
        out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    else:
        out_names = list(output_names)
        if len(out_names) != n_out or len(set(out_names)) != n_out:
            raise ValueError(
                f"output_names must name the {n_out} output(s) of module.forward once each, "
                f"got {output_names!r}"
            )
        if set(out_names) & set(names):
            raise ValueError(
                f"output_names must differ from the input names {names}, got {output_names!r}"
            )
    with warnings.catch_warnings(), _coremltools_bars(progress):
        # coremltools' frontend calls its own deprecated registry API on every op
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"coremltools\.")
        mlmodel = ct.convert(
            ep,
            inputs=[
                ct.TensorType(name=n, shape=tuple(x.shape))
                for n, x in zip(names, example_inputs, strict=True)
            ],
            outputs=[ct.TensorType(name=n) for n in out_names],
            convert_to="mlprogram",
            minimum_deployment_target=ct_target,
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        )
    mlmodel.user_defined_metadata[PRECISION_KEY] = precision
    _write_atomic(mlmodel, path)
    return path
