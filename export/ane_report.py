"""Per-variant Core ML report: every variant's ANE form wrapped as a module, converted to
an fp16 and an fp32 ML Program, linted, and run through the MIL interpreter against
PyTorch.

    python -m export.ane_report [--heads 2] [--head-dim 72] [--grid 2 10 12] [--chunk 128]

Prints a markdown table: op histogram summary, lint findings, fp16 and fp32 PSNR.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

import attention_zoo as az


class AneAttention(torch.nn.Module):
    """One variant's ANE form as a module: forward(q, k, v) on (batch, heads*D, 1, seq)
    tensors -> (batch, heads*Dv, 1, seq); the options are fixed at construction."""

    def __init__(self, variant: str, heads: int, **opts):
        super().__init__()
        self.variant = az.get(variant)
        if self.variant.ane is None:
            raise ValueError(f"variant {variant!r} has no ANE form")
        self.heads = heads
        self.opts = opts

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.variant.ane(q, k, v, self.heads, **self.opts)


def psnr(reference, candidate) -> float:
    """Peak signal-to-noise ratio in dB, peak = max |reference| (Apple's parity measure);
    inf when the two are equal."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"psnr: shapes differ, {ref.shape} vs {cand.shape}")
    mse = float(np.mean((ref - cand) ** 2))
    peak = float(np.max(np.abs(ref)))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def variant_opts(name: str, grid: tuple[int, int, int], chunk: int | None) -> dict:
    """The options the report passes a variant: the grid where needed, chunk where taken."""
    var = az.get(name)
    opts = {}
    if "grid" in var.required:
        opts["grid"] = grid
    if "chunk" in var.defaults:
        opts["chunk"] = chunk
    return opts


def report_rows(heads: int, head_dim: int, grid: tuple[int, int, int], chunk, seed=0):
    """One dict per variant with an ANE form: histogram summary, lint, PSNRs."""
    from export.coreml import to_coreml
    from export.lint import ane_lint
    from export.mil import run_mil

    n = math.prod(grid)
    gen = torch.Generator().manual_seed(seed)
    inputs = tuple(torch.randn(1, heads * head_dim, 1, n, generator=gen) for _ in range(3))
    feeds = dict(zip(("q", "k", "v"), (x.numpy() for x in inputs), strict=True))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, var in az.VARIANTS.items():
            if var.ane_path is None:
                continue
            module = AneAttention(name, heads, **variant_opts(name, grid, chunk))
            with torch.no_grad():
                expected = module(*inputs).numpy()
            row = {"variant": name}
            for precision in ("fp16", "fp32"):
                path = to_coreml(
                    module, inputs, Path(tmp) / f"{name}_{precision}.mlpackage", precision=precision
                )
                out = run_mil(path, feeds, precision=precision)["output"]
                row[f"psnr_{precision}"] = psnr(expected, out)
                if precision == "fp16":
                    lint = ane_lint(path)
                    row["histogram"] = {k: v for k, v in lint.histogram.items() if k != "const"}
                    row["errors"] = [str(f) for f in lint.errors]
                    row["warnings"] = [f"{f.check}:{f.op_type}" for f in lint.warnings]
            rows.append(row)
    return rows


def markdown(rows) -> str:
    head = (
        "| variant | ops | einsum | transpose | reshape | op histogram | lint errors "
        "| lint warnings | fp16 PSNR (dB) | fp32 PSNR (dB) |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        hist = r["histogram"]
        top = ", ".join(f"{k} {v}" for k, v in sorted(hist.items(), key=lambda kv: -kv[1]))
        warn = {w: r["warnings"].count(w) for w in r["warnings"]}
        warn_s = ", ".join(f"{k} x{v}" for k, v in warn.items()) or "none"
        lines.append(
            f"| {r['variant']} | {sum(hist.values())} | {hist.get('einsum', 0)} "
            f"| {hist.get('transpose', 0)} | {hist.get('reshape', 0)} | {top} "
            f"| {len(r['errors']) or 'none'} | {warn_s} "
            f"| {r['psnr_fp16']:.1f} | {r['psnr_fp32']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.ane_report", description=__doc__)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=72, help="D per head (MobileI2V: 72)")
    p.add_argument("--grid", type=int, nargs=3, default=(2, 10, 12), metavar=("T", "H", "W"))
    p.add_argument("--chunk", type=int, default=128, help="query chunk for softmax/sigmoid")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = report_rows(args.heads, args.head_dim, tuple(args.grid), args.chunk, args.seed)
    n = math.prod(args.grid)
    print(
        f"B=1, heads={args.heads}, D={args.head_dim}, N={n} (grid {tuple(args.grid)}), "
        f"chunk={args.chunk}; PSNR of run_mil against the PyTorch fp32 module\n"
    )
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
