"""Numerical edges, each with its documented behaviour (README, "Numerical behaviour"):

* zero features: a query (or all keys) whose linear features are all zero gets output 0,
  not NaN, for eps > 0, in every implementation and dtype (the ANE forms included, where
  eps / Nk underflows in fp16); with eps = 0 it is 0 / 0 = NaN everywhere;
* fp16 inputs up to 6e4 in magnitude: the reference and the Triton kernels accumulate in
  fp32 and return finite values for every variant (softmax subtracts the row max; linear
  forms are weighted means of v), except where the exact value itself lies beyond fp16
  (sigmoid sums up to N values): there the output is the infinity fp16 rounds it to;
* N = 65536 for the linear forms on CPU (reference path): no N x N buffer; the peak memory
  of each forward, measured in a subprocess, stays far below the 16 GiB of one;
* NaN and Inf inputs propagate, never hidden, the same way in every implementation: a NaN
  query poisons its own output row; a NaN key poisons every row that attends to it (its
  (batch, head) for softmax, sigmoid and the linear forms, whose shared state it enters;
  the rows of its frame for softmax_frame); a NaN value poisons that feature column of the
  same rows. For +-Inf, the non-finite outputs of every implementation are exactly those of
  the float64 reference (the value may be NaN where the reference has +-Inf).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first @triton.jit

import attention_zoo as az
from tests.helpers import make_qkv

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def run(var, impl, q, k, v, **opts) -> torch.Tensor:
    if impl != "ane":
        return getattr(var, impl)(q, k, v, **opts)
    return az.from_channels_first(
        var.ane(
            az.to_channels_first(q),
            az.to_channels_first(k),
            az.to_channels_first(v),
            q.shape[1],
            **opts,
        ),
        q.shape[1],
    )


def impl_cases(variants, dtypes=DTYPES):
    """(variant, impl, dtype) for every usable implementation; float64 for all but Triton."""
    return [
        pytest.param(name, impl, dtype, id=f"{name}-{impl}-{str(dtype)[6:]}")
        for name in variants
        for impl in az.get(name).usable_impls()
        for dtype in (*dtypes, torch.float64)
        if not (impl == "triton" and dtype == torch.float64)
    ]


# -- zero features -----------------------------------------------------------------------


def _can_be_all_zero(var) -> bool:
    """Linear variants whose feature map sends an all-negative vector to all zeros."""
    if var.kind != "linear":
        return False
    x = -torch.ones(1, 1, 2, 16, dtype=torch.float64)
    phi_q, phi_k = var.feature_fn(x, x, **{n: v for n, v in var.defaults.items() if n != "eps"})
    return bool((phi_q == 0).all() and (phi_k == 0).all())


ZERO_FEATURE = [name for name, var in az.VARIANTS.items() if _can_be_all_zero(var)]


def test_zero_feature_variants_are_found():
    assert {"relu_linear", "focused_linear", "cosformer"} <= set(ZERO_FEATURE)
    assert "elu_linear" not in ZERO_FEATURE and "performer" not in ZERO_FEATURE


@pytest.mark.parametrize(("name", "impl", "dtype"), impl_cases(ZERO_FEATURE))
def test_zero_feature_rows_are_zero_not_nan(name, impl, dtype, poison_empty):
    var = az.get(name)
    q, k, v = make_qkv(2, 3, 40, 16, dtype=dtype, seed=1)
    q[:, :, 7] = -q[:, :, 7].abs() - 0.5  # queries 7 of every head: all features 0
    q[1, 2, 20] = -1.0
    out = run(var, impl, q, k, v)
    assert not torch.isnan(out).any()
    assert (out[:, :, 7] == 0).all() and (out[1, 2, 20] == 0).all()
    ref = var.reference(q.double(), k.double(), v.double())
    assert (ref[:, :, 7] == 0).all()
    # the other rows are untouched by the zero rows: close to the float64 reference
    tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 2e-1}
    torch.testing.assert_close(out.double(), ref, rtol=tol[dtype], atol=tol[dtype])

    keys = -k.abs() - 0.5  # every key's features are 0: the whole output is 0
    out = run(var, impl, q, keys, v)
    assert (out == 0).all()


@pytest.mark.parametrize(("name", "impl", "dtype"), impl_cases(ZERO_FEATURE, (torch.float32,)))
def test_zero_feature_rows_with_eps_zero_are_nan(name, impl, dtype):
    """eps = 0 leaves 0 / 0: NaN on exactly the zero-feature rows, in every implementation."""
    var = az.get(name)
    q, k, v = make_qkv(1, 2, 30, 16, dtype=dtype, seed=2)
    q[:, :, 4] = -1.0
    out = run(var, impl, q, k, v, eps=0.0)
    assert torch.isnan(out[:, :, 4]).all()
    rest = torch.cat([out[:, :, :4], out[:, :, 5:]], dim=2)
    assert torch.isfinite(rest).all()


# -- fp16 inputs up to 6e4 -----------------------------------------------------------------


def _large_fp16(seed: int, n: int = 100, d: int = 16) -> tuple[torch.Tensor, ...]:
    """q, k, v ~ 1e4 * N(0, 1) clipped to +-6e4 (fp16 max is 65504), with +-6e4 outliers."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        x = (torch.randn(1, 2, n, d, generator=gen) * 1e4).clamp(-6e4, 6e4)
        x[0, 0, 3, :4] = 6e4
        x[0, 1, 10, 5:9] = -6e4
        out.append(x.half())
    return tuple(out)


FAST_WIDE = [
    pytest.param(name, impl, id=f"{name}-{impl}")
    for name, var in az.VARIANTS.items()
    for impl in var.usable_impls()
    if impl != "ane"
]


@pytest.mark.parametrize(("name", "impl"), FAST_WIDE)
def test_fp16_inputs_up_to_6e4_give_finite_outputs(name, impl, poison_empty):
    var = az.get(name)
    q, k, v = _large_fp16(seed=3)
    opts = {"grid": (4, 5, 5)} if "grid" in var.required else {}
    out = run(var, impl, q, k, v, **opts)
    ref = var.reference(q.double(), k.double(), v.double(), **opts)
    fits = ref.abs() < 65520  # fp16 rounds 65520 and beyond to inf, less to at most 65504
    assert torch.isfinite(out[fits]).all(), f"{name}.{impl}: non-finite output for fp16 inputs"
    # beyond fp16 (only sigmoid's unnormalised sums get there): the infinity it rounds to
    assert torch.equal(out[~fits].double(), torch.sign(ref[~fits]) * torch.inf)
    if var.kind == "softmax" or name in ("relu_linear", "elu_linear", "focused_linear"):
        # weighted means of v: within v's range
        assert out.abs().max() <= v.abs().max()


def test_ane_forms_need_fp32_for_fp16_outliers():
    """The ANE forms compute in the input dtype (as the fp16 Core ML program does), so fp16
    inputs of 6e4 overflow there; held in fp16 and computed in fp32 they are finite."""
    for name, var in az.VARIANTS.items():
        q, k, v = (x.float() for x in _large_fp16(seed=4))
        opts = {"grid": (4, 5, 5)} if "grid" in var.required else {}
        out = run(var, "ane", q, k, v, **opts)
        assert torch.isfinite(out).all(), name


# -- N = 65536 without an N x N buffer ---------------------------------------------------

PEAK_SCRIPT = r"""
import ctypes, json, sys, torch
import attention_zoo as az

torch.set_num_threads(1)
libc = ctypes.CDLL("libc.so.6")

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

n, d = int(sys.argv[1]), int(sys.argv[2])
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 1, n, d, generator=gen) for _ in range(3))
out = {}
for name, var in az.VARIANTS.items():
    if var.kind != "linear":
        continue
    var.reference(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # warm up code paths
    libc.malloc_trim(0)  # hand freed memory back, so the next forward cannot hide in it
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS")
    res = var.reference(q, k, v)
    out[name] = {"peak_bytes": status("VmHWM") - before, "finite": bool(torch.isfinite(res).all())}
    del res
print(json.dumps(out))
"""


def test_linear_forms_at_65536_tokens_use_no_n_by_n_buffer():
    """Each linear reference at N = 65536 (B = H = 1, D = 72, fp32) in a subprocess: the
    peak resident memory the forward adds (VmHWM after, VmRSS before; the peak is reset
    through /proc/self/clear_refs) is far below one N x N fp32 buffer (16 GiB)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    n, d = 65536, 72
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(n), str(d)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    linear = {name for name, var in az.VARIANTS.items() if var.kind == "linear"}
    assert set(peaks) == linear
    n_by_n = n * n * 4  # 16 GiB
    inputs = 3 * n * d * 4  # 57 MB of q, k, v
    for name, p in peaks.items():
        assert p["finite"], name
        # features (cosformer: 2x, performer: 128 per token) and a few input-sized
        # temporaries: 76-190 MB measured on the build machine, against 17 GB for N x N
        assert p["peak_bytes"] < 6 * inputs < n_by_n / 32, (name, p)


# -- NaN and Inf ---------------------------------------------------------------------------

N_FRAME = (3, 2, 4)  # 24 tokens: one Triton query block holds three frames
N_BLOCKS = (2, 8, 8)  # 128 tokens: frames of a whole block each


def _poisoned(which: str, value: float, grid, dtype):
    n = grid[0] * grid[1] * grid[2]
    q, k, v = make_qkv(2, 2, n, 16, dtype=torch.float64, seed=5)
    t = {"q": q, "k": k, "v": v}[which]
    t[1, 0, 9, 3] = value  # batch 1, head 0, token 9 (frame 1 of N_FRAME), feature 3
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _expected_nan(var, which: str, grid) -> torch.Tensor:
    """The documented set of NaN outputs for one NaN at (batch 1, head 0, token 9, feature 3)."""
    n = grid[0] * grid[1] * grid[2]
    mask = torch.zeros(2, 2, n, 16, dtype=torch.bool)
    frame = grid[1] * grid[2]
    rows = slice(None)
    if var.name == "softmax_frame":
        rows = slice(9 // frame * frame, (9 // frame + 1) * frame)  # token 9's frame
    if which == "q":
        mask[1, 0, 9, :] = True  # its own row only
    elif which == "k":
        mask[1, 0, rows, :] = True  # every row that attends to the key
    else:
        mask[1, 0, rows, 3] = True  # that value column of the same rows
    return mask


def _nan_id(name, impl, dtype, grid) -> str:
    return f"{name}-{impl}-{str(dtype)[6:]}-{'x'.join(map(str, grid))}"


NAN_CASES = [
    pytest.param(name, impl, dtype, grid, id=_nan_id(name, impl, dtype, grid))
    for name, var in az.VARIANTS.items()
    for impl in var.usable_impls()
    for dtype in (torch.float32, torch.float16)
    for grid in ((N_FRAME, N_BLOCKS) if name == "softmax_frame" else (N_FRAME,))
]


@pytest.mark.parametrize(("name", "impl", "dtype", "grid"), NAN_CASES)
def test_nan_and_inf_propagate_like_the_reference(name, impl, dtype, grid):
    var = az.get(name)
    opts = {"grid": grid} if "grid" in var.required else {}
    for which in "qkv":
        q, k, v = _poisoned(which, float("nan"), grid, dtype)
        out = run(var, impl, q, k, v, **opts)
        expected = _expected_nan(var, which, grid)
        assert torch.equal(torch.isnan(out), expected), f"NaN in {which}"
        assert torch.isfinite(out[~expected]).all()
        for inf in (float("inf"), -float("inf")):
            q, k, v = _poisoned(which, inf, grid, dtype)
            out = run(var, impl, q, k, v, **opts)
            ref = var.reference(q.double(), k.double(), v.double(), **opts)
            assert torch.equal(~torch.isfinite(out), ~torch.isfinite(ref)), f"{inf} in {which}"


@pytest.mark.parametrize("nk", [1, 5, 15, 16, 17, 64])
def test_fast_softmax_keeps_nan_queries_nan_at_any_key_count(nk):
    """torch's CPU SDPA returns zeros for a NaN query below 16 keys; the fast paths must not
    (softmax_frame: frames of nk tokens)."""
    cases = [("softmax", (20, nk, nk), {}), ("softmax_frame", (4 * nk,) * 3, {"grid": (4, 1, nk)})]
    for name, (nq, n_k, n_v), opts in cases:
        q, k, v = torch.randn(1, 2, nq, 16), torch.randn(1, 2, n_k, 16), torch.randn(1, 2, n_v, 16)
        row = nq - 1
        q[0, 1, row, 3] = float("nan")
        out = az.get(name).fast(q, k, v, **opts)
        nan_rows = torch.isnan(out).any(dim=-1)
        assert torch.isnan(out[0, 1, row]).all(), (name, nk)
        assert nan_rows.sum() == 1, (name, nk)
