"""A check of the method: do hybrids built by block-wise distillation from the teacher rank
like the same hybrids trained natively from scratch?

    python -m study.native_check --run results/run-X     # its chosen config vs MobileI2V's
    make native-check RUN=results/run-X

For MobileI2V's pattern and the chosen config of a study run (teacher 0's, at the teacher's
flow level): each trained from scratch with exactly the teacher's recipe (train_teacher:
same seed, steps, schedule, fresh clips), and each built by block-wise distillation from
the teacher (study.distill.build_config, as the study builds configs). All four sampled with
20 Euler steps on the same held-out clips and noise; PSNR with a bootstrap interval of the
paired difference. Writes bench/results/native-check.json atomically (the report reads it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "native-check.json"
STEPS = 20
ONLY = {"mobilei2v": "MobileI2V's pattern", "chosen": "chosen"}  # --only's names, labels


def main(argv=None) -> int:
    import torch

    from bench.stats import mean_ci
    from export.files import write_json
    from hybrid_dit import format_pattern, mobilei2v_pattern
    from study.cache import code_version
    from study.dataset import TaskSpec, load_task
    from study.distill import build_config, record_activations
    from study.evaluate import evaluate_sampler
    from study.models import fingerprint, load_model, teacher_path
    from study.training import TRAINING_CODE, train_teacher

    p = argparse.ArgumentParser(
        prog="python -m study.native_check", description=__doc__.split("\n")[0]
    )
    p.add_argument("--run", type=Path, help="a `mobileattn run` folder (its search.json)")
    p.add_argument(
        "--prepare",
        action="store_true",
        help="only train the natives and stop: MobileI2V's pattern (it needs no run), and "
        "the chosen config too when --run is given",
    )
    p.add_argument(
        "--only",
        choices=tuple(ONLY),
        help="with --prepare: train only this native (two can then train side by side)",
    )
    p.add_argument("--teacher", type=Path, default=teacher_path(0))
    p.add_argument("--work", type=Path, default=Path("results") / "native-check")
    p.add_argument("--heldout", type=int, default=16)
    p.add_argument("--distill-steps", type=int, default=200)
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="optimizer steps of each native model (default: the teacher's own; fewer, with "
        "the same schedule shape, when time is short: both natives get the same)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    if args.only is not None and not args.prepare:
        p.error("--only goes with --prepare")
    if args.run is None and not args.prepare:
        p.error("--run is required (or --prepare)")
    if args.only == "chosen" and args.run is None:
        p.error("--only chosen needs --run (the chosen config comes from its search.json)")
    if args.train_steps is not None and args.train_steps < 1:
        p.error(f"--train-steps must be >= 1, got {args.train_steps}")
    teacher, meta = load_model(args.teacher)
    train_steps = args.train_steps or meta["steps"]
    depth = teacher.cfg.depth
    patterns = {ONLY["mobilei2v"]: mobilei2v_pattern(depth)}
    if args.run is not None:
        search = json.loads((args.run / "search.json").read_text())["teachers"][0]
        patterns["chosen"] = tuple(search["best"]["config"])
    task = meta["task"]
    spec = TaskSpec.from_dict({**task, "n_heldout": args.heldout})
    data = load_task(spec)
    acts = None if args.prepare else record_activations(teacher, data)  # prepare: training only
    rows = []
    for label, pattern in patterns.items():
        if args.only is not None and label != ONLY[args.only]:
            continue
        # named by the pattern, the teacher and its recipe: a rerun reuses a finished native
        # model only for the same three (the training code's version is recorded in the
        # results, not in the name, so an unrelated edit does not cost an hour of training)
        recipe = {
            "pattern": list(pattern),
            "teacher": fingerprint(teacher),
            "task": task,
            **{k: meta.get(k) for k in ("batch", "lr", "seed", "ema")},
            "steps": train_steps,
        }
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        out = args.work / f"native-{digest}.safetensors"
        if not out.is_file():
            train_teacher(
                out, steps=train_steps, batch=meta["batch"], lr=meta["lr"], seed=meta["seed"],
                spec=TaskSpec.from_dict(task),
                cfg=teacher.cfg.with_attention(pattern), ema=meta.get("ema", 0.0),
                command=f"python -m study.native_check (native {format_pattern(pattern)})",
            )  # fmt: skip
        if args.prepare:
            print(f"native {format_pattern(pattern)}: {out}")
            continue
        native, native_meta = load_model(out)
        if native.cfg.attention != tuple(pattern):
            raise ValueError(f"{out} holds {native.cfg.attention}, not {pattern}")
        distilled, _ = build_config(
            teacher, data, pattern, acts, STEPS, distill_steps=args.distill_steps
        )
        qn, qd = evaluate_sampler(native, data, STEPS), evaluate_sampler(distilled, data, STEPS)
        rows.append(
            {
                "label": label,
                "pattern": format_pattern(pattern),
                "native_psnr": qn["psnr"],
                "distilled_psnr": qd["psnr"],
                "native_clip_mse": qn["clip_mse"],
                "distilled_clip_mse": qd["clip_mse"],
                "native_file": str(out),
                "native_trained_by": native_meta.get("command"),
            }
        )
    if args.prepare:
        return 0
    a, b = rows
    dn = [y - x for x, y in zip(a["native_clip_mse"], b["native_clip_mse"], strict=True)]
    dd = [y - x for x, y in zip(a["distilled_clip_mse"], b["distilled_clip_mse"], strict=True)]
    ci_n, ci_d = mean_ci(dn), mean_ci(dd)

    def order(ci, mean):
        if ci[0] > 0:
            return f"{a['label']} better"
        if ci[1] < 0:
            return f"{b['label']} better"
        return "same within noise"

    rn, rd = order(ci_n, sum(dn) / len(dn)), order(ci_d, sum(dd) / len(dd))
    verdict = (
        f"Native: {rn} (MSE difference {sum(dn) / len(dn):+.5f} [{ci_n[0]:+.5f}, {ci_n[1]:+.5f}]); "
        f"distilled: {rd} ({sum(dd) / len(dd):+.5f} [{ci_d[0]:+.5f}, {ci_d[1]:+.5f}]). "
        + ("They rank the same." if rn == rd else "They do not rank the same.")
    )
    res = {
        "command": "python -m study.native_check " + " ".join(argv or sys.argv[1:]),
        "teacher": str(args.teacher),
        "steps": STEPS,
        "native_train_steps": train_steps,
        "teacher_train_steps": meta["steps"],
        "n_heldout": args.heldout,
        "rows": rows,
        "verdict": verdict,
        "torch_threads": torch.get_num_threads(),
        "code": code_version(TRAINING_CODE),
    }
    write_json(args.out, res)
    print(verdict)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
