"""The export stages the CLI and the study share, and the bundle they write.

    res = write_bundle(model, example_inputs(cfg, grid), "bundle/", steps=2)

bundle/ then holds model.onnx (the whole model, rank 5, checked under onnxruntime),
model.mlpackage (one denoising step of the channels-first twin, rank 4, fp16, ANE-linted,
checked through the MIL interpreter) and bundle.json (== res): the program's inputs and
outputs (names, shapes, layouts, dtypes, the host-side conversions), the StepSpec that
export.host needs to sample through it, and the numbers: onnxruntime parity and latency,
ANE lint, per-step MIL-interpreter parity, and a clip generated through the program by the
host loop against hybrid_dit.sample. Both files come from the same weights.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from export import host
from hybrid_dit import sample, to_ane
from hybrid_dit.ane import STEP_INPUTS

# fp32 parity bound between PyTorch and onnxruntime (relative RMS error).
ONNX_TOLERANCE = 1e-4
# Apple's parity bar for Core ML against PyTorch (PSNR, dB).
COREML_MIN_PSNR = 35.0
CLIP_STEPS = 2  # the generated clip's Euler steps when neither steps nor the config fix them
CLIP_SEED = 0  # its noise: numpy's default_rng(CLIP_SEED), shared by both samplers
FILES = {"onnx": "model.onnx", "coreml": "model.mlpackage", "json": host.BUNDLE_JSON}
_NP_DTYPE = {"FLOAT16": "float16", "FLOAT32": "float32"}


def errors(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    diff = out - ref
    peak = np.abs(ref).max()
    mse = float(np.mean(diff**2))
    return {
        "max_abs": float(np.abs(diff).max()),
        "rel": float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30)),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse)),
    }


def onnx_stage(model, inputs, out_dir: Path, opset, ref: np.ndarray, timer=None,
               attention: str = "onnx") -> dict:  # fmt: skip
    """model -> out_dir/model.onnx, run once under onnxruntime (export.onnx.session) and
    compared with `ref` (the PyTorch output). `timer(fn) -> {"median": s, ...}` (e.g.
    bench.machine.time_fn), when given, times the session too. `attention`: the graph's
    form of softmax attention (export.onnx.to_onnx)."""
    from export.onnx import session, session_options, to_onnx

    path = to_onnx(model, inputs, out_dir / FILES["onnx"], opset=opset, attention=attention)
    sess = session(path)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), inputs, strict=True)}
    (out,) = sess.run(None, feeds)
    err = errors(out, ref)
    res = {"path": str(path), "attention": attention, **err, "ok": err["rel"] < ONNX_TOLERANCE}
    res["session"] = session_options(sess)
    if timer is not None:
        res["ort_median_s"] = timer(lambda: sess.run(None, feeds))["median"]
    return res


def step_spec(cfg, grid, batch: int, dtype: str = "float16", steps=None) -> host.StepSpec:
    """The host's description of the step program of `cfg` at the token grid."""
    return host.StepSpec(
        in_channels=cfg.in_channels,
        patch_size=cfg.patch_size,
        grid=tuple(grid),
        freq_dim=cfg.freq_dim,
        time_scale=cfg.time_scale,
        motion_scale=cfg.motion_scale,
        batch=batch,
        dtype=dtype,
        sample_steps=cfg.sample_steps,
        steps=steps,
    )


def program_io(path) -> dict:
    """What the saved program declares, read from it (not from a lint summary): its inputs
    and outputs {name: (shape, dtype)} and the largest rank of any input or op output."""
    from export.mil import load_program, tensor_spec

    prog = load_program(path)
    specs = list(prog.inputs)
    specs += [tensor_spec(o.name, o.type) for op in prog.operations for o in op.outputs]
    by_name = {s.name: s for s in specs}
    ranks = [len(s.shape) for s in specs if s.shape is not None]
    return {
        "inputs": {s.name: (s.shape, s.dtype) for s in prog.inputs},
        "outputs": {n: (by_name[n].shape, by_name[n].dtype) for n in prog.outputs},
        "max_rank": max(ranks),
        "unknown_shapes": sum(s.shape is None for s in specs),
    }


def _check_program(io: dict, spec: host.StepSpec) -> None:
    shapes = spec.shapes()
    want = {n: shapes[n] for n in STEP_INPUTS}
    got = {n: s for n, (s, _) in io["inputs"].items()}
    if got != want or {n: s for n, (s, _) in io["outputs"].items()} != {host.V: shapes[host.V]}:
        raise RuntimeError(
            f"the step program's tensors {io['inputs']} -> {io['outputs']} differ from the "
            f"host's description {shapes}"
        )


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"  bundle: {msg}", file=sys.stderr, flush=True)


def coreml_stage(
    model,
    inputs,
    out_dir: Path,
    precision: str,
    ref: np.ndarray,
    steps: int | None = None,
    clip: bool = True,
    progress: bool = False,
) -> dict:
    """One denoising step of the twin -> out_dir/model.mlpackage, then the ANE lint, its
    I/O and ranks read from the saved program, MIL-interpreter parity of one step against
    `ref` (the PyTorch output for `inputs`), and (clip=True) a clip generated through the
    program by export.host.sample against hybrid_dit.sample, same noise.
    Returns {"status": ...} with what was done; never raises for a missing piece."""
    try:
        from export.coreml import to_coreml
    except ImportError as e:
        return {"status": "not available", "reason": f"export.coreml: {e}"}
    cfg = model.cfg
    x_t, t, first_frame, motion = (np.asarray(a) for a in inputs)
    grid = cfg.token_grid(x_t.shape[2:])
    spec = step_spec(cfg, grid, x_t.shape[0], "float32", steps)
    feeds = host.step_inputs(spec, x_t, t, first_frame, motion)  # float32: the twin's dtype
    example = tuple(torch.from_numpy(feeds[n]) for n in STEP_INPUTS)
    try:  # a variant without an ANE form raises NotImplementedError
        step = to_ane(model).step_module(grid)
        with torch.no_grad():
            twin_out = step(*example).numpy()
    except NotImplementedError as e:
        return {"status": "skipped", "reason": str(e)}
    ref_tokens = host.tokens_from_video(np.asarray(ref), cfg.patch_size)
    res = {"status": "written", "precision": precision}
    res["twin_vs_torch"] = errors(twin_out, ref_tokens)
    _log(progress, f"Core ML: converting one step ({precision}) ...")
    path = to_coreml(
        step, example, out_dir / FILES["coreml"], precision, output_names=[host.V],
        progress=progress,
    )  # fmt: skip
    res["path"] = str(path)
    io = program_io(path)
    dtypes = {_NP_DTYPE.get(d, d) for _, d in (*io["inputs"].values(), *io["outputs"].values())}
    if len(dtypes) != 1 or not dtypes <= set(host.DTYPES):
        raise RuntimeError(f"the step program's I/O dtypes {sorted(dtypes)} are not one float")
    spec = step_spec(cfg, grid, x_t.shape[0], dtypes.pop(), steps)
    _check_program(io, spec)
    res["host"] = spec.to_dict()
    res["inputs"], res["outputs"] = spec.inputs(), spec.outputs()
    res["max_rank"] = io["max_rank"]

    from export.lint import ane_lint

    report = ane_lint(path)
    res["lint"] = {
        "errors": [str(e) for e in report.errors],
        "warnings": [str(w) for w in report.warnings],
        "ops": report.n_ops,
        "reshape": report.histogram.get("reshape", 0),
        "transpose": report.histogram.get("transpose", 0),
    }
    _log(progress, f"Core ML: {report.summary()}")

    predict = host.mil_predictor(path, precision)
    v = host.velocity(predict, spec, x_t, t, first_frame, motion)
    res["run_mil"] = errors(v, ref)
    res["run_mil"]["ok"] = res["run_mil"]["psnr_db"] >= COREML_MIN_PSNR
    if clip:
        k = host.resolve_steps(spec, steps or cfg.sample_steps or CLIP_STEPS)
        _log(progress, f"Core ML: a {k}-step clip through the MIL interpreter ...")
        noise = np.random.default_rng(CLIP_SEED).standard_normal(x_t.shape, dtype=np.float32)
        got = host.sample(predict, spec, first_frame, motion, steps=k, noise=noise)
        want = sample(
            model,
            torch.from_numpy(first_frame),
            torch.from_numpy(np.asarray(motion)),
            k,
            grid,
            noise=torch.from_numpy(noise),
        ).numpy()
        # frame 0 is the given first frame in both: compare the generated frames
        res["clip"] = {"steps": k, "seed": CLIP_SEED, "frames": f"1..{grid[0] - 1}"}
        res["clip"].update(errors(got[:, :, 1:], want[:, :, 1:]))
        res["clip"]["ok"] = res["clip"]["psnr_db"] >= COREML_MIN_PSNR
    return res


def write_bundle(
    model,
    inputs,
    folder: Path,
    steps: int | None = None,
    progress: bool = False,
    *,
    opset: int | None = None,
    precision: str = "fp16",
    coreml: bool = True,
    clip: bool = True,
    timer=None,
    onnx_attention: str = "onnx",
) -> dict:
    """The export bundle of `model` in `folder` (see the module docstring).

    Args:
        model: a HybridDiT in eval mode.
        inputs: (x_t, t, first_frame, motion) example inputs (hybrid_dit.example_inputs);
            their shapes fix the programs' shapes and the token grid.
        folder: the bundle folder (created).
        steps: the sampling steps the model is used with (a K-step student: K); the clip
            uses them (default: cfg.sample_steps, else 2).
        progress: print each stage to stderr.
        opset, precision, coreml, clip: the ONNX opset (None: the exporter's), the Core ML
            precision, whether to write the Core ML program, and whether to generate the
            clip through it.
        timer: timer(fn) -> {"median": s, ...} (e.g. bench.machine.time_fn) to time the
            onnxruntime session too; None: no latency in the bundle (export writes files
            and checks them; timing belongs to bench).
        onnx_attention: how model.onnx spells softmax attention (export.onnx.to_onnx's
            `attention`): "onnx", standard ops any runtime reads (default), or
            "onnxruntime", onnxruntime's MultiHeadAttention op, for onnxruntime alone.
    Returns what bundle.json holds (JSON-ready): "onnx", "coreml", "host" and more.
    """
    from export.files import write_json

    if not isinstance(inputs, (tuple, list)) or len(inputs) != 4 or inputs[2] is None:
        raise ValueError(
            "inputs must be (x_t, t, first_frame, motion) with a first frame (image-to-video), "
            f"got {type(inputs).__name__} of {len(inputs) if hasattr(inputs, '__len__') else '?'}"
        )
    cfg = model.cfg
    k = cfg.sample_steps
    if steps is not None and k is not None and steps != k:
        raise ValueError(
            f"steps: this model is a {k}-step student (cfg.sample_steps={k}) and is sampled "
            f"with exactly {k} steps, got {steps}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    grid = cfg.token_grid(inputs[0].shape[2:])
    with torch.no_grad():
        ref = model(*inputs).numpy()
    res = {"format": host.FORMAT, "config": cfg.to_dict(), "grid": list(grid), "steps": steps}
    res["files"] = dict(FILES)
    _log(progress, "ONNX: exporting the whole model and checking it under onnxruntime ...")
    res["onnx"] = onnx_stage(model, inputs, folder, opset, ref, timer=timer,
                             attention=onnx_attention)  # fmt: skip
    dtype = "float16" if precision == "fp16" else "float32"
    res["host"] = step_spec(cfg, grid, inputs[0].shape[0], dtype, steps).to_dict()
    if coreml:
        res["coreml"] = coreml_stage(
            model, inputs, folder, precision, ref, steps=steps, clip=clip, progress=progress
        )
        res["host"] = res["coreml"].pop("host", res["host"])  # the dtype the program has
    else:
        res["coreml"] = {"status": "skipped", "reason": "coreml=False"}
        stale = folder / FILES["coreml"]
        if stale.exists():  # an earlier export's program would sit beside a bundle without it
            shutil.rmtree(stale)
    write_json(folder / FILES["json"], res)
    return res
