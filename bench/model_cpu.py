"""Whole-model CPU benchmark of the hybrid DiT: seconds per denoising step (one forward)
of a preset at a token grid, in torch eager and in onnxruntime, for a few attention
patterns, with the achieved fraction of the fp32 GEMM rate measured in the same run.

    python -m bench.model_cpu                      # mobilei2v, 3 x 23 x 40, three patterns
    python -m bench.model_cpu --repeats 5 --patterns "softmax;L*7,S,L*7,S"

FLOPs are analytic (`hybrid_dit.model_flops`: linear and conv layers plus the zoo's
attention counts); elementwise work is not counted, so the fraction is a lower bound on
how busy the GEMM units are. Every pattern runs the same weights (parameters do not
depend on the pattern). Writes bench/results/model-cpu.json atomically.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import gemm_rate, machine_info, time_fn
from hybrid_dit import PRESETS, HybridDiT, example_inputs, format_pattern, model_flops, parse_grid

RESULTS = Path(__file__).resolve().parent / "results" / "model-cpu.json"
# All softmax, the paper's 7:1 hybrid, all linear.
DEFAULT_PATTERNS = ("softmax", "L*7,S,L*7,S", "relu_linear")


def bench_patterns(
    preset: str = "mobilei2v",
    grid=(3, 23, 40),
    patterns=DEFAULT_PATTERNS,
    repeats: int = 3,
    warmup: int = 0,
    backends=("torch", "onnxruntime"),
    log=print,
) -> dict:
    """Times one forward per pattern and backend. Returns a JSON-able dict.

    Each backend's first call (the parity check between torch and onnxruntime) is an
    untimed warm-up already; `warmup` adds more."""
    import onnxruntime as ort

    from export import to_onnx

    base_cfg = PRESETS[preset]
    torch.manual_seed(0)
    base = HybridDiT(base_cfg).eval()
    weights = base.state_dict()
    inputs = example_inputs(base_cfg, grid)
    # Other work on a shared machine varies during a run, so the GEMM rate is measured
    # again just before each timing and each row is quoted against its own measurement.
    load_before = os.getloadavg()
    gemm_before = gemm_rate()
    log(f"fp32 GEMM rate (2048^3, torch): {gemm_before:.1f} GFLOP/s")
    rows = []
    for pattern in patterns:
        cfg = base_cfg.with_attention(pattern)
        with torch.device("meta"):
            model = HybridDiT(cfg)
        model.load_state_dict(weights, assign=True)  # same weights, no copy
        model.eval()
        flops = model_flops(cfg, grid)
        name = format_pattern(cfg.attention)

        def record(backend, t, gemm, extra=None, name=name, flops=flops):
            gflops = flops["total"] / t["median"] / 1e9
            rows.append(
                {
                    "pattern": name,
                    "backend": backend,
                    "median_s": t["median"],
                    "p10_s": t["p10"],
                    "p90_s": t["p90"],
                    "repeats": t["repeats"],
                    "flops": flops,
                    "gflops": gflops,
                    "gemm_gflops": gemm,
                    "fraction_of_gemm": gflops / gemm,
                    **(extra or {}),
                }
            )
            log(
                f"{name} {backend}: {t['median']:.3f} s/step, {gflops:.1f} GFLOP/s, "
                f"GEMM {gemm:.1f} GFLOP/s"
            )

        with torch.inference_mode():
            ref = model(*inputs)
        if "torch" in backends:

            def step(model=model):
                with torch.inference_mode():
                    return model(*inputs)

            gemm = gemm_rate()
            record("torch", time_fn(step, warmup=warmup, repeats=repeats), gemm)
        if "onnxruntime" in backends:
            with tempfile.TemporaryDirectory(prefix="model-cpu-") as tmp:
                t0 = time.perf_counter()
                path = to_onnx(model, inputs, Path(tmp) / "model.onnx")
                export_s = time.perf_counter() - t0
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = torch.get_num_threads()
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), inputs, strict=True)}
                (out,) = sess.run(None, feeds)
                rel = float(
                    np.linalg.norm(out.astype(np.float64) - ref.double().numpy())
                    / np.linalg.norm(ref.double().numpy())
                )
                gemm = gemm_rate()
                t = time_fn(lambda sess=sess, feeds=feeds: sess.run(None, feeds), warmup, repeats)
                del sess
            record("onnxruntime", t, gemm, {"export_s": export_s, "rel_err_vs_torch": rel})
        del model
    gemm_after = gemm_rate()
    log(f"fp32 GEMM rate after: {gemm_after:.1f} GFLOP/s")
    return {
        "benchmark": "bench.model_cpu",
        "preset": preset,
        "config": base_cfg.to_dict(),
        "grid": list(grid),
        "tokens": math.prod(grid),
        "machine": machine_info(),
        "onnxruntime": ort.__version__,
        "gemm_gflops": gemm_before,
        "gemm_gflops_after": gemm_after,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "warmup": warmup,
        "rows": rows,
    }


def table(doc: dict) -> str:
    lines = [
        f"{doc['preset']} at grid {'x'.join(map(str, doc['grid']))} ({doc['tokens']} tokens); "
        f"fp32 GEMM {doc['gemm_gflops']:.1f} GFLOP/s (after: {doc['gemm_gflops_after']:.1f})",
        "| pattern | backend | s / step (median) | GFLOP / step | GFLOP/s | GEMM GFLOP/s "
        "| of GEMM |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['pattern']} | {r['backend']} | {r['median_s']:.2f} | "
            f"{r['flops']['total'] / 1e9:.0f} | {r['gflops']:.1f} | {r['gemm_gflops']:.1f} | "
            f"{100 * r['fraction_of_gemm']:.0f}% |"
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
        default=";".join(DEFAULT_PATTERNS),
        help="attention patterns separated by ';'",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0, help="extra untimed calls")
    p.add_argument("--backends", default="torch,onnxruntime")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(","))
    unknown = sorted(set(backends) - {"torch", "onnxruntime"})
    if unknown:
        p.error(f"--backends: unknown {', '.join(unknown)}; choose from torch, onnxruntime")
    try:
        grid = parse_grid(args.grid, "--grid")
        patterns = [
            PRESETS[args.preset].with_attention(s).attention for s in args.patterns.split(";")
        ]
    except ValueError as e:
        p.error(str(e))
    doc = bench_patterns(
        args.preset, grid, patterns, args.repeats, args.warmup, backends, log=print
    )
    from export.files import write_json

    write_json(args.out, doc)
    print(table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
