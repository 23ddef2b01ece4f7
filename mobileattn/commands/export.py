"""`mobileattn export`: a hybrid DiT to an export bundle: ONNX (the whole model, checked
under onnxruntime: parity and latency) and Core ML (one denoising step of its
channels-first twin, ANE-linted, checked through the MIL interpreter per step and by a clip
generated through it with the numpy host loop), from the same weights.

    mobileattn export --preset mobilei2v --attention "L*7,S,L*7,S" --grid 3x23x40 --out out/

Writes DIR/model.onnx, DIR/model.mlpackage, DIR/bundle.json (the program's inputs and
outputs, layouts, dtypes and host-side conversions, for export.host) and DIR/export.json
(bundle.json plus this run's settings and timings).
"""

from __future__ import annotations

from pathlib import Path

import torch

from export.onnx import ATTENTION_FORMS, ATTENTION_WORDS
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
    p.add_argument(
        "--onnx-attention",
        choices=ATTENTION_FORMS,
        default="onnx",
        help="softmax attention in model.onnx: 'onnx', standard ops any runtime reads "
        "(default), or 'onnxruntime', onnxruntime's MultiHeadAttention op (faster there, "
        "read by onnxruntime alone)",
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="interleaved rounds timing onnxruntime and torch"
    )
    p.add_argument(
        "--precision", choices=("fp16", "fp32"), default="fp16", help="Core ML precision"
    )
    p.add_argument("--no-coreml", action="store_true", help="skip the Core ML export")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampling steps the model is used with: the generated clip's (default 2)",
    )
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


def _print_coreml(res: dict, precision: str) -> bool:
    """Prints the Core ML part of a bundle; True when every check passed."""
    from export.bundle import COREML_MIN_PSNR

    if res["status"] != "written":
        print(f"Core ML: {res['status']} ({res.get('reason', '')})")
        return True
    print(f"Core ML: {res['path']} ({precision}, one denoising step, max rank {res['max_rank']})")
    for io in (*res["inputs"], *res["outputs"]):
        print(f"  {io['name']}: {tuple(io['shape'])} {io['dtype']}")
    print(f"  ANE twin vs torch (fp32): {_fmt_err(res['twin_vs_torch'])}")
    lint = res["lint"]
    print(
        f"  ANE lint: {len(lint['errors'])} errors, {len(lint['warnings'])} warnings "
        f"({lint['reshape']} reshape, {lint['transpose']} transpose, {lint['ops']} ops)"
    )
    for msg in lint["errors"]:
        print(f"    {msg}")
    ok = not lint["errors"]
    mil = res["run_mil"]
    verdict = "ok" if mil["ok"] else f"FAILED (bound {COREML_MIN_PSNR:g} dB)"
    print(f"  one step, MIL interpreter vs torch: {_fmt_err(mil)}: {verdict}")
    ok = ok and mil["ok"]
    if "clip" in res:
        clip = res["clip"]
        verdict = "ok" if clip["ok"] else f"FAILED (bound {COREML_MIN_PSNR:g} dB)"
        print(
            f"  {clip['steps']}-step clip, host loop + MIL interpreter vs hybrid_dit.sample "
            f"(frames {clip['frames']}): {_fmt_err(clip)}: {verdict}"
        )
        ok = ok and clip["ok"]
    return ok


def run(args) -> int:
    from bench.machine import time_interleaved
    from bench.stats import speed_verdict
    from export.bundle import ONNX_TOLERANCE, write_bundle
    from export.files import write_json
    from export.onnx import session

    cfg = build_config(args.preset, args.attention)
    grid = parse_grid(args.grid, "--grid")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    from export.onnx import MIN_OPSET

    if args.opset is not None and args.opset < MIN_OPSET:
        raise ValueError(f"--opset must be >= {MIN_OPSET} (dynamo exporter), got {args.opset}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out must be a folder, got the file {str(args.out)!r}")
    model = build_model(cfg, args.weights, args.seed)
    inputs = example_inputs(cfg, grid, seed=args.seed)
    pattern = format_pattern(cfg.attention)
    print(f"model: {args.preset}, attention {pattern}, token grid {'x'.join(map(str, grid))}")

    def torch_step():
        with torch.inference_mode():
            return model(*inputs)

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = write_bundle(
        model,
        inputs,
        args.out,
        steps=args.steps,
        progress=True,
        opset=args.opset,
        precision=args.precision,
        coreml=not args.no_coreml,
        onnx_attention=args.onnx_attention,
    )
    onnx_res = bundle["onnx"]
    verdict = "ok" if onnx_res["ok"] else f"FAILED (bound {ONNX_TOLERANCE:g})"
    print(f"ONNX: {onnx_res['path']} (softmax attention as {ATTENTION_WORDS[args.onnx_attention]})")
    print(f"  onnxruntime vs torch (fp32): {_fmt_err(onnx_res)}: {verdict}")
    # both runtimes as the study times them: configured alike, interleaved rounds
    sess = session(onnx_res["path"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), inputs, strict=True)}
    times = time_interleaved(
        {"onnxruntime": lambda: sess.run(None, feeds), "torch": torch_step},
        warmup=1,
        repeats=args.repeats,
    )
    ort_s, torch_s = times["onnxruntime"]["median"], times["torch"]["median"]
    print(
        f"  latency, {args.repeats} interleaved rounds, {torch.get_num_threads()} threads each: "
        + speed_verdict(times["onnxruntime"], times["torch"], "onnxruntime", "torch")
    )
    if args.no_coreml:
        bundle["coreml"]["reason"] = "--no-coreml"
    coreml_ok = _print_coreml(bundle["coreml"], args.precision)
    print(f"bundle: {args.out / bundle['files']['json']}")

    write_json(
        args.out / "export.json",
        {
            "preset": args.preset,
            "attention": pattern,
            "seed": args.seed,
            "weights": None if args.weights is None else str(args.weights),
            "latency": {
                "threads": torch.get_num_threads(),
                "onnxruntime_median_s": ort_s,
                "torch_median_s": torch_s,
                "rounds": times,
            },
            **bundle,
        },
    )
    return 0 if onnx_res["ok"] and coreml_ok else 1
