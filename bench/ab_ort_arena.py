"""A/B of onnxruntime's arena setting (export.onnx.session's `shared_arena`): whole-model
sessions of the hybrid DiT with an arena each (onnxruntime's default) vs on the arena the
process's sessions share (what bench.latency times, so that bench.model_cpu can hold all
its whole models side by side). Both kinds of session of each one-variant model live in one
process and are timed interleaved in rounds (bench.machine.time_interleaved), so the
machine's drift hits both alike; the verdict follows the intervals of the medians
(bench.stats.speed_verdict), and the per-round ratio shared / own comes with its interval.
It also records what each session adds to the process's resident memory, made and run
ORT_WARM_RUNS times (own-arena sessions first).

    python -m bench.ab_ort_arena                          # mobilei2v, 3 x 23 x 40
    python -m bench.ab_ort_arena --preset tiny --grid 2x4x4 --repeats 3 --out /tmp/a.json

Writes bench/results/ab-ort-arena.json atomically.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench.ab_allocator import ab_parser
from bench.latency import ORT_WARM_RUNS, runtime_info
from bench.machine import check_counts, machine_info, time_interleaved
from bench.stats import median_ci, ms_row, speed_verdict
from export.mobilei2v_report import rss_bytes
from hybrid_dit import PRESETS, HybridDiT, check_grid, example_inputs

MODES = ("own arena", "shared arena")


def ab_ort_arena(preset="mobilei2v", grid=(3, 23, 40), variants=("relu_linear", "softmax"),
                 repeats=6, warmup=1, progress=True) -> dict:  # fmt: skip
    from export.onnx import input_names, session, to_onnx

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    grid = check_grid(grid)
    check_counts(warmup, repeats)  # before minutes of export
    variants = list(variants)
    if not variants or len(set(variants)) != len(variants):
        raise ValueError(f"variants must name at least one variant, each once, got {variants!r}")
    cfg = PRESETS[preset]
    configs = [cfg.with_attention(v) for v in variants]  # checks the names
    load_before = os.getloadavg()
    torch.manual_seed(0)
    weights = HybridDiT(cfg).eval().state_dict()
    inputs = example_inputs(cfg, grid)
    runners, memory = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for v, c in zip(variants, configs, strict=True):
            with torch.device("meta"):
                model = HybridDiT(c)
            model.load_state_dict(weights, assign=True)
            paths[v] = to_onnx(model.eval(), inputs, Path(tmp) / f"{v}.onnx", external_data=True)
            if progress:
                print(f"exported {v}", file=sys.stderr)
        feed = dict(zip(input_names(model, len(inputs)), (i.numpy() for i in inputs), strict=True))
        for mode in MODES:
            for v in variants:
                before = rss_bytes() if sys.platform == "linux" else None
                sess = session(paths[v], shared_arena=mode == "shared arena")
                for _ in range(ORT_WARM_RUNS):
                    sess.run(None, feed)
                after = rss_bytes() if sys.platform == "linux" else None
                name = f"{v}, {mode}"
                runners[name] = lambda s=sess: s.run(None, feed)
                memory[name] = None if before is None else round((after - before) / 1e9, 3)
                if progress:
                    print(f"made {name}: +{memory[name]} GB resident", file=sys.stderr)

        def tick(done, total):
            if progress:
                print(f"timed {done}/{total}", file=sys.stderr)

        times = time_interleaved(runners, warmup, repeats, progress=tick)
    rows = []
    for v in variants:
        own, shared = times[f"{v}, own arena"], times[f"{v}, shared arena"]
        ratios = [b / a for a, b in zip(own["times"], shared["times"], strict=True)]
        lo, hi = median_ci(ratios)
        rows.append({
            "variant": v,
            **{m: {**ms_row(times[f"{v}, {m}"]), "resident_gb_added": memory[f"{v}, {m}"]}
               for m in MODES},
            "shared_over_own_per_round": {"median": statistics.median(ratios),
                                          "ci_low": lo, "ci_high": hi, "ratios": ratios},
            "verdict": speed_verdict(shared, own, "shared arena", "own arena"),
        })  # fmt: skip
    return {
        "benchmark": "bench.ab_ort_arena",
        "what": "onnxruntime-cpu whole model, one step, batch 1: sessions with an arena each "
        "vs on the process's shared arena, held in one process and timed interleaved",
        "measured_as": f"{warmup} untimed round(s), then {repeats} timed rounds; each session "
        f"run {ORT_WARM_RUNS} times untimed when made (own-arena sessions made first)",
        "preset": preset,
        "grid": list(grid),
        "machine": machine_info(),
        "runtime": {**runtime_info("onnxruntime-cpu"), "shared_arena": "compared"},
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from export.files import write_json

    ap = ab_parser(__doc__, "bench/results/ab-ort-arena.json")
    ap.add_argument("--repeats", type=int, default=6, help="timed rounds")
    args = ap.parse_args(argv)
    try:
        res = ab_ort_arena(args.preset, args.grid, args.variants.split(","), args.repeats)
    except ValueError as e:
        ap.error(str(e))
    for r in res["rows"]:
        own, shared, q = r["own arena"], r["shared arena"], r["shared_over_own_per_round"]
        print(
            f"{r['variant']}: {r['verdict']}; shared/own per round {q['median']:.3f} "
            f"[{q['ci_low']:.3f}, {q['ci_high']:.3f}]; resident added "
            f"{own['resident_gb_added']} vs {shared['resident_gb_added']} GB"
        )
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
