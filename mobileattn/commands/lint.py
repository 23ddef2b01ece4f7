"""`mobileattn lint model.mlpackage`: the ANE lint report of a Core ML program; exit code 1
when it has errors (ops or tensors that keep it off the Neural Engine). A bundle folder
written by `mobileattn export` works too: its model.mlpackage is linted."""

from __future__ import annotations

from pathlib import Path


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
    p.add_argument(
        "model", help="path to an ML Program .mlpackage, or an export bundle folder holding one"
    )
    p.set_defaults(func=run)


def resolve(model: str) -> str:
    """An export bundle folder (bundle.json beside model.mlpackage) -> its package; any other
    path as given (ane_lint says what is wrong with it)."""
    from export.bundle import FILES

    path = Path(model)
    if path.suffix != ".mlpackage" and (path / FILES["json"]).is_file():
        return str(path / FILES["coreml"])
    return model


def run(args) -> int:
    from export.lint import ane_lint

    report = ane_lint(resolve(args.model))
    print(report)
    return 0 if report.ok else 1
