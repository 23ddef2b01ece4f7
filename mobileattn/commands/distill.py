"""`mobileattn distill`: the K-step student of a teacher (study.students), written as
safetensors with a JSON sidecar recording this command, the task, `student_steps` and the
teacher's path. Resumes after a kill from the checkpoint beside --out."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="make a few-step student of a teacher")
    p.add_argument("--teacher", type=Path, required=True, help="teacher .safetensors")
    p.add_argument("--steps", type=int, required=True, help="the student's sampling steps K")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="student .safetensors (default: beside the teacher, <teacher>-student<K>)",
    )
    p.add_argument("--train-steps", type=int, default=None, help="optimizer steps")
    p.add_argument("--pool", type=int, default=None, help="recorded teacher trajectories")
    p.add_argument("--batch", type=int, default=None, help="trajectories per step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the pool, order and init")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path("results") / ".cache" / "students",
        help="where the teacher's trajectory pool is cached (default: results/.cache/students)",
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=100, help="optimizer steps between checkpoints"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.models import student_path
    from study.students import StudentSpec, distill_student

    if not args.teacher.is_file():
        raise FileNotFoundError(f"--teacher: no such file {str(args.teacher)!r}")
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    fields = {"steps": args.steps, "seed": args.seed}
    for name in ("train_steps", "pool", "batch", "lr"):
        val = getattr(args, name)
        if val is not None:
            if not val > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {val}")
            fields[name] = val
    try:
        spec = StudentSpec(**fields)
    except ValueError as e:
        msg = str(e).replace("StudentSpec.steps", "--steps")
        msg = msg.replace("StudentSpec.pool_grid: lcm(steps, pool_grid)", "--steps: lcm(steps, 4)")
        raise ValueError(msg) from None
    out = args.out or student_path(args.teacher, args.steps)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    command = "mobileattn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = distill_student(
        args.teacher, out, spec, cache_dir=args.cache, command=command,
        checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
    )  # fmt: skip
    q = res["heldout"]
    print(
        f"wrote {out} (+ .json): {args.steps}-step student, held-out PSNR {q['psnr']:.2f} dB "
        f"(teacher at {args.steps} steps {q['teacher_psnr_same_steps']:.2f} dB, at "
        f"{spec.teacher_steps} steps {q['teacher_psnr_teacher_steps']:.2f} dB)"
    )
    return 0
