"""Whole-model CPU benchmark of the hybrid DiT: one denoising step of a preset at a token
grid on torch-cpu and onnxruntime-cpu for a few attention patterns, with the achieved
fraction of the fp32 GEMM rate measured in the same run, and the block-table prediction
next to each whole model.

    python -m bench.model_cpu                      # mobilei2v, 3 x 23 x 40, three patterns
    python -m bench.model_cpu --repeats 5 --patterns "softmax;L*7,S,L*7,S"

Both backends run what a user would ship, configured alike: the zoo's fast exact paths
(`impl="auto"`), torch with its thread count, onnxruntime through export.onnx.session
(the same intra-op threads, inter-op 1, spinning off). The patterns of a backend are timed
interleaved (bench.latency.model_table: A B C A B C ...), every row with the 95% bootstrap
interval of its median. FLOPs are analytic (`hybrid_dit.model_flops`: linear and conv
layers plus the zoo's attention counts); elementwise work is not counted, so the fraction
is a lower bound on how busy the GEMM units are. The GEMM rate is measured before and
after, and the load average recorded, so a disturbed run shows. Writes
bench/results/model-cpu.json atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from bench.latency import block_table, model_table
from bench.machine import gemm_rate, machine_info
from bench.stats import spearman
from hybrid_dit import PRESETS, format_pattern, model_flops, parse_grid, reference_patterns

RESULTS = Path(__file__).resolve().parent / "results" / "model-cpu.json"
BACKENDS = ("torch-cpu", "onnxruntime-cpu")
# Beside all softmax, MobileI2V's 7:1 and all relu_linear, three more mixes, so that the
# block-table predictor is checked on six whole models of different softmax shares.
MORE_PATTERNS = ("L*3,S,L*3,S,L*3,S,L*3,S", "S*8,L*8", "L*15,S")


def bench_patterns(
    preset: str = "mobilei2v",
    grid=(3, 23, 40),
    patterns=None,
    repeats: int = 5,
    block_repeats: int = 7,
    backends=BACKENDS,
    progress: bool = True,
    log=print,
) -> dict:
    """Times one step per pattern and backend (interleaved per backend), with the block
    table of each backend for the prediction. Returns a JSON-able dict."""
    cfg = PRESETS[preset]
    if patterns is None:
        patterns = [*reference_patterns(cfg.depth), *(p for p in MORE_PATTERNS if cfg.depth == 16)]
    patterns = list(patterns)
    variants = sorted({v for p in patterns for v in cfg.with_attention(p).attention})
    load_before = os.getloadavg()
    gemm_before = gemm_rate()
    log(f"fp32 GEMM rate (2048^3, torch): {gemm_before:.1f} GFLOP/s")
    rows, tables = [], {}
    for backend in backends:
        blocks = block_table(cfg, grid, backend, variants, repeats=block_repeats, progress=progress)
        models = model_table(
            cfg, grid, backend, patterns, blocks=blocks, repeats=repeats, progress=progress
        )
        tables[backend] = {"blocks": blocks, "models": models}
        for m in models["models"]:
            flops = model_flops(cfg.with_attention(m["attention"]), grid)
            row = {
                "pattern": m["pattern"],
                "backend": backend,
                **{k: m[k] for k in ("median_ms", "ci_low_ms", "ci_high_ms", "p10_ms", "p90_ms")},
                "repeats": m["repeats"],
                "flops": flops,
                "gflops": m["gflops"],
                "fraction_of_gemm": m["gflops"] / gemm_before,
                "predicted_ms": m["predicted_ms"],
                "prediction_error": m["prediction_error"],
            }
            rows.append(row)
            log(
                f"{m['pattern']} {backend}: {m['median_ms'] / 1e3:.3f} s/step "
                f"[{m['ci_low_ms'] / 1e3:.3f}, {m['ci_high_ms'] / 1e3:.3f}], "
                f"{m['gflops']:.1f} GFLOP/s = {100 * row['fraction_of_gemm']:.0f}% of GEMM; "
                f"predicted {m['predicted_ms'] / 1e3:.3f} s ({100 * m['prediction_error']:+.1f}%)"
            )
    gemm_after = gemm_rate()
    log(f"fp32 GEMM rate after: {gemm_after:.1f} GFLOP/s")
    predictor = {}
    for backend in backends:
        mine = [r for r in rows if r["backend"] == backend]
        pred, meas = [r["predicted_ms"] for r in mine], [r["median_ms"] for r in mine]
        predictor[backend] = {
            "configs": len(mine),
            "worst_error": max(abs(r["prediction_error"]) for r in mine),
            "spearman": spearman(pred, meas) if len(set(pred)) > 1 and len(set(meas)) > 1 else None,
        }
        log(
            f"{backend}: block-table predictor worst error "
            f"{100 * predictor[backend]['worst_error']:.1f}%, Spearman "
            f"{predictor[backend]['spearman']}"
        )
    return {
        "benchmark": "bench.model_cpu",
        "preset": preset,
        "config": cfg.to_dict(),
        "grid": list(grid),
        "tokens": math.prod(grid),
        "patterns": [format_pattern(cfg.with_attention(p).attention) for p in patterns],
        "machine": machine_info(),
        "gemm_gflops": gemm_before,
        "gemm_gflops_after": gemm_after,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
        "predictor": predictor,
        "tables": tables,
    }


def table(doc: dict) -> str:
    lines = [
        f"{doc['preset']} at grid {'x'.join(map(str, doc['grid']))} ({doc['tokens']} tokens); "
        f"fp32 GEMM {doc['gemm_gflops']:.1f} GFLOP/s (after: {doc['gemm_gflops_after']:.1f}); "
        f"load average {doc['load_average_before'][0]:.2f} -> {doc['load_average_after'][0]:.2f}",
        "| pattern | backend | s / step, median [95% CI] | GFLOP / step | GFLOP/s | of GEMM "
        "| predicted s | error |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['pattern']} | {r['backend']} | {r['median_ms'] / 1e3:.2f} "
            f"[{r['ci_low_ms'] / 1e3:.2f}, {r['ci_high_ms'] / 1e3:.2f}] | "
            f"{r['flops']['total'] / 1e9:.0f} | {r['gflops']:.1f} | "
            f"{100 * r['fraction_of_gemm']:.0f}% | {r['predicted_ms'] / 1e3:.2f} | "
            f"{100 * r['prediction_error']:+.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.model_cpu", description=__doc__.split("\n")[0]
    )
    p.add_argument("--preset", default="mobilei2v", choices=tuple(PRESETS))
    p.add_argument("--grid", default="3x23x40", help="token grid TxHxW")
    p.add_argument(
        "--patterns",
        default=None,
        help="attention patterns separated by ';' (default: all softmax, MobileI2V's 7:1, "
        "all relu_linear and three more mixes)",
    )
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of whole models")
    p.add_argument("--block-repeats", type=int, default=7, help="rounds of the block tables")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(","))
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        p.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    for name in ("repeats", "block_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        grid = parse_grid(args.grid, "--grid")
        patterns = None
        if args.patterns is not None:
            patterns = [
                PRESETS[args.preset].with_attention(s).attention for s in args.patterns.split(";")
            ]
    except ValueError as e:
        p.error(str(e))
    doc = bench_patterns(
        args.preset, grid, patterns, args.repeats, args.block_repeats, backends,
        progress=not args.no_progress,
    )  # fmt: skip
    from export.files import write_json

    write_json(args.out, doc)
    print(table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
