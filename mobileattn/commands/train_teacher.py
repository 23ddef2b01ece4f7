"""`mobileattn train-teacher`: trains the quality study's teacher (the `small` preset, all
softmax) on the embedded image-to-video task and writes it as safetensors with a JSON
sidecar recording this command, the config, the task and the held-out quality."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def add_parser(sub) -> None:
    from study.training import TEACHER_EMA, TEACHER_STEPS

    p = sub.add_parser("train-teacher", help="train the quality study's all-softmax teacher")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="teacher .safetensors (default: study/assets/teacher_s<seed>.safetensors)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=TEACHER_STEPS,
        help=f"optimizer steps (default: {TEACHER_STEPS}, as the committed teachers)",
    )
    p.add_argument(
        "--ema", type=float, default=TEACHER_EMA, help=f"EMA decay (default: {TEACHER_EMA}; 0: off)"
    )
    p.add_argument("--batch", type=int, default=8, help="clips per step (default: 8)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order, noise")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from study.training import train_teacher

    for name in ("steps", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if not 0 <= args.ema < 1:
        raise ValueError(f"--ema must be in [0, 1), got {args.ema}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.out is None:
        from study.models import teacher_path

        args.out = teacher_path(args.seed)
    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {args.out}")
    command = "mobileattn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = train_teacher(
        out=args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        ema=args.ema,
        command=command,
        progress=not args.no_progress,
    )
    q = meta["heldout"]
    at = ", ".join(f"{k} steps {v:.2f}" for k, v in q["psnr_at_steps"].items())
    print(
        f"wrote {args.out} (+ .json) in {meta['train_seconds']:.0f} s: final train loss "
        f"{meta['final_train_loss']:.4f}, held-out loss {q['loss']:.4f}, PSNR {at} dB "
        f"(copying frame 0: {q['copy_first_frame_psnr']:.2f} dB)"
    )
    return 0
