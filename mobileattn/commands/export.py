"""`mobileattn export`: a hybrid DiT to ONNX (checked under onnxruntime) and, where the Core
ML exporter is present, to a .mlpackage from its channels-first twin (with ANE lint and
MIL-interpreter parity where those are present).

    mobileattn export --preset mobilei2v --attention "L*7,S,L*7,S" --grid 3x23x40 --out out/

Writes DIR/model.onnx, DIR/model.mlpackage (when possible) and DIR/export.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from hybrid_dit import PRESETS, DiTConfig, HybridDiT, format_pattern, to_ane

# fp32 parity bound between PyTorch and onnxruntime (relative RMS error).
ONNX_TOLERANCE = 1e-4


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a hybrid DiT to ONNX and Core ML, check parity")
    p.add_argument("--preset", required=True, help=f"model shape: {', '.join(PRESETS)}")
    p.add_argument(
        "--attention",
        default=None,
        help='per-block pattern, e.g. "L*7,S,L*7,S" or "softmax" (default: the preset\'s)',
    )
    p.add_argument("--grid", required=True, help="token grid TxHxW, e.g. 3x23x40")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--weights", type=Path, default=None, help=".safetensors state dict")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init and inputs")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")
    p.add_argument("--repeats", type=int, default=3, help="timed onnxruntime runs")
    p.add_argument(
        "--precision", choices=("fp16", "fp32"), default="fp16", help="Core ML precision"
    )
    p.add_argument("--no-coreml", action="store_true", help="skip the Core ML export")
    p.set_defaults(func=run)


def parse_grid(text: str) -> tuple[int, int, int]:
    """ "3x23x40" -> (3, 23, 40); anything else is a ValueError naming --grid."""
    parts = str(text).lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(
            f"--grid must be TxHxW with three positive ints (e.g. 3x23x40), got {text!r}"
        )
    return tuple(int(p) for p in parts)


def build_config(preset: str, attention: str | None) -> DiTConfig:
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    cfg = PRESETS[preset]
    if attention is None:
        return cfg
    try:
        return cfg.with_attention(attention)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--attention: {e}") from None


def build_model(cfg: DiTConfig, weights: Path | None, seed: int) -> HybridDiT:
    torch.manual_seed(seed)
    model = HybridDiT(cfg).eval()
    if weights is not None:
        if not weights.is_file():
            raise FileNotFoundError(f"--weights: no such file {str(weights)!r}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            model.load_state_dict(load_file(str(weights)))
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ValueError(
                f"--weights: {weights} is not a safetensors state dict of this config ({e})"
            ) from None
    return model


def example_inputs(cfg: DiTConfig, grid, seed: int) -> tuple[torch.Tensor, ...]:
    """(x_t, t, first_frame, motion) for one clip of the token grid, seeded."""
    gen = torch.Generator().manual_seed(seed)
    t, h, w = grid
    p = cfg.patch_size
    x = torch.randn(1, cfg.in_channels, t, h * p, w * p, generator=gen)
    ff = torch.randn(1, cfg.in_channels, h * p, w * p, generator=gen)
    return x, torch.full((1,), 0.5), ff, torch.full((1,), 0.3)


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


def onnx_stage(model, inputs, out_dir: Path, opset, repeats: int, ref: np.ndarray) -> dict:
    import onnxruntime as ort

    from bench.machine import time_fn
    from export import to_onnx

    path = to_onnx(model, inputs, out_dir / "model.onnx", opset=opset)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), inputs, strict=True)}
    (out,) = sess.run(None, feeds)
    timing = time_fn(lambda: sess.run(None, feeds), warmup=1, repeats=repeats)
    err = errors(out, ref)
    return {
        "path": str(path),
        **err,
        "ok": err["rel"] < ONNX_TOLERANCE,
        "ort_median_s": timing["median"],
    }


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


def _fmt_err(e: dict) -> str:
    return f"max abs {e['max_abs']:.3g}, rel {e['rel']:.3g}, PSNR {e['psnr_db']:.1f} dB"


def run(args) -> int:
    from mobileattn.io import write_json

    cfg = build_config(args.preset, args.attention)
    grid = parse_grid(args.grid)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    from export.onnx import MIN_OPSET

    if args.opset is not None and args.opset < MIN_OPSET:
        raise ValueError(f"--opset must be >= {MIN_OPSET} (dynamo exporter), got {args.opset}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {str(args.out)!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, args.weights, args.seed)
    inputs = example_inputs(cfg, grid, args.seed)
    pattern = format_pattern(cfg.attention)
    print(f"model: {args.preset}, attention {pattern}, token grid {'x'.join(map(str, grid))}")
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = model(*inputs).numpy()
    torch_s = time.perf_counter() - t0

    onnx_res = onnx_stage(model, inputs, args.out, args.opset, args.repeats, ref)
    verdict = "ok" if onnx_res["ok"] else f"FAILED (bound {ONNX_TOLERANCE:g})"
    print(f"ONNX: {onnx_res['path']}")
    print(f"  onnxruntime vs torch (fp32): {_fmt_err(onnx_res)}: {verdict}")
    print(
        f"  latency: onnxruntime {onnx_res['ort_median_s']:.4g} s (median), "
        f"torch {torch_s:.4g} s (one call)"
    )

    if args.no_coreml:
        coreml_res = {"status": "skipped", "reason": "--no-coreml"}
    else:
        coreml_res = coreml_stage(model, inputs, args.out, args.precision, ref)
    if coreml_res["status"] == "written":
        print(f"Core ML: {coreml_res['path']} ({args.precision})")
        print(f"  ANE twin vs torch: {_fmt_err(coreml_res['twin_vs_torch'])}")
        lint = coreml_res["lint"]
        if isinstance(lint, dict):
            print(f"  ANE lint: {len(lint['errors'])} errors, {len(lint['warnings'])} warnings")
            for msg in lint["errors"]:
                print(f"    {msg}")
        else:
            print(f"  ANE lint: {lint}")
        mil = coreml_res["run_mil"]
        print(f"  MIL interpreter vs torch: {_fmt_err(mil) if isinstance(mil, dict) else mil}")
    else:
        print(f"Core ML: {coreml_res['status']} ({coreml_res['reason']})")

    write_json(
        args.out / "export.json",
        {
            "preset": args.preset,
            "config": cfg.to_dict(),
            "attention": pattern,
            "grid": list(grid),
            "seed": args.seed,
            "weights": None if args.weights is None else str(args.weights),
            "torch_forward_s": torch_s,
            "onnx": onnx_res,
            "coreml": coreml_res,
        },
    )
    return 0 if onnx_res["ok"] else 1
