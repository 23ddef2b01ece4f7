"""`mobileattn search`: tables in, config out. Reads a latency table (`mobileattn bench
--out`, or the `latency.json` of a `mobileattn run` folder, which holds one block table per
backend: `--backend` picks one) and a quality table (`mobileattn quality --out`, or the
run's `quality.json`), prints the Pareto front and the best config under the budget."""

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
    p.add_argument("--budget", default=None, help='"40ms", "0.5x" (of all softmax) or "50%%"')
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


def run(args) -> int:
    from bench.latency import per_block_latency
    from export.files import check_out_file
    from hybrid_dit import format_pattern
    from study.distill import quality_loss_table
    from study.search import search

    check_out_file(args.out)
    lat_json, q_json = _load(args.latency, "latency"), _load(args.quality, "quality")
    try:
        blocks = block_table_of(lat_json, args.backend)
        depth = blocks["depth"]
        lat = per_block_latency(blocks)
        qual = quality_loss_table(q_json, len(q_json["teacher"]["attention"]))
    except (KeyError, TypeError) as e:
        raise ValueError(
            "--latency (from `mobileattn bench`) and --quality (from `mobileattn quality`) "
            f"must hold those commands' tables; a field is missing or malformed ({e!r})"
        ) from None
    if len(qual) != depth:
        raise ValueError(f"latency table has {depth} blocks, quality table {len(qual)}")
    lat = [{v: ms for v, ms in row.items() if v in qual[i]} for i, row in enumerate(lat)]
    missing = [(i, v) for i, row in enumerate(qual) for v in row if v not in lat[i]]
    if missing:
        raise ValueError(f"the latency table lacks variants the quality table has: {missing[:3]}")
    res = search(lat, qual, args.budget)
    print(f"Pareto front ({len(res.front)} configs; block latency ms, predicted loss):")
    for p in res.front:
        print(f"  {p.latency_ms:9.1f}  {p.quality_loss:+.4f}  {format_pattern(p.config)}")
    if res.best is not None:
        print(
            f"\nbest under {res.budget} ({res.budget_ms:.1f} ms): {format_pattern(res.best.config)}"
        )
    if args.out is not None:
        from export.files import write_json

        print(f"wrote {write_json(args.out, res.to_dict())}")
    return 0
