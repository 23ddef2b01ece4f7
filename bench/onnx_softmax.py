"""Which ONNX form of softmax attention onnxruntime runs faster on this CPU: the default
export (opset 20: SDPA decomposed into MatMul, Softmax, MatMul) or opset 23, where torch
exports SDPA as one `Attention` node (ORT has a CPU kernel since 1.23).

    python -m bench.onnx_softmax                     # one mobilei2v softmax block, 3x23x40

Both exported from the same block (the zoo's fast path, SDPA), run through
export.onnx.session, timed interleaved; parity against torch checked. Writes
bench/results/onnx-softmax.json atomically.
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


def run(grid=(3, 23, 40), opsets=(20, 23), repeats: int = 9, stack: int = 2) -> dict:
    import onnx

    from bench.latency import Blocks, runtime_info
    from bench.machine import machine_info, time_interleaved
    from bench.stats import ms_row, speed_verdict
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
        for opset in opsets:
            path = to_onnx(module, (x, cond), Path(tmp) / f"opset{opset}.onnx", opset=opset)
            proto = onnx.load(str(path))
            ops = sorted(
                {nd.op_type for nd in proto.graph.node}
                | {nd.op_type for f in proto.functions for nd in f.node}
            )
            sess = session(path)
            feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (x, cond), strict=True)}
            out = sess.run(None, feeds)[0]
            rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            name = f"opset {opset}"
            runs[name] = lambda sess=sess, feeds=feeds: sess.run(None, feeds)
            info[name] = {"ops": ops, "attention_node": "Attention" in ops, "rel_err_vs_torch": rel}
        times = time_interleaved(runs, warmup=1, repeats=repeats)
    rows = {
        k: {**info[k], **ms_row(times[k]), "per_block_ms": times[k]["median"] * 1e3 / stack}
        for k in runs
    }
    a, b = (f"opset {o}" for o in opsets)
    return {
        "what": f"{stack} mobilei2v softmax blocks at {grid} under onnxruntime, by export opset",
        "grid": list(grid),
        "machine": machine_info(),
        "runtime": runtime_info("onnxruntime-cpu"),
        "load_average": os.getloadavg()[0],
        "rows": rows,
        "verdict": speed_verdict(rows[a], rows[b], a, b),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.onnx_softmax", description=__doc__.split("\n")[0]
    )
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from bench.machine import keep_freed_memory

    keep_freed_memory()  # the allocator every timing of ours runs with
    res = run(repeats=args.repeats)
    from export.files import write_json

    write_json(args.out, res)
    for k, r in res["rows"].items():
        ci = f"[{r['ci_low_ms']:.1f}, {r['ci_high_ms']:.1f}]"
        print(
            f"{k}: {r['median_ms']:.1f} ms {ci}, Attention node: {r['attention_node']}, "
            f"rel err {r['rel_err_vs_torch']:.2e}"
        )
    print(res["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
