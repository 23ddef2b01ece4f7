"""CPU comparison of the zoo's references at a few token grids: median latency, achieved
GFLOP/s from the analytic counts, and the fraction of the fp32 GEMM rate measured in the
same run (the roofline scale on a CPU)."""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

import attention_zoo as az
from bench.machine import gemm_rate, machine_info, time_fn

# Token grids (T, H, W) of the default comparison; 3 x 23 x 40 is MobileI2V's 720p x 17
# frames latent. N is derived from each grid.
DEFAULT_GRIDS = ((4, 8, 8), (4, 16, 16), (3, 23, 40))
GEMM_N, GEMM_REPEATS = 2048, 5


def compare_references(
    grids=DEFAULT_GRIDS,
    heads: int = 16,
    head_dim: int = 72,
    batch: int = 1,
    repeats: int = 5,
    variants=None,
    progress: bool = True,
    measure=None,
) -> dict:
    """Times every variant's reference (fp32, CPU) at each grid. Returns a JSON-able dict
    with machine info, the measured GEMM rate and one row per (variant, grid).
    `measure(stage, key, fn) -> (value, cached)` may wrap each timing (the study's cache)."""
    names = list(az.VARIANTS) if variants is None else [az.get(v).name for v in variants]
    measure = measure or (lambda stage, key, fn: (fn(), False))
    gemm = {
        "gflops": gemm_rate(n=GEMM_N, repeats=GEMM_REPEATS),
        "n": GEMM_N,
        "repeats": GEMM_REPEATS,
    }
    rows = []
    jobs = [(g, n) for g in grids for n in names]
    for grid, name in tqdm(jobs, desc="zoo references", disable=not progress, leave=False):
        var = az.get(name)
        n = math.prod(grid)
        gen = torch.Generator().manual_seed(n)
        q, k, v = (torch.randn(batch, heads, n, head_dim, generator=gen) for _ in range(3))
        opts = {"grid": tuple(grid)} if "grid" in var.defaults else {}

        def call(var=var, opts=opts, q=q, k=k, v=v):
            with torch.inference_mode():
                return var.reference(q, k, v, **opts)

        key = {
            "variant": name,
            "grid": list(grid),
            "B": batch,
            "H": heads,
            "D": head_dim,
            "repeats": repeats,
            "torch": torch.__version__,
        }
        t, cached = measure("zoo-reference", key, lambda call=call: time_fn(call, repeats=repeats))
        flops = var.flops(batch, heads, n, head_dim, **opts)
        gflops = flops / t["median"] / 1e9
        rows.append(
            {
                "variant": name,
                "kind": var.kind,
                "grid": list(grid),
                "N": n,
                "median_ms": t["median"] * 1e3,
                "p10_ms": t["p10"] * 1e3,
                "p90_ms": t["p90"] * 1e3,
                "repeats": t["repeats"],
                "flops": flops,
                "bytes": var.bytes(batch, heads, n, head_dim, torch.float32, **opts),
                "gflops": gflops,
                "fraction_of_gemm": gflops / gemm["gflops"],
                "cached": cached,
            }
        )
    return {
        "what": "zoo references, fp32, CPU",
        "shape": {"B": batch, "H": heads, "D": head_dim},
        "machine": machine_info(),
        "gemm": gemm,
        "rows": rows,
    }
