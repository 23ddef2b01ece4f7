"""`mobileattn export`: a hybrid DiT to ONNX (checked under onnxruntime) and, where the Core
ML exporter is present, to a .mlpackage from its channels-first twin (with ANE lint and
MIL-interpreter parity where those are present).

    mobileattn export --preset mobilei2v --attention "L*7,S,L*7,S" --grid 3x23x40 --out out/

Writes DIR/model.onnx, DIR/model.mlpackage (when possible) and DIR/export.json.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hybrid_dit import PRESETS, DiTConfig, HybridDiT, example_inputs, format_pattern, parse_grid


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


def _fmt_err(e: dict) -> str:
    return f"max abs {e['max_abs']:.3g}, rel {e['rel']:.3g}, PSNR {e['psnr_db']:.1f} dB"


def run(args) -> int:
    from bench.machine import time_fn
    from export.bundle import ONNX_TOLERANCE, coreml_stage, onnx_stage
    from export.files import write_json

    cfg = build_config(args.preset, args.attention)
    grid = parse_grid(args.grid, "--grid")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    from export.onnx import MIN_OPSET

    if args.opset is not None and args.opset < MIN_OPSET:
        raise ValueError(f"--opset must be >= {MIN_OPSET} (dynamo exporter), got {args.opset}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {str(args.out)!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, args.weights, args.seed)
    inputs = example_inputs(cfg, grid, seed=args.seed)
    pattern = format_pattern(cfg.attention)
    print(f"model: {args.preset}, attention {pattern}, token grid {'x'.join(map(str, grid))}")
    with torch.inference_mode():
        ref = model(*inputs).numpy()

    def timer(fn):
        return time_fn(fn, warmup=1, repeats=args.repeats)

    def torch_step():
        with torch.inference_mode():
            return model(*inputs)

    onnx_res = onnx_stage(model, inputs, args.out, args.opset, ref, timer=timer)
    torch_s = timer(torch_step)["median"]
    verdict = "ok" if onnx_res["ok"] else f"FAILED (bound {ONNX_TOLERANCE:g})"
    print(f"ONNX: {onnx_res['path']}")
    print(f"  onnxruntime vs torch (fp32): {_fmt_err(onnx_res)}: {verdict}")
    print(
        f"  latency, median of {args.repeats} with {torch.get_num_threads()} threads each: "
        f"onnxruntime {onnx_res['ort_median_s']:.4g} s, torch {torch_s:.4g} s"
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
            "torch_median_s": torch_s,
            "onnx": onnx_res,
            "coreml": coreml_res,
        },
    )
    return 0 if onnx_res["ok"] else 1
