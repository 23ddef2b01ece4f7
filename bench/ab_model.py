"""A/B of a change to the hybrid DiT's torch modules: one denoising step of a preset with
`hybrid_dit/model.py` as it is at a git revision beside the working tree's, the same weights
and inputs, timed interleaved in one process (bench.machine.time_interleaved), with the
outputs' difference and a verdict that follows the intervals (bench.stats.speed_verdict).

    python -m bench.ab_model                          # HEAD vs working tree, relu_linear
    python -m bench.ab_model --rev HEAD~1 --variants relu_linear,softmax --repeats 7

Only model.py is swapped: the revision's file is executed against the working tree's other
modules (config, the zoo), so it measures changes confined to that file. Writes
bench/results/ab-model.json atomically.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

import torch

import hybrid_dit.model as current
from bench.machine import keep_freed_memory, machine_info, time_interleaved
from bench.stats import ms_row, speed_verdict
from hybrid_dit import PRESETS, check_grid, example_inputs, format_pattern, parse_grid

MODEL_FILE = "hybrid_dit/model.py"


def model_at(rev: str) -> types.ModuleType:
    """hybrid_dit/model.py as it is at git revision `rev`, as a module of its own."""
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        ["git", "show", f"{rev}:{MODEL_FILE}"], cwd=root, capture_output=True, text=True
    )
    if res.returncode != 0:
        raise ValueError(f"rev: no {MODEL_FILE} at git revision {rev!r}: {res.stderr.strip()}")
    mod = types.ModuleType(f"hybrid_dit_model_at_{rev}")
    mod.__file__ = f"{rev}:{MODEL_FILE}"
    exec(compile(res.stdout, mod.__file__, "exec"), mod.__dict__)
    return mod


def ab_model(rev="HEAD", preset="mobilei2v", grid=(3, 23, 40), variants=("relu_linear",),
             repeats=7) -> dict:  # fmt: skip
    """For each variant (one per block, the whole depth): the step at `rev` vs now."""
    grid = check_grid(grid)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    old = model_at(rev)
    load_before = os.getloadavg()
    rows = []
    for variant in variants:
        cfg = PRESETS[preset].with_attention((variant,) * PRESETS[preset].depth)
        a = old.HybridDiT(cfg).eval()
        b = current.HybridDiT(cfg).eval()
        b.load_state_dict(a.state_dict())
        inputs = example_inputs(cfg, grid)
        with torch.inference_mode():
            ya, yb = a(*inputs), b(*inputs)
            diff = float((ya - yb).abs().max() / ya.abs().max())

        def step(m, inputs=inputs):
            with torch.inference_mode():
                m(*inputs)

        times = time_interleaved(
            {rev: lambda a=a: step(a), "working tree": lambda b=b: step(b)}, repeats=repeats
        )
        rows.append({
            "pattern": format_pattern(cfg.attention),
            "max_abs_diff_rel": diff,
            rev: ms_row(times[rev]),
            "working tree": ms_row(times["working tree"]),
            "verdict": speed_verdict(times["working tree"], times[rev], "working tree", rev),
        })  # fmt: skip
    return {
        "benchmark": "bench.ab_model",
        "rev": rev,
        "preset": preset,
        "grid": list(grid),
        "machine": machine_info(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from export.files import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="git revision to compare against")
    ap.add_argument("--preset", default="mobilei2v", choices=sorted(PRESETS))
    ap.add_argument("--grid", default="3x23x40", type=parse_grid)
    ap.add_argument("--variants", default="relu_linear", help="comma-separated")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="bench/results/ab-model.json")
    args = ap.parse_args(argv)
    keep_freed_memory()  # the allocator every timing of ours runs with
    res = ab_model(args.rev, args.preset, args.grid, args.variants.split(","), args.repeats)
    for r in res["rows"]:
        print(f"{r['pattern']}: {r['verdict']}; max |diff| / max |out| {r['max_abs_diff_rel']:.1e}")
    write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
