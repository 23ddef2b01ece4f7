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


def test_ab_zoo_compares_the_zoo_at_a_revision_with_the_working_tree(tmp_path, capsys):
    """bench.ab_zoo at a tiny shape, three rounds: HEAD's zoo is a separate package (its
    own registry) that computes what the working tree's does, both sides carry errors,
    floors and a verdict; afterwards `import attention_zoo` is the working tree's again."""
    import json

    from bench.ab_zoo import main as ab_main
    from bench.ab_zoo import zoo_at

    old = zoo_at("HEAD")
    assert old is not az and old.VARIANTS is not az.VARIANTS
    assert not old.__file__.startswith(str(ROOT))  # the revision's extracted files
    assert sys.modules["attention_zoo"] is az
    assert sys.modules["attention_zoo._common"].__file__.startswith(str(ROOT))

    out = tmp_path / "ab.json"
    assert ab_main(["--variants", "relu_linear,softmax_frame", "--grid", "2x2x3", "--heads",
                    "2", "--head-dim", "8", "--repeats", "3", "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert [r["variant"] for r in res["rows"]] == ["relu_linear", "softmax_frame"]
    for r in res["rows"]:
        for side in ("HEAD", "working tree"):
            assert r[side]["repeats"] == 3 and r[side]["of_gemm_floor"] > 0
            assert r[side]["max_err_rel"] < 1e-5  # fp32 against the float64 reference
        assert r["ratio_per_round"]["repeats"] == 3
        assert "working tree" in r["verdict"] and "HEAD" in r["verdict"]
    assert "relu_linear.fast:" in capsys.readouterr().out
    assert sys.modules["attention_zoo"] is az


def test_ab_zoo_names_a_bad_revision_and_a_bad_flag(capsys):
    import pytest

    from bench.ab_zoo import main as ab_main
    from bench.ab_zoo import zoo_at

    with pytest.raises(ValueError, match=r"rev: no attention_zoo/ at git revision 'no-such'"):
        zoo_at("no-such")
    assert sys.modules["attention_zoo"] is az
    for argv, msg in [
        (["--variants", "flash"], "unknown attention variant 'flash'"),
        (["--grid", "3x23"], "--grid must be TxHxW"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    ]:
        with pytest.raises(SystemExit):
            ab_main(argv)
        assert msg in capsys.readouterr().err
