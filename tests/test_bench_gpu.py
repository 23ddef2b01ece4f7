"""The CPU-side logic of `python -m bench.gpu`: shape sweep, FLOP/byte accounting, speedups,
result assembly, atomic JSON writing, the table, and the no-CUDA exit. No GPU needed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # run_shape walks the kernels on CPU; before any jit

import attention_zoo as az
from bench import gpu

ROOT = Path(__file__).resolve().parents[1]
SHAPE = gpu.Shape(B=2, H=16, N=2760, D=72)


def test_sweep_is_the_issue_grid():
    shapes = gpu.sweep()
    assert len(shapes) == 2 * 3 * 4
    assert {s.B for s in shapes} == {1, 2} and {s.H for s in shapes} == {16}
    assert {s.D for s in shapes} == {64, 72, 128}
    assert {s.N for s in shapes} == {2760, 6120, 16384, 32768}
    assert len(set(shapes)) == len(shapes)
    assert gpu.sweep([1], 4, [16], [63]) == [gpu.Shape(1, 4, 63, 16)]


def test_variant_opts_and_scope():
    frame = az.get("softmax_frame")
    grid = gpu.variant_opts(frame, SHAPE)["grid"]
    assert math.prod(grid) == SHAPE.N and grid == (3, 23, 40)
    assert gpu.variant_opts(az.get("softmax"), SHAPE) == {}
    assert gpu.baseline_scope(frame) == "frame"
    assert gpu.baseline_scope(az.get("relu_linear")) == "full"


def test_flops_match_the_zoo_counts():
    s = SHAPE
    assert gpu.sdpa_flops(s, "full") == 4 * s.B * s.H * s.N**2 * s.D
    assert gpu.sdpa_flops(s, "full") == az.get("softmax").flops(s.B, s.H, s.N, s.D)
    t = 3  # 2760 tokens = 3 frames of 920
    assert gpu.sdpa_flops(s, "frame") == 4 * s.B * s.H * t * 920**2 * s.D
    frame_var = az.get("softmax_frame")
    assert gpu.sdpa_flops(s, "frame") == frame_var.flops(
        s.B, s.H, s.N, s.D, **gpu.variant_opts(frame_var, s)
    )
    assert gpu.tflops(10**12, 1000.0) == pytest.approx(1.0)
    assert gpu.gbs(10**9, 1000.0) == pytest.approx(1.0)


def test_make_row_quadratic_linear_and_skipped():
    q = gpu.make_row("softmax", "triton", SHAPE, kind="softmax", ms=2.0, flops=4 * 10**12)
    assert q["tflops"] == pytest.approx(2000.0) and q["gbs"] is None
    nbytes = az.get("relu_linear").bytes(2, 16, 2760, 72, dtype=torch.bfloat16)
    assert nbytes == 4 * 2 * 16 * 2760 * 72 * 2
    lin = gpu.make_row(
        "relu_linear", "triton", SHAPE, kind="linear", ms=0.01, nbytes=nbytes, copy_gbs=3000.0
    )
    assert lin["tflops"] is None
    assert lin["gbs"] == pytest.approx(nbytes / 1e-5 / 1e9)
    assert lin["pct_copy_bw"] == pytest.approx(100 * lin["gbs"] / 3000.0)
    skipped = gpu.make_row("sdpa", "sdpa:math", SHAPE, kind="softmax", flops=1, skipped="OOM")
    assert skipped["ms"] is None and skipped["tflops"] is None and skipped["skipped"] == "OOM"
    assert gpu.make_row("a", "triton", SHAPE, kind="softmax", rel_err=1.0)["ok"] is False
    assert gpu.make_row("a", "triton", SHAPE, kind="softmax", rel_err=1e-3)["ok"] is True


def _row(variant, impl, ms, shape=SHAPE):
    return gpu.make_row(variant, impl, shape, kind="softmax", ms=ms, flops=1)


def test_add_speedups_uses_best_backend_of_the_right_scope():
    other = gpu.Shape(1, 16, 2760, 72)
    rows = [
        _row("sdpa", "sdpa:flash", 2.0),
        _row("sdpa", "sdpa:cudnn", 1.0),
        _row("sdpa", "sdpa:math", None),
        _row("sdpa_frame", "sdpa:flash", 0.5),
        _row("sdpa", "sdpa:flash", 0.1, shape=other),
        _row("softmax", "triton", 1.25),
        _row("softmax", "reference", 5.0),
        _row("softmax_frame", "triton", 0.25),
        _row("relu_linear", "triton", 0.1),
        _row("sigmoid", "triton", None),
    ]
    scopes = {"softmax": "full", "softmax_frame": "frame", "relu_linear": "full", "sigmoid": "full"}
    gpu.add_speedups(rows, scopes)
    by = {(r["variant"], r["impl"], r["B"]): r for r in rows}
    assert by["softmax", "triton", 2]["vs_best_sdpa"] == pytest.approx(0.8)
    assert by["softmax", "triton", 2]["vs_reference"] == pytest.approx(4.0)
    assert by["softmax_frame", "triton", 2]["vs_best_sdpa"] == pytest.approx(2.0)
    assert by["softmax_frame", "triton", 2]["vs_reference"] is None
    assert by["relu_linear", "triton", 2]["vs_best_sdpa"] == pytest.approx(10.0)
    assert by["sigmoid", "triton", 2]["vs_best_sdpa"] is None
    assert "vs_best_sdpa" not in by["sdpa", "sdpa:flash", 2]


def test_device_slug():
    assert gpu.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu.device_slug("  /weird//name ") == "weird-name"
    assert gpu.device_slug("***") == "unknown-device"


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "gpu-x.json"
    doc = gpu.assemble("GPU X", {"torch": "1", "triton": "2"}, 3000.0, [_row("sdpa", "f", 1.0)], {})
    assert gpu.write_json_atomic(path, doc) == path
    assert json.loads(path.read_text()) == doc
    assert doc["device"] == "GPU X" and doc["dtype"] == "bfloat16"
    assert doc["copy_bandwidth_gbs"] == 3000.0 and doc["versions"]["triton"] == "2"
    # a document that cannot be written leaves the old file whole and no temporary behind
    with pytest.raises(TypeError):
        gpu.write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == doc
    assert sorted(p.name for p in path.parent.iterdir()) == ["gpu-x.json"]


def test_format_table():
    rows = [
        _row("softmax", "triton", 1.5),
        gpu.make_row("sdpa", "sdpa:math", SHAPE, kind="softmax", skipped="too big"),
        gpu.make_row("softmax", "triton", SHAPE, kind="softmax", ms=1.0, flops=1, rel_err=0.5),
    ]
    gpu.add_speedups(rows, {"softmax": "full"})
    lines = gpu.format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["variant", "impl", "B"]
    assert len(lines) == 2 + len(rows)
    assert "1.500" in lines[2] and "too big" in lines[3] and "WRONG" in lines[4]
    assert "WRONG" not in lines[2]


def test_parse_args():
    args = gpu.parse_args(["--lengths", "128", "--variants", "softmax", "relu_linear"])
    assert args.lengths == [128] and args.variants == ["softmax", "relu_linear"]
    assert set(gpu.parse_args([]).variants) == {n for n, v in az.VARIANTS.items() if v.triton_path}
    with pytest.raises(SystemExit):
        gpu.parse_args(["--variants", "nope"])
    with pytest.raises(SystemExit):
        gpu.parse_args(["--lengths", "0"])


def test_main_without_cuda_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit")
def test_module_without_cuda_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr


def test_run_shape_on_cpu_through_the_interpreter(tmp_path):
    """The whole per-shape walk (SDPA backends, references, kernels, correctness check, row
    assembly, JSON) on CPU with a fake timer: a backend that cannot run here (cuDNN and
    memory-efficient SDPA need CUDA) is recorded with its reason, not raised."""
    calls = []

    def timer(fn):
        calls.append(fn)
        return {"ms": 1.0}

    shape = gpu.Shape(B=1, H=2, N=60, D=16)
    variants = gpu.parse_args([]).variants
    scopes = {n: gpu.baseline_scope(az.get(n)) for n in variants}
    rows = gpu.add_speedups(gpu.run_shape(shape, variants, 100.0, True, timer, "cpu"), scopes)
    by = {(r["variant"], r["impl"]): r for r in rows}
    for name in variants:
        kernel = by[name, "triton"]
        assert kernel["skipped"] is None and kernel["ok"] is True, kernel
        assert kernel["rel_err"] < 2e-2
        assert by[name, "reference"]["ms"] == 1.0
        assert kernel["vs_reference"] == pytest.approx(1.0)
        assert kernel["vs_best_sdpa"] == pytest.approx(1.0)
        if az.get(name).kind == "linear":
            assert kernel["gbs"] is not None and kernel["pct_copy_bw"] is not None
        else:
            assert kernel["tflops"] is not None
    for base in ("sdpa", "sdpa_frame"):
        assert {r["impl"] for r in rows if r["variant"] == base} == {
            f"sdpa:{b}" for b in gpu.SDPA_BACKENDS
        }
        math_row = by[base, "sdpa:math"]
        assert math_row["ok"] is True and math_row["ms"] == 1.0
    assert by["sdpa", "sdpa:cudnn"]["skipped"]  # no cuDNN attention on CPU: the reason is kept
    assert len(calls) == sum(r["ms"] is not None for r in rows)
    doc = gpu.assemble("cpu", {"torch": torch.__version__}, 100.0, rows, {})
    path = gpu.write_json_atomic(tmp_path / "gpu-cpu.json", doc)
    assert json.loads(path.read_text())["rows"] == rows
