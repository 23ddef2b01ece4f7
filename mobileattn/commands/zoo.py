"""`mobileattn zoo`: the registered variants, their cost, options and implementations."""

from __future__ import annotations

import json

import attention_zoo as az
from study.tables import text_table


def add_parser(sub) -> None:
    p = sub.add_parser("zoo", help="list the attention variants and their implementations")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def zoo_rows() -> list[dict]:
    rows = []
    for var in az.VARIANTS.values():
        usable = var.usable_impls()
        rows.append(
            {
                "name": var.name,
                "kind": var.kind,
                "cost": var.cost,
                "options": {k: v for k, v in var.defaults.items()},
                "required": list(var.required),
                "impls": list(var.impls()),
                "usable_here": list(usable),
                "summary": var.summary,
            }
        )
    return rows


def _fmt_opts(row) -> str:
    parts = []
    for k, v in row["options"].items():
        if k == "chunk":
            continue  # a memory knob of the quadratic references, not part of the math
        if k in row["required"]:
            parts.append(f"{k}=<required>")
        else:
            parts.append(f"{k}={'auto' if v is None else v}")
    return ", ".join(parts) or "-"


def _fmt_impls(row) -> str:
    return " ".join(i if i in row["usable_here"] else f"({i})" for i in row["impls"])


def run(args) -> int:
    rows = zoo_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["variant", "kind", "cost", "options", "implementations", "math"]
    table = [
        [r["name"], r["kind"], r["cost"], _fmt_opts(r), _fmt_impls(r), r["summary"]] for r in rows
    ]
    print(text_table(headers, table))
    print(
        "\n(impl) = built but not usable on this machine (Triton needs CUDA or TRITON_INTERPRET=1)."
    )
    return 0
