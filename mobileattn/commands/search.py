"""`mobileattn search`: tables in, (steps, config) out. Reads a latency table (`mobileattn
bench --out`, or the `latency.json` of a `mobileattn run` folder, which holds one block
table per backend: `--backend` picks one) and a quality table (`mobileattn quality --out`,
one step count, or the run's `quality.json`, every step count of each teacher), prints the
joint Pareto front and the best pair under the budget, as the study does."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="choose one attention variant per block under a budget")
    p.add_argument(
        "--latency",
        type=Path,
        required=True,
        help="JSON from `mobileattn bench --out`, or a run folder's latency.json",
    )
    p.add_argument(
        "--quality",
        type=Path,
        required=True,
        help="JSON from `mobileattn quality --out`, or a run folder's quality.json",
    )
    p.add_argument(
        "--backend",
        default=None,
        help="which block table of a run's latency.json (torch-cpu, onnxruntime-cpu, cuda); "
        "needed when it holds several",
    )
    p.add_argument(
        "--budget",
        default=None,
        help='clip latency budget: "mobilei2v" (its recipe\'s latency, default), "40ms", '
        '"0.5x" (of all softmax at the recipe\'s steps) or "50%%"',
    )
    p.add_argument(
        "--teacher-index",
        type=int,
        default=0,
        help="which teacher's tables of a run's quality.json (default: 0)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    p.set_defaults(func=run)


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"--{what}: no such file {str(path)!r}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--{what}: {path} is not valid JSON ({e})") from None


def block_table_of(lat_json: dict, backend: str | None) -> dict:
    """The block table in a latency file: `mobileattn bench` writes one under "blocks";
    `mobileattn run` writes {backend: table} there, and `backend` chooses."""
    blocks = lat_json["blocks"]
    if "depth" in blocks:  # one table (mobileattn bench)
        if backend is not None and blocks.get("backend") != backend:
            raise ValueError(
                f"--backend {backend}: the --latency file holds only {blocks.get('backend')}"
            )
        return blocks
    tables = {k: v for k, v in blocks.items() if isinstance(v, dict) and "depth" in v}
    if not tables:
        raise KeyError("blocks")
    if backend is None:
        if len(tables) > 1:
            raise ValueError(
                f"--latency holds block tables for {', '.join(tables)}; choose one with --backend"
            )
        return next(iter(tables.values()))
    if backend not in tables:
        raise ValueError(
            f"--backend must be one of the tables in --latency ({', '.join(tables)}), "
            f"got {backend!r}"
        )
    return tables[backend]


def quality_entry(q_json: dict, teacher: int) -> dict:
    """The quality table of one teacher in the shape the joint search reads
    ({"tables": {steps: swap table}}): a run's quality.json holds one per teacher; a
    `mobileattn quality --out` file is one swap table at its step count."""
    if "teachers" in q_json:
        entries = q_json["teachers"]
        if not 0 <= teacher < len(entries):
            raise ValueError(
                f"--teacher-index must be in [0, {len(entries)}) for this --quality file, "
                f"got {teacher}"
            )
        return entries[teacher]
    if teacher != 0:
        raise ValueError("--teacher-index: this --quality file holds one table (teacher 0)")
    return {"tables": {str(q_json["steps"]): q_json}}


def run(args) -> int:
    from export.files import check_out_file
    from hybrid_dit import format_pattern
    from study.driver import search_pairs, step_options

    check_out_file(args.out)
    lat_json, q_json = _load(args.latency, "latency"), _load(args.quality, "quality")
    try:
        blocks = block_table_of(lat_json, args.backend)
        entry = quality_entry(q_json, args.teacher_index)
        steps = sorted(int(k) for k in entry["tables"])
        options = step_options(blocks, entry, steps, lat_json.get("host"))
    except (KeyError, TypeError) as e:
        raise ValueError(
            "--latency (from `mobileattn bench` or a run's latency.json) and --quality (from "
            "`mobileattn quality` or a run's quality.json) must hold those commands' tables; a "
            f"field is missing or malformed ({e!r})"
        ) from None
    budget = args.budget or "mobilei2v"
    if budget != "mobilei2v":
        from study.search import Budget

        try:
            Budget.parse(budget)
        except (ValueError, TypeError) as e:
            raise ValueError(f"--budget: {e}") from None
    try:
        res = search_pairs(options, budget)
    except ValueError as e:
        if "infeasible" in str(e):
            raise ValueError(f"--budget: {e}") from None
        raise
    print(
        f"Joint Pareto front over steps {steps} ({len(res['front'])} pairs; clip latency ms on "
        f"{blocks['backend']}, predicted pixel MSE):"
    )
    for p in res["front"]:
        pattern = format_pattern(tuple(p["config"]))
        print(f"  {p['steps']:3d} steps {p['latency_ms']:11.1f}  {p['quality']:.5f}  {pattern}")
    r, b = res["recipe"], res["best"]
    print(
        f"\nMobileI2V's recipe ({r['steps']} steps, {format_pattern(tuple(r['config']))}): "
        f"{r['latency_ms']:.1f} ms, {r['quality']:.5f}"
    )
    print(
        f"best under {budget} ({res['budget_ms']:.1f} ms): {b['steps']} steps, "
        f"{format_pattern(tuple(b['config']))}, {b['latency_ms']:.1f} ms, {b['quality']:.5f}"
    )
    if args.out is not None:
        from export.files import write_json

        print(
            f"wrote {write_json(args.out, {'backend': blocks['backend'], 'steps': steps, **res})}"
        )
    return 0
