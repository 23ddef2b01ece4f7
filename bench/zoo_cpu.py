"""CPU comparison of the zoo's implementations at a few token grids: each variant's fast
path (what `impl="auto"` runs on CPU), its reference and its peers (bench/peers.py: torch
SDPA, SANA's LiteLA) side by side, timed interleaved per grid, with the achieved GFLOP/s
from the analytic counts, the fraction of the fp32 GEMM rate measured in the same run
(the roofline scale on a CPU) and the multiple of the serial floor (GEMM time plus the
minimum traffic at the measured copy bandwidth).

    python -m bench.zoo_cpu                   # every variant at DEFAULT_GRIDS
    python -m bench.zoo_cpu --grids 3x23x40 --repeats 21 --out bench/results/zoo-cpu.json
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

import attention_zoo as az
from bench.machine import copy_bandwidth, gemm_rate, machine_info, no_cache, time_interleaved
from bench.peers import PEERS
from bench.stats import ms_row

# Token grids (T, H, W) of the default comparison; 3 x 23 x 40 is MobileI2V's 720p x 17
# frames latent. N is derived from each grid.
DEFAULT_GRIDS = ((4, 8, 8), (4, 16, 16), (3, 23, 40))
GEMM_N, GEMM_REPEATS = 2048, 5
IMPLS = ("fast", "reference")


def compare_implementations(
    grids=DEFAULT_GRIDS,
    heads: int = 16,
    head_dim: int = 72,
    batch: int = 1,
    repeats: int = 7,
    variants=None,
    impls=IMPLS,
    peers: bool = True,
    progress: bool = True,
    measure=None,
) -> dict:
    """Times every variant's `impls` (and its peers) in fp32 on the CPU at each grid, all
    candidates of a grid interleaved in `repeats` rounds. Returns a JSON-able dict with
    machine info, the measured GEMM rate and one row per (variant, implementation, grid).
    `measure(stage, key, fn) -> (value, cached)` may wrap each grid's timing (the study's
    cache)."""
    names = list(az.VARIANTS) if variants is None else [az.get(v).name for v in variants]
    measure = measure or no_cache
    rows, gemm, copy = [], None, None
    for grid in tqdm(grids, desc="zoo implementations", disable=not progress, leave=False):
        n = math.prod(grid)
        gen = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(batch, heads, n, head_dim, generator=gen) for _ in range(3))
        cands = {}
        for name in names:
            var = az.get(name)
            opts = {"grid": tuple(grid)} if "grid" in var.defaults else {}
            fns = {impl: getattr(var, impl) for impl in impls if impl in var.impls()}
            if peers:
                fns.update(PEERS.get(name, {}))
            for impl, fn in fns.items():

                def call(fn=fn, opts=opts, q=q, k=k, v=v):
                    with torch.inference_mode():
                        return fn(q, k, v, **opts)

                cands[name, impl] = call
        key = {
            "variants": names,
            "impls": list(impls),
            "peers": peers,
            "grid": list(grid),
            "B": batch,
            "H": heads,
            "D": head_dim,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }

        def run(cands=cands):
            # the roofline's scales measured with the timings, so a cached entry carries
            # the rates its own times are quoted against
            rates = {
                "gemm_gflops": gemm_rate(n=GEMM_N, repeats=GEMM_REPEATS),
                "copy_gbps": copy_bandwidth(),
            }
            flat = {f"{a}/{b}": fn for (a, b), fn in cands.items()}
            return {**rates, "times": time_interleaved(flat, warmup=1, repeats=repeats)}

        entry, cached = measure("zoo", key, run)
        times = entry["times"]
        gemm = {"gflops": entry["gemm_gflops"], "n": GEMM_N, "repeats": GEMM_REPEATS}
        copy = entry["copy_gbps"]
        for (name, impl), _ in cands.items():
            var = az.get(name)
            opts = {"grid": tuple(grid)} if "grid" in var.defaults else {}
            t = times[f"{name}/{impl}"]
            flops = var.flops(batch, heads, n, head_dim, **opts)
            nbytes = var.bytes(batch, heads, n, head_dim, torch.float32, **opts)
            gflops = flops / t["median"] / 1e9
            serial_floor = flops / (gemm["gflops"] * 1e9) + nbytes / (copy * 1e9)
            rows.append(
                {
                    "variant": name,
                    "impl": impl,
                    "peer": impl not in var.impls(),
                    "kind": var.kind,
                    "grid": list(grid),
                    "N": n,
                    **ms_row(t),
                    "flops": flops,
                    "bytes": nbytes,
                    "gflops": gflops,
                    "gemm_gflops": gemm["gflops"],
                    "fraction_of_gemm": gflops / gemm["gflops"],
                    "of_gemm_floor": (t["median"] * gemm["gflops"] * 1e9) / flops,
                    "of_serial_floor": t["median"] / serial_floor,
                    "cached": cached,
                }
            )
    return {
        "what": "zoo implementations and peers, fp32, CPU, interleaved per grid",
        "shape": {"B": batch, "H": heads, "D": head_dim},
        "machine": machine_info(),
        "gemm": gemm,  # of the last grid (each row carries its own)
        "copy_gbps": copy,
        "rows": rows,
    }


def table(res: dict) -> str:
    """The rows as a markdown table: median [95% CI], the multiple of the GEMM floor and of
    the serial floor (the GEMM floor plus the time the minimum traffic takes at the copy
    bandwidth: what a path that runs its GEMMs and its passes over memory one after the
    other cannot beat; at small head dims the two terms are of the same size)."""
    lines = [
        f"fp32 GEMM {res['gemm']['gflops']:.1f} GFLOP/s, copy {res['copy_gbps']:.1f} GB/s, "
        f"{res['machine']['torch_threads']} threads, {res['machine']['cpu']}, load average "
        f"{res['load_average_before'][0]:.2f} -> {res['load_average_after'][0]:.2f}",
        "| N | variant | implementation | ms, median [95% CI] | x GEMM floor | x serial floor |",
        "|---:|---|---|---|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['N']} | {r['variant']} | {r['impl']}{' (peer)' if r['peer'] else ''} | "
            f"{r['median_ms']:.2f} [{r['ci_low_ms']:.2f}, {r['ci_high_ms']:.2f}] | "
            f"{r['of_gemm_floor']:.2f} | {r['of_serial_floor']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os

    from export.files import write_json
    from hybrid_dit import parse_grid

    p = argparse.ArgumentParser(prog="python -m bench.zoo_cpu", description=__doc__.split("\n")[0])
    p.add_argument(
        "--grids",
        default=";".join("x".join(map(str, g)) for g in DEFAULT_GRIDS),
        help="token grids TxHxW separated by ';'",
    )
    p.add_argument("--variants", default=None, help="comma-separated (default: all)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds per grid")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    try:
        grids = [parse_grid(g, "--grids") for g in args.grids.split(";")]
        variants = None if args.variants is None else args.variants.split(",")
        if variants is not None:
            for v in variants:
                az.get(v)
    except (ValueError, KeyError) as e:
        p.error(str(e.args[0]))
    load_before = os.getloadavg()
    res = compare_implementations(
        grids=grids, variants=variants, repeats=args.repeats, progress=not args.no_progress
    )
    res["load_average_before"], res["load_average_after"] = list(load_before), list(os.getloadavg())
    print(table(res))
    if args.out is not None:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
