"""`mobileattn quality`: the per-block quality table against a teacher (or a student: its
own sampler), as JSON: each block's attention swapped, distilled and sampled."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("quality", help="per-block quality table against the teacher")
    p.add_argument(
        "--teacher", type=Path, default=None, help="teacher or student (default: seed 0's teacher)"
    )
    p.add_argument(
        "--variants",
        default="relu_linear,focused_linear,softmax_frame",
        help="comma-separated variants to swap in",
    )
    p.add_argument("--blocks", default=None, help="comma-separated block indices (default: all)")
    p.add_argument(
        "--distill-steps", type=int, default=200, help="block distillation steps (default: 200)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampling steps of the held-out measurement (default: a student's own K, 20 for "
        "a teacher)",
    )
    p.add_argument("--heldout", type=int, default=8, help="held-out clips")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import attention_zoo as az
    from export.files import check_out_file
    from study.dataset import TaskSpec, load_task
    from study.distill import record_activations, swap_table
    from study.models import load_model, teacher_path
    from study.task import VideoSpec

    check_out_file(args.out)
    variants = [az.get(v.strip()).name for v in args.variants.split(",") if v.strip()]
    if not variants:
        raise ValueError("--variants must name at least one variant")
    if args.distill_steps < 1 or args.heldout < 1:
        raise ValueError("--distill-steps and --heldout must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    teacher, meta = load_model(args.teacher or teacher_path(0))
    blocks = None
    if args.blocks is not None:
        try:
            blocks = [int(b) for b in args.blocks.split(",")]
        except ValueError:
            raise ValueError(
                f"--blocks must be comma-separated ints, got {args.blocks!r}"
            ) from None
        bad = [b for b in blocks if not 0 <= b < teacher.cfg.depth]
        if bad:
            raise ValueError(f"--blocks must lie in [0, {teacher.cfg.depth}), got {bad}")
    task = meta["task"]
    spec = TaskSpec(
        video=VideoSpec(**task["video"]), n_train=task["n_train"], n_heldout=args.heldout
    )
    steps = args.steps or teacher.cfg.sample_steps or 20
    if teacher.cfg.sample_steps is not None and steps != teacher.cfg.sample_steps:
        raise ValueError(
            f"--steps: {args.teacher} is a {teacher.cfg.sample_steps}-step student; it is "
            f"measured at {teacher.cfg.sample_steps} steps, got {steps}"
        )
    data = load_task(spec)
    acts = record_activations(teacher, data)
    table = swap_table(
        teacher,
        data,
        variants,
        acts,
        steps=steps,
        blocks=blocks,
        distill_steps=args.distill_steps,
        progress=not args.no_progress,
    )
    b = table["base"]
    print(f"base model at {steps} steps: held-out PSNR {b['psnr']:.2f} dB, MSE {b['mse']:.5f}")
    for e in table["entries"]:
        print(
            f"block {e['block']:2d} {e['variant']:>15}: PSNR {e['delta_psnr']:+.2f} dB, "
            f"MSE {e['delta_mse']:+.5f}"
        )
    if args.out is not None:
        from export.files import write_json

        print(f"wrote {write_json(args.out, table)}")
    return 0
