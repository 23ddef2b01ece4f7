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
is a lower bound on how busy the GEMM units are; each backend's fraction is quoted
against its own matmul rate (torch's MKL, onnxruntime's MLAS), measured before, and
torch's after, with the load average, so a disturbed run shows.

Beside the block-table predictor's errors it reports what the block sum misses (a block
inside a one-variant whole model vs its stack time) and a held-out check of a predictor
calibrated on whole models (leave one out). Writes bench/results/model-cpu.json
atomically; `--reanalyse FILE` recomputes that analysis from a saved result, timing
nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from bench.latency import block_table, model_table, scaled_leave_one_out
from bench.machine import gemm_rate, machine_info, ort_gemm_rate
from bench.stats import rank_correlation, relative_error
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
    # each backend's fraction of GEMM is quoted against its own matmul kernels' rate
    gemm_of = {"torch-cpu": gemm_before}
    if "onnxruntime-cpu" in backends:
        gemm_of["onnxruntime-cpu"] = ort_gemm_rate()
        log(f"fp32 GEMM rate (2048^3, onnxruntime): {gemm_of['onnxruntime-cpu']:.1f} GFLOP/s")
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
                "fraction_of_gemm": m["gflops"] / gemm_of[backend],
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
    predictor = predictor_summary(rows, tables, cfg.depth)
    for backend, pr in predictor.items():
        log(
            f"{backend}: block-table predictor worst error {100 * pr['worst_error']:.1f}%, "
            f"Spearman {pr['spearman']}"
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
        "gemm_gflops_by_backend": gemm_of,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
        "predictor": predictor,
        "tables": tables,
    }


def predictor_summary(rows: list[dict], tables: dict, depth: int) -> dict:
    """Per backend: the block-table predictor's worst error and Spearman over the models,
    the in-model vs table latency of each variant (in_model_blocks) and the held-out check
    of a predictor calibrated on whole models (leave_one_out). Derived from the measured
    rows and tables only, so `--reanalyse` recomputes it from a saved result."""
    out = {}
    for backend, t in tables.items():
        mine = [r for r in rows if r["backend"] == backend]
        pred, meas = [r["predicted_ms"] for r in mine], [r["median_ms"] for r in mine]
        out[backend] = {
            "configs": len(mine),
            "worst_error": max(abs(r["prediction_error"]) for r in mine),
            "spearman": rank_correlation(pred, meas),
            "in_model_block": in_model_blocks(t, depth),
            "leave_one_out": leave_one_out(t),
            "scaled_leave_one_out": scaled_leave_one_out(t),
        }
    return out


def in_model_blocks(table: dict, depth: int) -> list[dict]:
    """What the block sum misses, per variant: a block's latency inside a whole model of
    that variant alone ((model - overhead) / depth) beside the block table's (a stack)."""
    overhead = table["blocks"]["overhead"]["median_ms"]
    per = {r["variant"]: r["median_ms"] for r in table["blocks"]["variants"]}
    out = []
    for m in table["models"]["models"]:
        kinds = set(m["attention"])
        if len(kinds) == 1:
            (v,) = kinds
            inside = (m["median_ms"] - overhead) / depth
            out.append({"variant": v, "table_ms": per[v], "in_model_ms": inside,
                        "ratio": inside / per[v]})  # fmt: skip
    return out


def leave_one_out(table: dict) -> dict:
    """What a predictor calibrated on whole models would achieve, checked honestly: for each
    model, per-variant in-model block latencies are fitted by least squares to the *other*
    whole models (model - overhead = sum over blocks), and that model is predicted from
    them. Models with a variant the others lack are left out. Returns the fit on all
    models, each model's held-out prediction and the worst error."""
    overhead = table["blocks"]["overhead"]["median_ms"]
    models = table["models"]["models"]
    names = sorted({v for m in models for v in m["attention"]})
    a = np.array([[m["attention"].count(v) for v in names] for m in models], dtype=float)
    y = np.array([m["median_ms"] - overhead for m in models])
    rows = []
    for i, m in enumerate(models):
        keep = np.arange(len(models)) != i
        if np.linalg.matrix_rank(a[keep]) < len(names):
            continue
        fit = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        pred = overhead + float(a[i] @ fit)
        rows.append({"pattern": m["pattern"], "predicted_ms": pred,
                     "error": relative_error(pred, m["median_ms"])})  # fmt: skip
    fit_all = np.linalg.lstsq(a, y, rcond=None)[0]
    meas = [m["median_ms"] for m in models if any(r["pattern"] == m["pattern"] for r in rows)]
    pred = [r["predicted_ms"] for r in rows]
    return {
        "what": "per-variant block latencies fitted to the other whole models (least squares)",
        "fitted_block_ms": dict(zip(names, map(float, fit_all), strict=True)),
        "rows": rows,
        "configs": len(rows),
        "worst_error": max((abs(r["error"]) for r in rows), default=None),
        "spearman": rank_correlation(pred, meas),
    }


def table(doc: dict) -> str:
    lines = [
        f"{doc['preset']} at grid {'x'.join(map(str, doc['grid']))} ({doc['tokens']} tokens); "
        f"fp32 GEMM {doc['gemm_gflops']:.1f} GFLOP/s torch (after: "
        f"{doc['gemm_gflops_after']:.1f}); GEMM by backend "
        + ", ".join(f"{k} {v:.1f}" for k, v in doc["gemm_gflops_by_backend"].items())
        + " (each backend's 'of GEMM' uses its own); load average "
        f"{doc['load_average_before'][0]:.2f} -> {doc['load_average_after'][0]:.2f}",
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
    for backend, pr in doc["predictor"].items():
        inside = ", ".join(
            f"{b['variant']} x{b['ratio']:.3f}" for b in pr.get("in_model_block", [])
        )
        loo = pr.get("leave_one_out") or {}
        scaled = pr.get("scaled_leave_one_out") or {}
        lines.append(
            f"{backend}: block-table predictor worst error {100 * pr['worst_error']:.1f}%, "
            f"Spearman {fmt(pr['spearman'])} over {pr['configs']} models; a block inside a "
            f"one-variant model vs the table: {inside or 'no one-variant model'}; calibrated "
            f"on the other models (leave one out): worst error "
            f"{fmt(loo.get('worst_error'), 100, '%')}, Spearman {fmt(loo.get('spearman'))} "
            f"over {loo.get('configs', 0)}; block table x one in-model factor "
            f"{fmt(scaled.get('factor'))} (leave one out): worst error "
            f"{fmt(scaled.get('worst_error'), 100, '%')}, Spearman {fmt(scaled.get('spearman'))} "
            f"over {scaled.get('configs', 0)}"
        )
    return "\n".join(lines)


def fmt(x, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if x is None else f"{scale * x:.{1 if unit else 3}f}{unit}"


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
    p.add_argument(
        "--reanalyse",
        type=Path,
        default=None,
        metavar="JSON",
        help="time nothing: recompute the predictor analysis of a saved result and write it "
        "to --out",
    )
    args = p.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    from export.files import write_json

    if args.reanalyse is not None:
        if not args.reanalyse.is_file():
            p.error(f"--reanalyse: no such file {str(args.reanalyse)!r}")
        doc = json.loads(args.reanalyse.read_text())
        if doc.get("benchmark") != "bench.model_cpu":
            p.error(f"--reanalyse: {args.reanalyse} is not a bench.model_cpu result")
        doc["predictor"] = predictor_summary(doc["rows"], doc["tables"], doc["config"]["depth"])
        write_json(args.out, doc)
        print(table(doc))
        print(f"wrote {args.out}")
        return 0
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
    write_json(args.out, doc)
    print(table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
