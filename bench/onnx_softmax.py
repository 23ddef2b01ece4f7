"""Which ONNX form of softmax attention onnxruntime runs fastest on this CPU: the default
export (opset 20: SDPA decomposed into MatMul, Softmax, MatMul), opset 23, where torch
exports SDPA as one `Attention` node (ORT has a CPU kernel since 1.23), or onnxruntime's
contrib op com.microsoft.MultiHeadAttention (export.onnx.to_onnx(attention="onnxruntime"),
which only onnxruntime reads).

    python -m bench.onnx_softmax                     # two mobilei2v softmax blocks, 3x23x40
    python -m bench.onnx_softmax --repeats 15 --stack 2

All exported from the same blocks (the zoo's fast path, SDPA), run through
export.onnx.session, timed interleaved; parity against torch checked; each form's verdict
against the default export follows the intervals, and the per-round ratio to it (the median
of each round's own ratio, with its interval) is given too. Writes bench/results/onnx-softmax.json
atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "onnx-softmax.json"

# name -> (opset, export.onnx.to_onnx's `attention`); the first is the default export
FORMS = {
    "opset 20": (20, "onnx"),
    "opset 23": (23, "onnx"),
    "MultiHeadAttention": (20, "onnxruntime"),
}


def run(grid=(3, 23, 40), forms=tuple(FORMS), repeats: int = 9, stack: int = 2) -> dict:
    import onnx

    from bench.latency import Blocks, runtime_info
    from bench.machine import machine_info, time_interleaved
    from bench.stats import ms_row, paired_ratio, speed_verdict
    from export.onnx import session, to_onnx
    from hybrid_dit import PRESETS
    from hybrid_dit.model import DiTBlock, rope_tables

    cfg = PRESETS["mobilei2v"].with_attention("softmax")
    torch.manual_seed(0)
    module = Blocks([DiTBlock(cfg, i) for i in range(stack)], rope_tables(cfg, grid), grid).eval()
    n = grid[0] * grid[1] * grid[2]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, n, cfg.hidden, generator=gen)
    cond = 0.1 * torch.randn(1, grid[0], 6, cfg.hidden, generator=gen)
    with torch.inference_mode():
        ref = module(x, cond).numpy()
    runs, info = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(forms):
            opset, attention = FORMS[name]
            path = to_onnx(module, (x, cond), Path(tmp) / f"form{i}.onnx", opset=opset,
                           attention=attention)  # fmt: skip
            proto = onnx.load(str(path))
            ops = sorted(
                {nd.op_type for nd in proto.graph.node}
                | {nd.op_type for f in proto.functions for nd in f.node}
            )
            sess = session(path)
            feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x, cond), strict=True)}
            out = sess.run(None, feeds)[0]
            rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            runs[name] = lambda sess=sess, feeds=feeds: sess.run(None, feeds)
            info[name] = {
                "opset": opset,
                "attention": attention,
                "ops": ops,
                "attention_node": next(
                    (o for o in ("Attention", "MultiHeadAttention") if o in ops), None
                ),
                "rel_err_vs_torch": rel,
            }
        times = time_interleaved(runs, warmup=1, repeats=repeats)
    rows = {
        k: {**info[k], **ms_row(times[k]), "per_block_ms": times[k]["median"] * 1e3 / stack}
        for k in runs
    }
    base = forms[0]
    return {
        "what": f"{stack} mobilei2v softmax blocks at {grid} under onnxruntime, by export form",
        "grid": list(grid),
        "machine": machine_info(),
        # each row names its own form: the latency tables' default form is not these rows'
        "runtime": {k: v for k, v in runtime_info("onnxruntime-cpu").items() if k != "attention"},
        "load_average": os.getloadavg()[0],
        "rows": rows,
        "verdicts": {k: speed_verdict(rows[k], rows[base], k, base) for k in forms[1:]},
        # time over the default's time in the same round: median over rounds [95% CI]
        "paired_ratio_to_default": {
            k: paired_ratio(times[k]["times"], times[base]["times"]) for k in forms[1:]
        },
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.onnx_softmax", description=__doc__.split("\n")[0]
    )
    p.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    p.add_argument("--stack", type=int, default=2, help="softmax blocks per exported model")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    for flag, val in (("--repeats", args.repeats), ("--stack", args.stack)):
        if val < 1:
            p.error(f"{flag} must be >= 1, got {val}")
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    res = run(repeats=args.repeats, stack=args.stack)
    from export.files import write_json

    write_json(args.out, res)
    for k, r in res["rows"].items():
        ci = f"[{r['ci_low_ms']:.1f}, {r['ci_high_ms']:.1f}]"
        print(
            f"{k}: {r['median_ms']:.1f} ms {ci}, attention node: {r['attention_node']}, "
            f"rel err {r['rel_err_vs_torch']:.2e}"
        )
    for k, v in res["verdicts"].items():
        pr = res["paired_ratio_to_default"][k]
        print(f"{v}; per round {pr['median']:.3f}x [{pr['ci_low']:.3f}, {pr['ci_high']:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
