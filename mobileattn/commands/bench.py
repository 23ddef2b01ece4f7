"""`mobileattn bench`: per-block latency table (and whole-model latency for a few patterns)
of a preset, or of a diffusers model with zoo attention (--model diffusers:CLASS --config
CONFIG.json), at a token grid on one backend, as JSON."""

from __future__ import annotations

from pathlib import Path

from bench.machine import GEMM_PROBE_N
from study.tables import text_table

DEFAULT_PRESET = "mobilei2v"


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="per-block and whole-model latency tables on a backend")
    p.add_argument("--preset", default=None, help=f"model shape (default: {DEFAULT_PRESET})")
    p.add_argument(
        "--model",
        default=None,
        help="a diffusers model instead of a preset, diffusers:CLASS (random weights), "
        "e.g. diffusers:SanaVideoTransformer3DModel; needs --config",
    )
    p.add_argument("--config", type=Path, default=None, help="JSON config of the --model class")
    p.add_argument(
        "--text-tokens",
        type=int,
        default=None,
        help="caption tokens fed to a --model's cross-attention (default: 300)",
    )
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
        "MobileI2V's pattern and all relu_linear at the model's depth)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per block")
    p.add_argument("--model-repeats", type=int, default=3, help="timed repeats per model")
    p.add_argument(
        "--gemm-probe",
        type=int,
        default=None,
        help="n of the (n x n) fp32 GEMM timed through the backend's matmul in the whole "
        "models' rounds, each model's fraction of GEMM quoted against it (0: none; "
        f"default: {GEMM_PROBE_N}; presets only)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _check_args(args):
    """Everything the flags alone can tell, before any model is built."""
    import attention_zoo as az
    from bench.latency import check_backend
    from export.files import check_out_file
    from hybrid_dit import PRESETS, parse_grid

    if args.model is not None:
        if args.preset is not None:
            raise ValueError("--preset and --model do not go together: a preset is our model")
        if args.gemm_probe is not None:
            raise ValueError(
                "--gemm-probe goes with a preset: a diffusers model has no analytic FLOP "
                "count here to quote against the GEMM rate"
            )
        if args.config is None:
            raise ValueError("--model needs --config CONFIG.json (the model class's arguments)")
    else:
        for flag, val in (("--config", args.config), ("--text-tokens", args.text_tokens)):
            if val is not None:
                raise ValueError(f"{flag} goes with --model diffusers:CLASS")
        args.preset = DEFAULT_PRESET if args.preset is None else args.preset
        args.gemm_probe = GEMM_PROBE_N if args.gemm_probe is None else args.gemm_probe
        if args.gemm_probe < 0:
            raise ValueError(f"--gemm-probe must be >= 0 (0: none), got {args.gemm_probe}")
        if args.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    grid = parse_grid(args.grid, "--grid")
    check_backend(args.backend)
    for name in ("repeats", "model_repeats", "text_tokens"):
        val = getattr(args, name)
        if val is not None and val < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {val}")
    check_out_file(args.out)
    variants = None if args.variants is None else [v.strip() for v in args.variants.split(",")]
    for v in variants or ():
        try:
            az.get(v)  # an unknown name fails before any model is built
        except KeyError as e:
            raise ValueError(f"--variants: {e.args[0]}") from None
    patterns = None
    if args.patterns is not None:
        patterns = [p for p in args.patterns.split(";") if p.strip()]
    return grid, variants, patterns


def run(args) -> int:
    grid, variants, patterns = _check_args(args)
    if args.model is not None:
        result, title = _diffusers_tables(args, grid, variants, patterns)
    else:
        result, title = _preset_tables(args, grid, variants, patterns)
    blocks = result["blocks"]
    print(
        f"{title} at grid {args.grid} (N={blocks['N']}) on {args.backend}; "
        f"fp32 GEMM {result['gemm_gflops']:.1f} GFLOP/s measured in this run"
    )
    from bench.stats import gemm_cell
    from bench.stats import ms_separated as separated

    soft = next((r for r in blocks["variants"] if r["variant"] == "softmax"), None)

    def vs_softmax(r):  # a ratio only where the intervals separate
        if soft is None or r is soft:
            return "-"
        if not separated(r, soft):
            return "same within noise"
        return f"{soft['median_ms'] / r['median_ms']:.2f}x"

    print(
        text_table(
            ["variant", "block ms", "95% CI ms", "speed vs softmax"],
            [
                [
                    r["variant"],
                    f"{r['median_ms']:.2f}",
                    f"{r['ci_low_ms']:.2f}-{r['ci_high_ms']:.2f}",
                    vs_softmax(r),
                ]
                for r in blocks["variants"]
            ],
        )
    )
    print(f"non-block overhead: {blocks['overhead']['median_ms']:.2f} ms")
    if "models" in result:
        print()
        print(
            text_table(
                ["pattern", "measured ms", "95% CI ms", "sum of blocks ms", "error", "of GEMM"],
                [
                    [
                        r["pattern"],
                        f"{r['median_ms']:.1f}",
                        f"{r['ci_low_ms']:.1f}-{r['ci_high_ms']:.1f}",
                        f"{r['predicted_ms']:.1f}",
                        f"{100 * r['prediction_error']:+.1f}%",
                        gemm_cell(r),
                    ]
                    for r in result["models"]["models"]
                ],
            )
        )
        gemm = result["models"].get("gemm")
        if gemm:
            print(
                f"of GEMM: the model's analytic GFLOP/s over a ({gemm['n']} x {gemm['n']}) "
                f"fp32 GEMM through {args.backend}'s matmul timed in the same rounds "
                f"({gemm['gflops']:.1f} GFLOP/s), median over rounds [95% CI]"
            )
    if args.out is not None:
        from export.files import write_json

        print(f"wrote {write_json(args.out, result)}")
    return 0


def _preset_tables(args, grid, variants, patterns):
    from bench.latency import block_table, machine_block, model_table
    from hybrid_dit import PRESETS, reference_patterns

    cfg = PRESETS[args.preset]
    if patterns is None:
        patterns = list(reference_patterns(cfg.depth))
    for p in patterns:
        try:
            cfg.with_attention(p)  # a bad pattern fails before any timing
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
            gemm_probe_n=args.gemm_probe or None,
        )
    return result, args.preset


def _diffusers_tables(args, grid, variants, patterns):
    from attention_zoo.diffusers import self_attention_blocks, set_attention
    from bench import diffusers_latency as dl
    from bench.latency import machine_block
    from hybrid_dit import reference_patterns

    try:
        cls = dl.model_class(args.model)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    try:
        config = dl.load_config(args.config, cls)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--{e}") from None
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    text_tokens = dl.TEXT_TOKENS if args.text_tokens is None else args.text_tokens
    model = dl.build_model(cls, config)  # random weights: the depth and a check of the grid
    depth = len(self_attention_blocks(model))
    try:
        dl.example_inputs(model, grid, text_tokens)
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    if patterns is None:
        patterns = list(reference_patterns(depth))
    for p in patterns:
        try:
            set_attention(dl.shared_copy(model), p)  # a bad pattern fails before any timing
        except (ValueError, TypeError) as e:
            raise ValueError(f"--patterns: {e}") from None
    del model
    progress = not args.no_progress
    common = {"text_tokens": text_tokens, "progress": progress}
    blocks = dl.block_table(
        cls, config, grid, args.backend, variants, repeats=args.repeats, **common
    )
    device = "cuda" if args.backend == "cuda" else "cpu"
    result = {**machine_block(device), "blocks": blocks}
    if patterns:
        result["models"] = dl.model_table(
            cls, config, grid, args.backend, patterns, blocks, args.model_repeats, **common
        )
    return result, args.model
