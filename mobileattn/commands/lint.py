"""`mobileattn lint model.mlpackage`: the ANE lint report of a Core ML program; exit code 1
when it has errors (ops or tensors that keep it off the Neural Engine)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "lint",
        help="check a Core ML .mlpackage for what keeps it off the Apple Neural Engine",
        description=(
            "Prints the op histogram, errors (ops outside the ANE allow-list, rank > 4, "
            "dimensions > 16384, fp32 ops in an fp16 program) and warnings (transposes, "
            "reshapes, padding waste). Exits 1 when there are errors."
        ),
    )
    p.add_argument("model", help="path to an ML Program .mlpackage")
    p.set_defaults(func=run)


def run(args) -> int:
    from export.lint import ane_lint

    report = ane_lint(args.model)
    print(report)
    return 0 if report.ok else 1
