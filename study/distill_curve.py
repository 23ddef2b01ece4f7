"""Block distillation run to convergence: the held-out error of a swapped block vs the
distillation steps, for a few (block, variant) pairs of a teacher, and the step count
where it plateaus (the study's `distill_steps`).

    python -m study.distill_curve                  # teacher seed 0, blocks 0, 7, 15
    make distill-curve                             # the same, as a documented target

Each pair: the teacher with that block's attention swapped, the block distilled for
`--max-steps` steps on the teacher's recorded activations of training clips (as the study
does), its output error against the teacher's measured every `--every` steps on activations
of held-out clips it never saw. Plateau: the first step count whose held-out error is
within 5% of the curve's total drop from its minimum. Writes bench/results/
distill-curve.json atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "distill-curve.json"
PLATEAU_FRACTION = 0.05


def plateau(curve: list[dict]) -> int:
    """The first step whose held-out error is within PLATEAU_FRACTION of the total drop
    (first point - minimum) of the minimum."""
    errs = [c["heldout_block_mse"] for c in curve]
    lo, hi = min(errs), errs[0]
    tol = lo + PLATEAU_FRACTION * (hi - lo)
    return next(c["step"] for c in curve if c["heldout_block_mse"] <= tol)


def run(teacher_path, blocks, variants, max_steps: int, every: int, batches: int, log=print):
    from study.dataset import TaskSpec, load_task
    from study.distill import DISTILL_LR, distill_block, record_activations, swapped_model
    from study.models import load_model
    from study.task import VideoSpec

    teacher, meta = load_model(teacher_path)
    task = meta["task"]
    data = load_task(
        TaskSpec(video=VideoSpec(**task["video"]), n_train=task["n_train"], n_heldout=16)
    )
    acts = record_activations(teacher, data, batches=batches)
    check = record_activations(teacher, data, batches=4, seed=2, heldout=True)
    rows = []
    for i in blocks:
        for v in variants:
            pattern = list(teacher.cfg.attention)
            pattern[i] = v
            model = swapped_model(teacher, pattern)
            t0 = time.perf_counter()
            fit = distill_block(
                model, i, acts, steps=max_steps, seed=i, check=check, curve_every=every
            )
            p = plateau(fit["curve"])
            first, last = (fit["curve"][j]["heldout_block_mse"] for j in (0, -1))
            log(f"block {i:2d} {v:15s}: held-out block MSE {first:.3g} -> {last:.3g}, plateau {p}")
            rows.append(
                {
                    "block": i,
                    "variant": v,
                    "plateau_steps": p,
                    "seconds": time.perf_counter() - t0,
                    **fit,
                }
            )
    return {
        "what": "held-out block error of a swapped block vs distillation steps",
        "teacher": str(teacher_path),
        "lr": DISTILL_LR,
        "activation_batches": batches,
        "plateau_rule": f"first step within {PLATEAU_FRACTION:.0%} of the drop from the minimum",
        "plateau_steps_max": max(r["plateau_steps"] for r in rows),
        "rows": rows,
    }


def main(argv=None) -> int:
    from study.models import teacher_path

    p = argparse.ArgumentParser(
        prog="python -m study.distill_curve", description=__doc__.split("\n")[0]
    )
    p.add_argument("--teacher", type=Path, default=teacher_path(0))
    p.add_argument("--blocks", default="0,7,15")
    p.add_argument("--variants", default="relu_linear,softmax_frame")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--batches", type=int, default=8, help="activation batches (the study's)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    blocks = [int(b) for b in args.blocks.split(",")]
    variants = [v.strip() for v in args.variants.split(",")]
    res = run(args.teacher, blocks, variants, args.max_steps, args.every, args.batches)
    from bench.machine import machine_info
    from export.files import write_json

    res["command"] = "python -m study.distill_curve " + " ".join(argv or sys.argv[1:])
    res["machine"] = machine_info()
    res["load_average_end"] = os.getloadavg()[0]
    res["torch_threads"] = torch.get_num_threads()
    write_json(args.out, res)
    print(f"plateau at <= {res['plateau_steps_max']} steps; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
