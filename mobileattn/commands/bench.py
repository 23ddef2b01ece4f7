"""`mobileattn bench`: per-block latency table (and whole-model latency for a few patterns)
of a preset at a token grid on one backend, as JSON."""

from __future__ import annotations

from pathlib import Path

from study.tables import text_table


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="per-block and whole-model latency tables on a backend")
    p.add_argument("--preset", default="mobilei2v", help="model shape (default: mobilei2v)")
    p.add_argument("--grid", default="3x23x40", help="token grid TxHxW (default: 3x23x40)")
    p.add_argument(
        "--backend",
        default="torch-cpu",
        help="torch-cpu, onnxruntime-cpu or cuda (default: torch-cpu)",
    )
    p.add_argument(
        "--variants", default=None, help="comma-separated variants (default: every variant)"
    )
    p.add_argument(
        "--patterns",
        default=None,
        help='whole-model patterns separated by ";" ("" for none; default: all softmax, '
        "MobileI2V's pattern and all relu_linear at the preset's depth)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per block")
    p.add_argument("--model-repeats", type=int, default=3, help="timed repeats per model")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import attention_zoo as az
    from bench.latency import block_table, check_backend, machine_block, model_table
    from export.files import check_out_file
    from hybrid_dit import PRESETS, parse_grid, reference_patterns

    if args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    grid = parse_grid(args.grid, "--grid")
    check_backend(args.backend)
    for name in ("repeats", "model_repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    check_out_file(args.out)
    variants = None if args.variants is None else [v.strip() for v in args.variants.split(",")]
    for v in variants or ():
        try:
            az.get(v)  # an unknown name fails before any model is built
        except KeyError as e:
            raise ValueError(f"--variants: {e.args[0]}") from None
    if args.patterns is None:
        patterns = list(reference_patterns(PRESETS[args.preset].depth))
    else:
        patterns = [p for p in args.patterns.split(";") if p.strip()]
    for p in patterns:
        try:
            PRESETS[args.preset].with_attention(p)  # a bad pattern fails before any timing
        except (ValueError, TypeError) as e:
            raise ValueError(f"--patterns: {e}") from None
    progress = not args.no_progress
    blocks = block_table(
        args.preset, grid, args.backend, variants, repeats=args.repeats, progress=progress
    )
    device = "cuda" if args.backend == "cuda" else "cpu"
    result = {**machine_block(device), "blocks": blocks}
    if patterns:
        result["models"] = model_table(
            args.preset,
            grid,
            args.backend,
            patterns,
            blocks=blocks,
            repeats=args.model_repeats,
            progress=progress,
        )
    print(
        f"{args.preset} at grid {args.grid} (N={blocks['N']}) on {args.backend}; "
        f"fp32 GEMM {result['gemm_gflops']:.1f} GFLOP/s measured in this run"
    )
    soft = next((r["median_ms"] for r in blocks["variants"] if r["variant"] == "softmax"), None)
    print(
        text_table(
            ["variant", "block ms", "p10 ms", "p90 ms", "vs softmax"],
            [
                [
                    r["variant"],
                    f"{r['median_ms']:.2f}",
                    f"{r['p10_ms']:.2f}",
                    f"{r['p90_ms']:.2f}",
                    f"{soft / r['median_ms']:.2f}x" if soft else "-",
                ]
                for r in blocks["variants"]
            ],
        )
    )
    print(f"non-block overhead: {blocks['overhead']['median_ms']:.2f} ms")
    if patterns:
        print()
        print(
            text_table(
                ["pattern", "measured ms", "sum of blocks ms", "error"],
                [
                    [
                        r["pattern"],
                        f"{r['median_ms']:.1f}",
                        f"{r['predicted_ms']:.1f}",
                        f"{100 * r['prediction_error']:+.1f}%",
                    ]
                    for r in result["models"]["models"]
                ],
            )
        )
    if args.out is not None:
        from export.files import write_json

        print(f"wrote {write_json(args.out, result)}")
    return 0
