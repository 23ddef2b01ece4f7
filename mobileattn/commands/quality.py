"""`mobileattn quality`: the per-block quality table against the teacher, as JSON."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("quality", help="per-block quality table against the teacher")
    p.add_argument("--teacher", type=Path, default=None, help="teacher (default: committed)")
    p.add_argument(
        "--variants",
        default="relu_linear,focused_linear,softmax_frame",
        help="comma-separated variants to swap in",
    )
    p.add_argument("--blocks", default=None, help="comma-separated block indices (default: all)")
    p.add_argument("--distill-steps", type=int, default=60, help="block distillation steps")
    p.add_argument("--heldout", type=int, default=8, help="held-out clips")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import attention_zoo as az
    from export.files import check_out_file
    from study.dataset import TaskSpec, load_task
    from study.distill import record_activations, swap_table
    from study.models import TEACHER_PATH, load_model
    from study.task import VideoSpec

    check_out_file(args.out)
    variants = [az.get(v.strip()).name for v in args.variants.split(",") if v.strip()]
    if not variants:
        raise ValueError("--variants must name at least one variant")
    if args.distill_steps < 1 or args.heldout < 1:
        raise ValueError("--distill-steps and --heldout must be >= 1")
    teacher, meta = load_model(args.teacher or TEACHER_PATH)
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
    data = load_task(spec)
    acts = record_activations(teacher, data)
    table = swap_table(
        teacher,
        data,
        variants,
        acts,
        blocks=blocks,
        distill_steps=args.distill_steps,
        progress=not args.no_progress,
    )
    t = table["teacher"]
    print(f"teacher: held-out loss {t['loss']:.4f}, PSNR {t['psnr']:.2f} dB")
    for e in table["entries"]:
        print(
            f"block {e['block']:2d} {e['variant']:>15}: loss {e['delta_loss']:+.4f}, "
            f"PSNR {e['delta_psnr']:+.2f} dB"
        )
    if args.out is not None:
        from export.files import write_json

        print(f"wrote {write_json(args.out, table)}")
    return 0
