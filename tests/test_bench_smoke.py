"""The microbenchmarks under bench/ run (each case once, untimed, at a tiny N) so they
cannot rot: every variant must be exercised and pass its correctness check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attention_zoo as az
from bench.peers import PEERS

ROOT = Path(__file__).resolve().parents[1]


def test_zoo_bench_smoke():
    cmd = [
        sys.executable, "-m", "pytest", "bench/test_zoo_bench.py", "--benchmark-disable",
        "--bench-sizes", "63", "-v", "-p", "no:cacheprovider",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = set(re.findall(r"test_attention\[N63-(\w+)-(\w+)\] PASSED", out))
    for name, var in az.VARIANTS.items():
        assert (name, "reference") in passed, f"{name} reference case did not pass:\n{out[-4000:]}"
        for impl in var.usable_impls():
            assert (name, impl) in passed, f"{name}/{impl} case did not pass:\n{out[-4000:]}"
    for name, peers in PEERS.items():  # the peers sit in the same groups, checked alike
        for peer in peers:
            assert (name, peer) in passed, f"peer {name}/{peer} did not pass:\n{out[-4000:]}"


def test_onnx_softmax_forms_run_and_name_their_attention_nodes():
    """bench.onnx_softmax at a tiny grid, one round: each form exports, runs like torch and
    names its attention node; verdicts and per-round ratios are against the default."""
    from bench.onnx_softmax import FORMS, run

    res = run(grid=(1, 2, 3), repeats=1, stack=1)
    rows = res["rows"]
    assert list(rows) == list(FORMS)
    nodes = {k: r["attention_node"] for k, r in rows.items()}
    assert nodes == {"opset 20": None, "opset 23": "Attention",
                     "MultiHeadAttention": "MultiHeadAttention"}  # fmt: skip
    assert all(r["rel_err_vs_torch"] < 1e-5 and r["median_ms"] > 0 for r in rows.values())
    assert set(res["verdicts"]) == set(res["paired_ratio_to_default"]) == set(list(FORMS)[1:])
    assert "attention" not in res["runtime"]  # each row names its own form
