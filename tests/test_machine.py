"""bench.machine (machine info, timing, GEMM rate) and bench.grids: structure and sanity,
no timed assertions."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from bench.grids import divisors, grid_for
from bench.machine import (
    KEEP_FREED_ENV,
    SIMD_FLAGS,
    copy_bandwidth,
    cpu_model,
    gemm_rate,
    keep_freed_memory,
    machine_info,
    ort_gemm_rate,
    time_fn,
    usable_cores,
)


def test_machine_info_structure():
    info = machine_info()
    for key in ("cpu", "logical_cores", "usable_cores", "torch", "numpy", "torch_threads",
                "cuda_device", "python", "platform"):  # fmt: skip
        assert key in info, key
    assert isinstance(info["cpu"], str) and info["cpu"] == cpu_model() and info["cpu"]
    assert 1 <= info["usable_cores"] == usable_cores() <= info["logical_cores"]
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()
    assert (info["cuda_device"] is None) == (not torch.cuda.is_available())
    assert set(info["cpu_details"].get("simd", [])) <= set(SIMD_FLAGS)
    json.dumps(info)  # a plain, JSON-ready dict


def test_time_fn_counts_calls_and_orders_stats():
    calls = []
    stats = time_fn(lambda: calls.append(1), warmup=2, repeats=7)
    assert len(calls) == 9
    assert set(stats) == {"median", "p10", "p90", "ci_low", "ci_high", "mean", "repeats", "times"}
    assert len(stats["times"]) == 7 and stats["ci_low"] <= stats["median"] <= stats["ci_high"]
    assert stats["repeats"] == 7
    assert 0 <= stats["p10"] <= stats["median"] <= stats["p90"]
    assert stats["mean"] > 0
    synced = []
    time_fn(lambda: None, warmup=1, repeats=3, sync=lambda: synced.append(1))
    assert len(synced) == 4
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        time_fn(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        time_fn(lambda: None, warmup=-1)


def test_gemm_rate_is_a_positive_finite_rate():
    rate = gemm_rate(n=128, repeats=3)
    assert math.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="n must be a positive int"):
        gemm_rate(n=0)


def test_ort_gemm_rate_times_one_matmul_through_the_session_helper(monkeypatch):
    """ort_gemm_rate runs an (n x n) @ (n x n) MatMul in a session from export.onnx.session
    (threads as torch's, spinning off) and converts the median time at 2 n^3 FLOPs."""
    import numpy as np

    import bench.machine as bm
    import export.onnx as eo

    made, seen = [], {}
    real_session = eo.session

    def spy(path, *args, **kwargs):
        made.append(real_session(path, *args, **kwargs))
        return made[-1]

    def fake_time_fn(fn, warmup, repeats, *args):
        seen["out"], seen["repeats"] = fn(), repeats
        return {"median": 0.25}

    monkeypatch.setattr(eo, "session", spy)
    monkeypatch.setattr(bm, "time_fn", fake_time_fn)
    n = 48
    assert ort_gemm_rate(n=n, repeats=3) == pytest.approx(2 * n**3 / 0.25 / 1e9)
    assert len(made) == 1 and seen["repeats"] == 3
    (out,) = seen["out"]
    assert out.shape == (n, n) and out.dtype == np.float32 and np.isfinite(out).all()
    opts = eo.session_options(made[0])
    assert opts["intra_op_threads"] == torch.get_num_threads()
    assert opts["inter_op_threads"] == 1 and opts["allow_spinning"] == "0"
    monkeypatch.undo()
    rate = ort_gemm_rate(n=64, repeats=3)
    assert math.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="n must be a positive int"):
        ort_gemm_rate(n=0)


def test_copy_bandwidth_is_a_positive_finite_rate():
    rate = copy_bandwidth(mib=4, repeats=3)
    assert math.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match="mib must be a positive int"):
        copy_bandwidth(mib=0)


def test_divisors():
    assert divisors(1) == [1]
    assert divisors(12) == [1, 2, 3, 4, 6, 12]
    assert divisors(49) == [1, 7, 49]


@pytest.mark.parametrize("n", [1, 7, 63, 64, 256, 1000, 1024, 2760, 6120, 16384, 99991])
def test_grid_for_multiplies_to_n(n):
    t, h, w = grid_for(n)
    assert t * h * w == n and 1 <= h <= w


def test_grid_for_finds_the_video_grids():
    assert grid_for(2760) == (3, 23, 40)  # MobileI2V 720p x 17 frames
    assert grid_for(6120) == (3, 34, 60)  # 1080p x 17 frames
    assert grid_for(256) == (2, 8, 16)  # 3 does not divide 256: ties go to fewer frames
    assert grid_for(576, frames=4, aspect=1.0) == (4, 12, 12)  # the small preset's latent
    with pytest.raises(ValueError, match="n must be a positive int"):
        grid_for(0)
    with pytest.raises(ValueError, match="aspect"):
        grid_for(64, aspect=-1.0)


FAULTS_PROBE = """
import json, resource, sys
import torch
from bench.machine import allocator_info, free_heap_bytes, keep_freed_memory
info = keep_freed_memory() if sys.argv[1] == "keep" else allocator_info()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# 64 MiB blocks, past glibc's largest mmap threshold; torch's 64-byte aligned blocks reach
# a steady state in glibc 2.36's heap after a few rounds (the heap grows meanwhile)
for _ in range(10):
    torch.empty(2**24).fill_(1.0)
before = faults()
for _ in range(5):
    torch.empty(2**24).fill_(1.0)  # allocated, written, freed
print(json.dumps({"faults": faults() - before, "info": info, "free_heap": free_heap_bytes()}))
"""


@pytest.mark.skipif(
    __import__("platform").libc_ver()[0] != "glibc", reason="keep_freed_memory acts on glibc only"
)
def test_keep_freed_memory_reuses_large_blocks_instead_of_faulting_them_in():
    """Counted page faults, not time: by default each fresh 64 MiB block is 16,384 new 4 KiB
    pages; with freed memory kept, freed blocks are reused and take (almost) none."""
    import subprocess
    import sys

    def probe(mode):
        env = {k: v for k, v in __import__("os").environ.items() if k != KEEP_FREED_ENV}
        out = subprocess.run([sys.executable, "-c", FAULTS_PROBE, mode], capture_output=True,
                             text=True, check=True, env=env)  # fmt: skip
        return json.loads(out.stdout)

    default, kept = probe("default"), probe("keep")
    pages = 5 * 2**26 // 4096
    assert default["faults"] >= pages // 2, default
    assert kept["faults"] < pages // 50, kept
    assert kept["info"]["keeps_freed_memory"] is True
    assert kept["info"]["allocator"] == "glibc, mmap off, trim off"
    assert default["info"]["keeps_freed_memory"] is False
    assert kept["info"]["peak_rss_mib"] > 64
    # what the process freed and keeps counts as available to it (hold_sessions)
    assert kept["free_heap"] >= 2**26 > default["free_heap"]


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    import bench.machine as bm

    saved = dict(bm._ALLOCATOR)
    monkeypatch.setenv(KEEP_FREED_ENV, "0")
    try:
        info = keep_freed_memory()
        assert info["keeps_freed_memory"] is False and info["why"] == f"{KEEP_FREED_ENV}=0"
        assert machine_info()["allocator"]["keeps_freed_memory"] is False
    finally:
        bm._ALLOCATOR.clear()
        bm._ALLOCATOR.update(saved)


def test_ab_ort_arena_times_both_kinds_of_session_of_each_model(tmp_path):
    pytest.importorskip("onnxruntime")
    from bench.ab_ort_arena import ab_ort_arena, main

    res = ab_ort_arena("tiny", (2, 4, 4), ("relu_linear", "softmax"), repeats=3, progress=False)
    assert [r["variant"] for r in res["rows"]] == ["relu_linear", "softmax"]
    for row in res["rows"]:
        assert row["own arena"]["repeats"] == row["shared arena"]["repeats"] == 3
        q = row["shared_over_own_per_round"]
        assert len(q["ratios"]) == 3 and q["ci_low"] <= q["median"] <= q["ci_high"]
        assert "shared arena" in row["verdict"] and "own arena" in row["verdict"]
        for mode in ("own arena", "shared arena"):
            added = row[mode]["resident_gb_added"]
            if sys.platform == "linux":
                assert isinstance(added, float) and math.isfinite(added)
            else:
                assert added is None
    with pytest.raises(ValueError, match="unknown attention variant"):
        ab_ort_arena("tiny", (2, 4, 4), ("nope",))
    with pytest.raises(ValueError, match="variants must name at least one variant, each once"):
        ab_ort_arena("tiny", (2, 4, 4), ("softmax", "softmax"))
    with pytest.raises(ValueError, match="repeats must be"):
        ab_ort_arena("tiny", (2, 4, 4), repeats=0)
    with pytest.raises(SystemExit):
        main(["--preset", "tiny", "--grid", "0x4x4", "--out", str(tmp_path / "a.json")])


def test_ab_allocator_runs_both_modes_in_fresh_processes():
    from bench.ab_allocator import ab_allocator

    res = ab_allocator("tiny", (1, 2, 2), ("relu_linear",), rounds=1, stack=1, warm=0,
                       repeats=2, progress=False)  # fmt: skip
    (row,) = res["rows"]
    assert row["variant"] == "relu_linear" and row["default"]["repeats"] == 2
    assert res["allocators"]["kept"]["keeps_freed_memory"] is (
        __import__("platform").libc_ver()[0] == "glibc"
    )
    assert res["allocators"]["default"]["keeps_freed_memory"] is False
    assert "glibc default" in row["verdict"] and row["speedup"] > 0
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        ab_allocator("tiny", (1, 2, 2), ("relu_linear",), rounds=0)
