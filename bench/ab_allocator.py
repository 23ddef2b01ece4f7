"""A/B of the allocator setting (bench.machine.keep_freed_memory): the torch-cpu step of a
stack of hybrid-DiT blocks with glibc's default malloc vs with freed memory kept, timed in
alternating fresh processes (default, kept, default, kept, ...), since the setting is
process-wide and glibc's default cannot be restored once changed. Each process builds the
same seeded blocks, runs them `warm` times untimed and `repeats` times timed, counting the
page faults of the timed calls; the verdict follows the intervals of the pooled times
(bench.stats.speed_verdict).

    python -m bench.ab_allocator                       # relu_linear and softmax, 4 rounds
    python -m bench.ab_allocator --variants relu_linear --rounds 6

Writes bench/results/ab-allocator.json atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.machine import KEEP_FREED_ENV, machine_info
from bench.stats import ms_row, speed_verdict, summarize
from hybrid_dit import PRESETS, check_grid, parse_grid

MODES = ("default", "kept")

# What one process runs: argv = mode preset grid variants stack warm repeats.
PROBE = """
import json, math, resource, sys, time
import torch
from bench.latency import Blocks
from bench.machine import allocator_info, keep_freed_memory
from hybrid_dit import PRESETS
from hybrid_dit.model import DiTBlock, rope_tables
mode, preset, grid, variants, stack, warm, repeats = sys.argv[1:]
info = keep_freed_memory() if mode == "kept" else allocator_info()
grid = tuple(int(g) for g in grid.split("x"))
stack, warm, repeats = int(stack), int(warm), int(repeats)
cfg = PRESETS[preset]
n = math.prod(grid)
gen = torch.Generator().manual_seed(1)
x = torch.randn(1, n, cfg.hidden, generator=gen)
cond = 0.1 * torch.randn(1, grid[0], 6, cfg.hidden, generator=gen)
out = {"allocator": info, "variants": {}}
for v in variants.split(","):
    c = cfg.with_attention(v)
    torch.manual_seed(0)
    m = Blocks([DiTBlock(c, i) for i in range(stack)], rope_tables(c, grid), grid).eval()
    times, faults = [], []
    with torch.inference_mode():
        for _ in range(warm):
            m(x, cond)
        for _ in range(repeats):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            m(x, cond)
            times.append(time.perf_counter() - t0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    out["variants"][v] = {"times": times, "faults": faults}
    del m
out["peak_rss_mib"] = allocator_info()["peak_rss_mib"]
print(json.dumps(out))
"""


def run_probe(mode, preset, grid, variants, stack, warm, repeats) -> dict:
    """One fresh process in `mode`; returns its times, fault counts and allocator info."""
    env = {k: v for k, v in os.environ.items() if k != KEEP_FREED_ENV}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    args = [mode, preset, "x".join(map(str, grid)), ",".join(variants), stack, warm, repeats]
    res = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True,
                         text=True, env=env, cwd=root)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"the {mode} probe failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def ab_allocator(preset="mobilei2v", grid=(3, 23, 40), variants=("relu_linear", "softmax"),
                 rounds=4, stack=2, warm=2, repeats=4, progress=True) -> dict:  # fmt: skip
    grid = check_grid(grid)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    for name, val in (("rounds", rounds), ("stack", stack), ("repeats", repeats)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be an int >= 1, got {val!r}")
    load_before = os.getloadavg()
    runs = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:  # A B B A A B ...: no fixed order
            runs[mode].append(run_probe(mode, preset, grid, variants, stack, warm, repeats))
            if progress:
                print(f"round {r + 1}/{rounds}: {mode} done", file=sys.stderr)
    rows = []
    for v in variants:
        per = {}
        for mode in MODES:
            times = [t / stack for run in runs[mode] for t in run["variants"][v]["times"]]
            faults = [f / stack for run in runs[mode] for f in run["variants"][v]["faults"]]
            per[mode] = {"stats": summarize(times), "faults_per_block": faults}
        rows.append({
            "variant": v,
            **{m: {**ms_row(per[m]["stats"]),
                   "median_faults_per_block": statistics.median(per[m]["faults_per_block"])}
               for m in MODES},
            "verdict": speed_verdict(per["kept"]["stats"], per["default"]["stats"],
                                     "freed memory kept", "glibc default"),
            "speedup": per["default"]["stats"]["median"] / per["kept"]["stats"]["median"],
        })  # fmt: skip
    return {
        "benchmark": "bench.ab_allocator",
        "what": f"torch-cpu, per block of a stack of {stack}, {rounds} alternating processes "
        f"per mode, {warm} untimed and {repeats} timed calls each",
        "preset": preset,
        "grid": list(grid),
        "machine": machine_info(),
        "allocators": {m: runs[m][0]["allocator"] for m in MODES},
        "peak_rss_mib": {m: max(run["peak_rss_mib"] for run in runs[m]) for m in MODES},
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
    }


def ab_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The arguments every A/B main shares (bench.ab_allocator, bench.ab_ort_arena): preset,
    grid, variants and the output file."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--preset", default="mobilei2v", choices=sorted(PRESETS))
    ap.add_argument("--grid", default="3x23x40", type=parse_grid)
    ap.add_argument("--variants", default="relu_linear,softmax", help="comma-separated")
    ap.add_argument("--out", default=out)
    return ap


def main(argv: list[str] | None = None) -> int:
    from export.files import write_json

    ap = ab_parser(__doc__, "bench/results/ab-allocator.json")
    ap.add_argument("--rounds", type=int, default=4, help="processes per mode")
    ap.add_argument("--repeats", type=int, default=4, help="timed calls per process")
    args = ap.parse_args(argv)
    try:
        res = ab_allocator(args.preset, args.grid, args.variants.split(","), args.rounds,
                           repeats=args.repeats)  # fmt: skip
    except ValueError as e:
        ap.error(str(e))
    for r in res["rows"]:
        d, k = r["default"], r["kept"]
        print(
            f"{r['variant']}: {r['verdict']}; default {d['median_ms']:.0f} ms "
            f"({d['median_faults_per_block']:.0f} faults/block), kept {k['median_ms']:.0f} ms "
            f"({k['median_faults_per_block']:.0f} faults/block)"
        )
    print(f"peak RSS MiB: {res['peak_rss_mib']}")
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
