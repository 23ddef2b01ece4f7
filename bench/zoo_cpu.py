"""CPU comparison of the zoo's implementations at a few token grids: each variant's fast
path (what `impl="auto"` runs on CPU), its reference and its peers (bench/peers.py: torch
SDPA, SANA's LiteLA) side by side, timed interleaved per grid, with the achieved GFLOP/s
from the analytic counts, the multiple of the GEMM floor (the analytic FLOPs at the fp32
GEMM rate, the roofline scale on a CPU; a GEMM probe is one more candidate of the same
rounds, and the multiple is the median over rounds of each round's own ratio, with its
interval) and the multiple of the serial floor (GEMM time plus the minimum traffic at the
copy bandwidth measured before the rounds).

With `bounds`, each linear variant also gets a row for its two GEMMs alone (impl
`gemms_alone`, marked `bound`): the batched matmuls of the padded-state form run on features
and a key state computed before the rounds, so no feature map, key sum or division is
timed. No implementation of the matmul form through torch's batched GEMM can beat it; its
multiple of the GEMM floor is how much of a goal such as "within 2x of the GEMM floor" the
GEMMs spend at these shapes before any elementwise work. (The linear variants' fast paths
run the fused CPU kernel, kernels.cpu_linear, where it builds: it does not go through
torch's GEMM and can beat this bound. With `torch_forms`, the PyTorch form each of them
replaces is timed beside it, impl `fast_torch`.)

    python -m bench.zoo_cpu                   # every variant at DEFAULT_GRIDS
    python -m bench.zoo_cpu --grids 3x23x40 --repeats 21 --out bench/results/zoo-cpu.json
    python -m bench.zoo_cpu --grids 3x23x40 --variants relu_linear --bounds --torch-forms
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm import tqdm

import attention_zoo as az
from attention_zoo._common import padded_state
from bench.machine import (
    GEMM_PROBE_N,
    copy_bandwidth,
    gemm_flops,
    gemm_probe,
    machine_info,
    no_cache,
    time_interleaved,
)
from bench.peers import PEERS
from bench.stats import ms_row, paired_ratio

# Token grids (T, H, W) of the default comparison; 3 x 23 x 40 is MobileI2V's 720p x 17
# frames latent. N is derived from each grid.
DEFAULT_GRIDS = ((4, 8, 8), (4, 16, 16), (3, 23, 40))
# The GEMM probe's name among a grid's candidates (not a variant/impl pair).
GEMM_KEY = "__gemm__"
IMPLS = ("fast", "reference")
# The impl name of a linear variant's bound row (its two GEMMs alone).
BOUND_IMPL = "gemms_alone"
# The impl name of a fast path's PyTorch form (`fast_fn.torch_form`: what "fast" runs
# where the fused CPU kernel cannot), timed beside it with torch_forms=True.
TORCH_FORM = "fast_torch"


def linear_gemms(var, q, k, v, **opts):
    """A linear variant's two batched GEMMs of the padded-state form, with everything else
    computed once here: returns gemms() -> (B, H, Nq, padded_width(Dv + 1)), the numerator
    (first Dv columns) and the denominator before eps (column Dv), from phi_k^T v (F x Dv)
    and phi_q times the key state as the eager PyTorch form builds it (padded_state).
    The features come from the variant's own feature map (fp32, contiguous)."""
    o = var.resolve_opts(q, k, opts)
    o.pop("eps")
    phi_q, phi_k = (x.contiguous() for x in var.feature_fn(q, k, **o))
    state = padded_state(phi_k.transpose(-1, -2) @ v, phi_k.sum(dim=-2))

    def gemms():
        phi_k.transpose(-1, -2) @ v  # the key state's GEMM, timed; its value is `state`'s
        return phi_q @ state

    return gemms


def of_gemm_floor(times, flops: int, gemm_times, extra_s: float = 0.0) -> dict:
    """The multiple of the GEMM floor, round by round: times[r] over flops x gemm_times[r] /
    gemm_flops(GEMM_PROBE_N) (+ extra_s), both from round r of the same rounds (the probe is
    gemm_probe(GEMM_PROBE_N)): bench.stats.paired_ratio, median and interval."""
    floors = [flops * tg / gemm_flops(GEMM_PROBE_N) + extra_s for tg in gemm_times]
    return paired_ratio(times, floors)


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
    bounds: bool = False,
    torch_forms: bool = False,
) -> dict:
    """Times every variant's `impls` (and its peers) in fp32 on the CPU at each grid, all
    candidates of a grid interleaved in `repeats` rounds. Returns a JSON-able dict with
    machine info, the GEMM rate measured in the rounds (bench.machine.gemm_probe) and one
    row per (variant, implementation, grid); with `bounds`, also one `gemms_alone` row per
    linear variant and grid (linear_gemms); with `torch_forms`, also one `fast_torch` row
    per variant whose fast path has a PyTorch form beside its native kernel.
    `measure(stage, key, fn) -> (value, cached)` may wrap each grid's timing (the study's
    cache)."""
    names = list(az.VARIANTS) if variants is None else [az.get(v).name for v in variants]
    measure = measure or no_cache
    rows, gemm, copy, by_grid = [], None, None, []
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
            torch_form = getattr(var.fast_fn, "torch_form", None)
            if torch_forms and torch_form is not None:

                def run_torch_form(q, k, v, var=var, form=torch_form, **o):
                    return form(q, k, v, **var.resolve_opts(q, k, o))

                fns[TORCH_FORM] = run_torch_form
            for impl, fn in fns.items():

                def call(fn=fn, opts=opts, q=q, k=k, v=v):
                    with torch.inference_mode():
                        return fn(q, k, v, **opts)

                cands[name, impl] = call
            if bounds and var.kind == "linear" and var.feature_fn is not None:
                gemms = linear_gemms(var, q, k, v, **opts)

                def call_bound(gemms=gemms):
                    with torch.inference_mode():
                        return gemms()

                cands[name, BOUND_IMPL] = call_bound
        key = {
            "variants": names,
            "impls": list(impls),
            "peers": peers,
            "grid": list(grid),
            "B": batch,
            "H": heads,
            "D": head_dim,
            "repeats": repeats,
            "gemm_probe": GEMM_PROBE_N,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        if bounds:  # keys without bounds stay as they were
            key["bounds"] = BOUND_IMPL
        if torch_forms:
            key["torch_forms"] = TORCH_FORM

        def run(cands=cands):
            # the roofline's scales measured with the timings, so a cached entry carries
            # the rates its own times are quoted against: the GEMM in the same rounds
            flat = {f"{a}/{b}": fn for (a, b), fn in cands.items()}
            flat[GEMM_KEY] = gemm_probe(GEMM_PROBE_N)
            copy = copy_bandwidth()
            return {"copy_gbps": copy, "times": time_interleaved(flat, warmup=1, repeats=repeats)}

        entry, cached = measure("zoo", key, run)
        times = entry["times"]
        g = times[GEMM_KEY]
        gemm = {
            "gflops": gemm_flops(GEMM_PROBE_N) / g["median"] / 1e9,
            "n": GEMM_PROBE_N,
            "repeats": repeats,
        }
        by_grid.append({"grid": list(grid), **gemm, "times_ms": [1e3 * x for x in g["times"]]})
        copy = entry["copy_gbps"]
        for (name, impl), _ in cands.items():
            var = az.get(name)
            opts = {"grid": tuple(grid)} if "grid" in var.defaults else {}
            t = times[f"{name}/{impl}"]
            flops = var.flops(batch, heads, n, head_dim, **opts)
            nbytes = var.bytes(batch, heads, n, head_dim, torch.float32, **opts)
            gflops = flops / t["median"] / 1e9
            floor = of_gemm_floor(t["times"], flops, g["times"])
            # round r over its serial floor: the GEMM floor plus the minimum traffic's time
            serial = of_gemm_floor(t["times"], flops, g["times"], nbytes / (copy * 1e9))
            rows.append(
                {
                    "variant": name,
                    "impl": impl,
                    "peer": impl not in var.impls() and impl not in (BOUND_IMPL, TORCH_FORM),
                    "bound": impl == BOUND_IMPL,
                    "kind": var.kind,
                    "grid": list(grid),
                    "N": n,
                    **ms_row(t),
                    "flops": flops,
                    "bytes": nbytes,
                    "gflops": gflops,
                    "gemm_gflops": gemm["gflops"],
                    "fraction_of_gemm": gflops / gemm["gflops"],
                    "of_gemm_floor": floor["median"],
                    "of_gemm_floor_ci": [floor["ci_low"], floor["ci_high"]],
                    "of_serial_floor": serial["median"],
                    "cached": cached,
                }
            )
    return {
        "what": "zoo implementations and peers, fp32, CPU, interleaved per grid",
        "shape": {"B": batch, "H": heads, "D": head_dim},
        "machine": machine_info(),
        "gemm": gemm,  # of the last grid's rounds (each row carries its own)
        "gemm_by_grid": by_grid,  # the probe's time in each round of each grid
        "copy_gbps": copy,
        "rows": rows,
    }


def _tag(r: dict) -> str:
    return " (peer)" if r["peer"] else " (bound)" if r.get("bound") else ""


def table(res: dict) -> str:
    """The rows as a markdown table: median [95% CI], the multiple of the GEMM floor (median
    of the per-round ratios [95% CI]) and of the serial floor (the GEMM floor plus the time
    the minimum traffic takes at the copy bandwidth: what a path that runs its GEMMs and its
    passes over memory one after the other cannot beat; at small head dims the two terms
    are of the same size)."""
    lines = [
        f"fp32 GEMM {res['gemm']['gflops']:.1f} GFLOP/s (median of the rounds), copy "
        f"{res['copy_gbps']:.1f} GB/s, "
        f"{res['machine']['torch_threads']} threads, {res['machine']['cpu']}, load average "
        f"{res['load_average_before'][0]:.2f} -> {res['load_average_after'][0]:.2f}",
        "| N | variant | implementation | ms, median [95% CI] | x GEMM floor [95% CI] "
        "| x serial floor |",
        "|---:|---|---|---|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['N']} | {r['variant']} | {r['impl']}{_tag(r)} | "
            f"{r['median_ms']:.2f} [{r['ci_low_ms']:.2f}, {r['ci_high_ms']:.2f}] | "
            f"{r['of_gemm_floor']:.2f} [{r['of_gemm_floor_ci'][0]:.2f}, "
            f"{r['of_gemm_floor_ci'][1]:.2f}] | {r['of_serial_floor']:.2f} |"
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
    p.add_argument(
        "--bounds",
        action="store_true",
        help="also time each linear variant's two GEMMs alone (rows 'gemms_alone (bound)')",
    )
    p.add_argument(
        "--torch-forms",
        action="store_true",
        help="also time the PyTorch form of each fast path that runs the native kernel "
        "(rows 'fast_torch')",
    )
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
        grids=grids,
        variants=variants,
        repeats=args.repeats,
        progress=not args.no_progress,
        bounds=args.bounds,
        torch_forms=args.torch_forms,
    )
    res["load_average_before"], res["load_average_after"] = list(load_before), list(os.getloadavg())
    print(table(res))
    if args.out is not None:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
