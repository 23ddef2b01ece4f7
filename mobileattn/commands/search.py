"""`mobileattn search`: tables in, config out. Reads a latency table (`mobileattn bench
--out`) and a quality table (`mobileattn quality --out`), prints the Pareto front and the
best config under the budget."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="choose one attention variant per block under a budget")
    p.add_argument("--latency", type=Path, required=True, help="JSON from `mobileattn bench`")
    p.add_argument("--quality", type=Path, required=True, help="JSON from `mobileattn quality`")
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


def run(args) -> int:
    from bench.latency import per_block_latency
    from hybrid_dit.config import format_pattern
    from hybrid_dit.quality import quality_loss_table
    from hybrid_dit.search import search
    from mobileattn.io import check_out_file

    check_out_file(args.out)
    lat_json, q_json = _load(args.latency, "latency"), _load(args.quality, "quality")
    try:
        blocks = lat_json["blocks"]
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
        from mobileattn.io import write_json

        print(f"wrote {write_json(args.out, res.to_dict())}")
    return 0
