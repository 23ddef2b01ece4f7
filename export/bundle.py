"""The export stages the CLI and the study share: a model to ONNX checked under
onnxruntime (parity and latency), and its channels-first twin to Core ML with the ANE lint
and MIL-interpreter parity; numbers against the PyTorch output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hybrid_dit import to_ane

# fp32 parity bound between PyTorch and onnxruntime (relative RMS error).
ONNX_TOLERANCE = 1e-4


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


def onnx_stage(model, inputs, out_dir: Path, opset, ref: np.ndarray, timer=None) -> dict:
    """model -> out_dir/model.onnx, run once under onnxruntime (export.onnx.session) and
    compared with `ref` (the PyTorch output). `timer(fn) -> {"median": s, ...}` (e.g.
    bench.machine.time_fn), when given, times the session too."""
    from export.onnx import session, session_options, to_onnx

    path = to_onnx(model, inputs, out_dir / "model.onnx", opset=opset)
    sess = session(path)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), inputs, strict=True)}
    (out,) = sess.run(None, feeds)
    err = errors(out, ref)
    res = {"path": str(path), **err, "ok": err["rel"] < ONNX_TOLERANCE}
    res["session"] = session_options(sess)
    if timer is not None:
        res["ort_median_s"] = timer(lambda: sess.run(None, feeds))["median"]
    return res


def coreml_stage(model, inputs, out_dir: Path, precision: str, ref: np.ndarray) -> dict:
    """The twin -> .mlpackage, plus ANE lint and MIL-interpreter parity where present.
    Returns {"status": ...} with what was done; never raises for a missing piece."""
    try:
        from export import to_coreml
    except (ImportError, AttributeError) as e:
        return {"status": "not available", "reason": f"export.to_coreml: {e}"}
    try:
        twin = to_ane(model)
        with torch.no_grad():
            twin_out = twin(*inputs).numpy()
    except NotImplementedError as e:
        return {"status": "skipped", "reason": str(e)}
    res = {"status": "written", "twin_vs_torch": errors(twin_out, ref)}
    path = to_coreml(twin, inputs, out_dir / "model.mlpackage", precision=precision)
    res["path"] = str(path)
    try:
        from export import ane_lint
    except (ImportError, AttributeError):
        res["lint"] = "not available"
    else:
        report = ane_lint(path)
        res["lint"] = {
            "errors": [str(e) for e in getattr(report, "errors", [])],
            "warnings": [str(w) for w in getattr(report, "warnings", [])],
        }
    try:
        from export import run_mil
    except (ImportError, AttributeError):
        res["run_mil"] = "not available"
    else:
        names = ("x_t", "t", "first_frame", "motion")
        outs = run_mil(path, {n: a.numpy() for n, a in zip(names, inputs, strict=True)}, precision)
        res["run_mil"] = errors(next(iter(outs.values())), ref)
    return res
