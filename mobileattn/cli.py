"""`mobileattn` command line. Each subcommand lives in mobileattn/commands/<name>.py and
exposes `add_parser(subparsers)`, which registers itself with `set_defaults(func=...)`;
`func(args)` returns the exit code."""

from __future__ import annotations

import argparse
import importlib
import sys

from mobileattn import __version__

# Order = order in --help.
COMMANDS = (
    "run",
    "zoo",
    "bench",
    "quality",
    "search",
    "export",
    "lint",
    "train-teacher",
    "distill",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobileattn",
        description="Attention for video diffusion transformers on phones, CPUs and GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"mobileattn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mobileattn.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from bench.machine import keep_freed_memory

    # every command times, trains or exports large tensors: reuse freed memory instead of
    # taking a page fault per 4 KiB of each large activation (see keep_freed_memory)
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError) as e:
        # User-facing errors: one line, no traceback. Bugs (other exceptions) still raise.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mobileattn {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
