"""A/B of a change to the attention zoo: each variant's implementation (the fast path by
default) as `attention_zoo` is at a git revision beside the working tree's, on the same
inputs, timed interleaved in one process with a GEMM probe in every round
(bench.machine.time_interleaved), with both sides' errors against the float64 reference,
their multiples of the GEMM floor, the per-round ratio and a verdict that follows the
intervals (bench.stats.speed_verdict).

    python -m bench.ab_zoo                                  # HEAD vs working tree, relu_linear
    python -m bench.ab_zoo --rev d37a1a5~1 --variants relu_linear,elu_linear --repeats 15

The whole package is swapped: the revision's `attention_zoo/` is imported under its own
name with the working tree's set aside, then the working tree's is put back (zoo_at).
Other layers (kernels) and any import the revision's code makes lazily, once loaded,
come from the working tree. Writes bench/results/ab-zoo.json atomically.
"""

from __future__ import annotations

import argparse
import importlib
import io
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import torch

import attention_zoo as az
from bench.machine import (
    GEMM_PROBE_N,
    gemm_flops,
    gemm_probe,
    keep_freed_memory,
    machine_info,
    time_interleaved,
)
from bench.stats import ms_row, paired_ratio, speed_verdict
from bench.zoo_cpu import GEMM_KEY, of_gemm_floor

PACKAGE = "attention_zoo"
WORKING_TREE = "working tree"


def _package_modules() -> dict[str, types.ModuleType]:
    return {n: m for n, m in sys.modules.items() if n == PACKAGE or n.startswith(PACKAGE + ".")}


def zoo_at(rev: str) -> types.ModuleType:
    """The `attention_zoo` package as it is at git revision `rev`, imported on its own (its
    registry, variants and helpers are separate objects from the working tree's, which
    stay what `import attention_zoo` gives)."""
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        ["git", "archive", "--format=tar", rev, PACKAGE], cwd=root, capture_output=True
    )
    if res.returncode != 0:
        why = res.stderr.decode(errors="replace").strip()
        raise ValueError(f"rev: no {PACKAGE}/ at git revision {rev!r}: {why}")
    saved = _package_modules()
    with tempfile.TemporaryDirectory(prefix="ab-zoo-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        for name in saved:
            del sys.modules[name]
        sys.path.insert(0, tmp)
        try:
            return importlib.import_module(PACKAGE)
        finally:
            sys.path.remove(tmp)
            for name in _package_modules():
                del sys.modules[name]
            sys.modules.update(saved)


def ab_zoo(rev="HEAD", variants=("relu_linear",), impl="fast", grid=(3, 23, 40), heads=16,
           head_dim=72, batch=1, repeats=15) -> dict:  # fmt: skip
    """Each variant's `impl` at `rev` vs the working tree's, fp32 on the CPU, (batch, heads,
    N, head_dim) inputs with N the grid's token count, all candidates and a GEMM probe
    interleaved in `repeats` rounds (two warm-up rounds first)."""
    if impl not in ("fast", "reference"):
        raise ValueError(f"impl must be 'fast' or 'reference', got {impl!r}")
    old = zoo_at(rev)
    n = math.prod(grid)
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=gen) for _ in range(3))
    sides = {rev: old, WORKING_TREE: az}
    cands, checks, opts_of = {GEMM_KEY: gemm_probe(GEMM_PROBE_N)}, {}, {}
    for name in variants:
        new = az.get(name)
        opts = opts_of[name] = {"grid": tuple(grid)} if "grid" in new.defaults else {}
        with torch.inference_mode():
            ref = new.reference(q.double(), k.double(), v.double(), **opts)
        for side, zoo in sides.items():
            try:
                fn = getattr(zoo.get(name), impl)
            except KeyError as e:
                raise ValueError(f"variants: no variant {name!r} at {side}") from e

            def call(fn=fn, opts=opts):
                with torch.inference_mode():
                    return fn(q, k, v, **opts)

            out = call()
            checks[name, side] = float((out.double() - ref).abs().max() / ref.abs().max())
            cands[f"{name}@{side}"] = call
    load_before = os.getloadavg()
    times = time_interleaved(cands, warmup=2, repeats=repeats)
    g = times[GEMM_KEY]
    rows = []
    for name in variants:
        flops = az.get(name).flops(batch, heads, n, head_dim, **opts_of[name])
        t = {side: times[f"{name}@{side}"] for side in sides}
        row = {"variant": name, "impl": impl}
        for side in sides:
            floor = of_gemm_floor(t[side]["times"], flops, g["times"])
            row[side] = {
                **ms_row(t[side]),
                "max_err_rel": checks[name, side],
                "of_gemm_floor": floor["median"],
                "of_gemm_floor_ci": [floor["ci_low"], floor["ci_high"]],
            }
        ratio = paired_ratio(t[WORKING_TREE]["times"], t[rev]["times"])
        row["ratio_per_round"] = ratio  # working tree's time over rev's, round by round
        row["verdict"] = speed_verdict(t[WORKING_TREE], t[rev], WORKING_TREE, rev)
        rows.append(row)
    return {
        "benchmark": "bench.ab_zoo",
        "rev": rev,
        "grid": list(grid),
        "shape": {"B": batch, "H": heads, "N": n, "D": head_dim},
        "machine": machine_info(),
        "gemm_gflops": gemm_flops(GEMM_PROBE_N) / g["median"] / 1e9,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from export.files import write_json
    from hybrid_dit import parse_grid

    ap = argparse.ArgumentParser(
        prog="python -m bench.ab_zoo", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--rev", default="HEAD", help="git revision to compare against")
    ap.add_argument("--variants", default="relu_linear", help="comma-separated")
    ap.add_argument("--impl", default="fast", choices=("fast", "reference"))
    ap.add_argument("--grid", default="3x23x40", help="token grid TxHxW")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=72)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    ap.add_argument("--out", default="bench/results/ab-zoo.json")
    args = ap.parse_args(argv)
    for flag in ("heads", "head_dim", "repeats"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        grid = parse_grid(args.grid, "--grid")
        variants = args.variants.split(",")
        for name in variants:
            az.get(name)
    except (ValueError, KeyError) as e:
        ap.error(str(e.args[0]))
    keep_freed_memory()  # the allocator every timing of ours runs with
    try:
        res = ab_zoo(args.rev, variants, args.impl, grid, args.heads, args.head_dim,
                     repeats=args.repeats)  # fmt: skip
    except ValueError as e:
        ap.error(str(e))
    print(f"fp32 GEMM {res['gemm_gflops']:.1f} GFLOP/s in the rounds, N = {res['shape']['N']}")
    for r in res["rows"]:
        a, b, p = r[args.rev], r[WORKING_TREE], r["ratio_per_round"]
        print(
            f"{r['variant']}.{r['impl']}: {r['verdict']}; per round {p['median']:.3f}x "
            f"[{p['ci_low']:.3f}, {p['ci_high']:.3f}]; x GEMM floor {a['of_gemm_floor']:.2f} "
            f"-> {b['of_gemm_floor']:.2f}; max error {a['max_err_rel']:.1e} -> "
            f"{b['max_err_rel']:.1e}"
        )
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
