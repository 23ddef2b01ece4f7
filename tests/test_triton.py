"""Triton kernels against the float64 references, for every variant with a triton_path.

CI has no CUDA: the kernels run on CPU through Triton's interpreter, which this module
switches on (TRITON_INTERPRET=1, as the Makefile does) before `kernels` is imported.
Triton is a dependency on Linux: a missing one fails here, it does not skip.

Accuracy follows FlashAttention's rule: the kernel's relative RMS error against the float64
reference is at most 2x that of plain PyTorch computing the same math in the input dtype,
with a floor of 1e-6 relative RMS so that exact 0-vs-0 cases do not flake.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first @triton.jit

import triton

import attention_zoo as az
import attention_zoo._common as zoo_common
from kernels import triton_linear, triton_softmax

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_VARIANTS = sorted(name for name, var in az.VARIANTS.items() if var.triton_path)
FLOOR = 1e-6  # relative RMS below which any two results count as equal

# Every N x D in fp32 and fp16, a few in bf16; B x H up to 2 x 3 (smaller at large N, where
# the interpreter is slow).
BH_FOR_N = {1: (2, 3), 63: (2, 3), 257: (1, 2), 1025: (1, 1)}
CASES = [
    (*BH_FOR_N[n], n, d, dtype)
    for dtype in (torch.float32, torch.float16)
    for n in BH_FOR_N
    for d in (16, 32, 64, 72)
] + [(2, 3, 63, 32, torch.bfloat16), (1, 1, 257, 72, torch.bfloat16)]
# non-default values for every option a variant may take (grid is derived from N)
OTHER_OPTS = {"scale": 0.3, "bias": -2.0, "p": 2.5, "features": 48, "seed": 3, "eps": 1e-3}


def grid_for(n: int) -> tuple[int, int, int]:
    """A (T, 1, n // T) token grid with the largest T <= 5 dividing n: frames of 1, 21, 205
    and 257 tokens for the test lengths, smaller and larger than the blocks."""
    t = max(d for d in range(1, 6) if n % d == 0)
    return (t, 1, n // t)


def opts_for(var, n: int, other: bool = False) -> dict:
    opts = {}
    for name in var.defaults:
        if name == "grid":
            opts["grid"] = grid_for(n)
        elif other and name in OTHER_OPTS:
            opts[name] = OTHER_OPTS[name]
    return opts


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def plain_torch(var, q, k, v, **opts) -> torch.Tensor:
    """The variant's math in plain PyTorch in q's dtype: the baseline of the 2x rule.

    Quadratic variants: the zoo reference itself with its upcast switched off. Linear
    variants: features from feature_fn (fp32) rounded to the dtype, state and sums in the
    dtype, and the final division in fp32, because eps (1e-8) underflows to 0 in fp16 and
    would turn an all-zero feature row into 0/0."""
    if var.kind != "linear":
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(zoo_common, "compute_dtype", lambda dtype: dtype)
            return var.reference(q, k, v, **opts)
    o = var.resolve_opts(q, k, opts)
    feature_opts = {n: val for n, val in o.items() if n != "eps"}
    phi_q, phi_k = (f.to(q.dtype) for f in var.feature_fn(q, k, **feature_opts))
    state = phi_k.transpose(-1, -2) @ v  # (B, H, F, Dv)
    z = phi_k.sum(dim=-2)  # (B, H, F)
    num = phi_q @ state  # (B, H, N, Dv)
    den = (phi_q @ z.unsqueeze(-1)).float() + o["eps"]  # (B, H, N, 1)
    return (num.float() / den).to(q.dtype)


def make_qkv(b, h, n, d, dtype, seed=0, nk=None, dv=None):
    gen = torch.Generator().manual_seed(seed)
    nk = nk or n
    shapes = ((b, h, n, d), (b, h, nk, d), (b, h, nk, dv or d))
    return [torch.randn(s, generator=gen).to(device=DEVICE, dtype=dtype) for s in shapes]


@pytest.fixture
def nan_empty(poison_empty):
    """conftest's poison_empty: torch.empty returns NaN-filled float tensors, so an output
    element (or a partial linear-attention state) a kernel fails to write cannot pass."""
    assert torch.isnan(torch.empty(2)).all()


def assert_flash_rule(var, q, k, v, out, **opts):
    ref = var.reference(q.double(), k.double(), v.double(), **opts)
    assert out.shape == ref.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all(), "kernel left unwritten (NaN) or non-finite outputs"
    err = rel_rms(out, ref)
    base = rel_rms(plain_torch(var, q, k, v, **opts), ref)
    assert err <= max(2 * base, FLOOR), (
        f"{var.name}: kernel error {err:.3g} > 2x plain {q.dtype} error {base:.3g}"
    )


@pytest.mark.parametrize("b,h,n,d,dtype", CASES, ids=lambda x: str(x).replace("torch.", ""))
@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_forward_matches_reference(name, b, h, n, d, dtype, nan_empty):
    var = az.get(name)
    q, k, v = make_qkv(b, h, n, d, dtype, seed=n + d)
    opts = opts_for(var, n)
    out = var.triton(q, k, v, **opts)
    assert_flash_rule(var, q, k, v, out, **opts)


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_forward_other_options(name, nan_empty):
    """Every option away from its default (scale, bias, non-integer p, features, seed)."""
    var = az.get(name)
    q, k, v = make_qkv(2, 2, 100, 40, torch.float32, seed=1)
    opts = opts_for(var, 100, other=True)
    out = az.attention(q, k, v, variant=name, impl="triton", **opts)
    assert_flash_rule(var, q, k, v, out, **opts)


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_forward_cross_lengths_and_value_dim(name, nan_empty):
    """Nq != Nk where the variant allows it, and a value dim other than the head dim."""
    var = az.get(name)
    nk = 63 if var._needs_same_length else 150
    q, k, v = make_qkv(1, 2, 63, 24, torch.float16, seed=2, nk=nk, dv=48)
    opts = opts_for(var, 63)
    out = var.triton(q, k, v, **opts)
    assert out.shape == (1, 2, 63, 48)
    assert_flash_rule(var, q, k, v, out, **opts)


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_forward_widest_head_dim(name, nan_empty):
    """D = 128: no split head dim; cosFormer's 256 features take Dv in tiles across programs."""
    var = az.get(name)
    q, k, v = make_qkv(1, 1, 100, 128, torch.float16, seed=8)
    opts = opts_for(var, 100)
    out = var.triton(q, k, v, **opts)
    assert_flash_rule(var, q, k, v, out, **opts)


def test_linear_value_tiles_with_masked_tail(nan_empty):
    """256 performer features: Dv = 100 in two 64-wide tiles, the second one masked."""
    assert triton_linear.tiling(256, 100, "state") == (256, 0, 64, 0, 2)
    assert triton_linear.tiling(256, 100, "out") == (128, 128, 64, 0, 2)
    var = az.get("performer")
    q, k, v = make_qkv(1, 2, 90, 32, torch.float32, seed=9, dv=100)
    out = var.triton(q, k, v, features=256)
    assert_flash_rule(var, q, k, v, out, features=256)


def test_feature_and_value_splits():
    assert triton_linear.feature_split(72) == (64, 16)
    assert triton_linear.feature_split(144) == (128, 16)
    assert triton_linear.feature_split(256) == (128, 128)
    assert triton_linear.feature_split(64) == (64, 0)
    assert triton_linear.tiling(72, 72, "state") == (128, 0, 64, 16, 1)
    assert triton_linear.tiling(72, 72, "out") == (64, 16, 64, 16, 1)
    assert triton_linear.tiling(128, 128, "out") == (128, 0, 128, 0, 1)
    for f in range(16, 257):
        a, b = triton_linear.feature_split(f)
        assert a + b >= f and a <= 128 and b <= 128


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_gradients_match_reference(name):
    var = az.get(name)
    q, k, v = make_qkv(1, 2, 70, 24, torch.float32, seed=3)
    opts = opts_for(var, 70)
    g = torch.randn(1, 2, 70, 24, generator=torch.Generator().manual_seed(4)).to(DEVICE)

    def grads(fn, *xs):
        xs = [x.detach().requires_grad_() for x in xs]
        (fn(*xs, **opts) * g).sum().backward()
        return [x.grad for x in xs]

    got = grads(var.triton, q, k, v)
    want = grads(var.reference, q, k, v)
    want64 = grads(var.reference, q.double(), k.double(), v.double())
    for name_, a, b, c in zip("qkv", got, want, want64, strict=True):
        assert a.dtype == torch.float32, name_
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"d{name_}")
        assert rel_rms(a, c) <= max(2 * rel_rms(b, c), FLOOR), f"d{name_}"


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_gradient_of_v_only(name):
    """Inputs that do not need grad get none; the others still get the reference's."""
    var = az.get(name)
    q, k, v = make_qkv(1, 1, 33, 16, torch.float32, seed=5)
    opts = opts_for(var, 33)
    vt = v.clone().requires_grad_()
    var.triton(q, k, vt, **opts).sum().backward()
    vr = v.clone().requires_grad_()
    var.reference(q, k, vr, **opts).sum().backward()
    torch.testing.assert_close(vt.grad, vr.grad, rtol=1e-5, atol=1e-6)


FRAME_GRIDS = [
    # (T, H, W), block: frames smaller than, equal to and not multiples of the block
    ((3, 2, 3), 16),  # F = 6: several frames per block
    ((4, 4, 4), 16),  # F = 16 = block
    ((3, 5, 5), 16),  # F = 25: blocks straddle frames
    ((2, 8, 8), 64),  # F = 64 = block
    ((2, 5, 13), 64),  # F = 65: one row past the block
    ((3, 10, 10), 64),  # F = 100: straddling blocks
    ((1, 1, 50), 64),  # one frame, shorter than a block
]


@pytest.mark.parametrize("grid,block", FRAME_GRIDS, ids=str)
def test_softmax_frame_grids(grid, block, nan_empty):
    var = az.get("softmax_frame")
    n = math.prod(grid)
    q, k, v = make_qkv(1, 2, n, 32, torch.float16, seed=n)
    scale = 1 / math.sqrt(32)
    out = triton_softmax.attention_forward(
        q, k, v, "frame", scale, frame=grid[1] * grid[2], block_m=block, block_n=block
    )
    assert_flash_rule(var, q, k, v, out, grid=grid)


def test_softmax_frame_is_not_full_softmax():
    """Tokens of other frames must not leak in: with distinct frames the per-frame result
    differs from full softmax, and each frame equals full softmax on that frame alone."""
    q, k, v = make_qkv(1, 1, 60, 16, torch.float32, seed=6)
    out = az.get("softmax_frame").triton(q, k, v, grid=(3, 4, 5))
    for t in range(3):
        sl = slice(20 * t, 20 * (t + 1))
        alone = az.get("softmax").reference(q[..., sl, :], k[..., sl, :], v[..., sl, :])
        torch.testing.assert_close(out[..., sl, :], alone, rtol=1e-5, atol=1e-6)
    full = az.get("softmax").reference(q, k, v)
    assert rel_rms(out, full) > 0.1


LINEAR_PHIS = [
    ("relu", "relu_linear", {}),
    ("elu", "elu_linear", {}),
    ("focused", "focused_linear", {"p": 3.0}),
]


@pytest.mark.parametrize(
    "phi,name,fopts", LINEAR_PHIS, ids=lambda x: x if isinstance(x, str) else ""
)
def test_linear_split_with_remainder(phi, name, fopts, nan_empty):
    """N = 257 keys in splits of 96 rows (3 splits, the last 65 rows) of 16-row blocks."""
    var = az.get(name)
    q, k, v = make_qkv(2, 3, 257, 72, torch.float32, seed=7)
    out = triton_linear.linear_forward(
        q, k, v, 1e-8, phi, fopts.get("p", 1.0), rows_per_split=96, block=16
    )
    assert triton.cdiv(257, 96) == 3
    assert_flash_rule(var, q, k, v, out, **fopts)


def test_plan_splits():
    # a small B*H on a 132-SM GPU: N is split, every row is covered, splits are long enough
    rows = triton_linear.plan_splits(32768, 16, 1, 64, 16 * 72, 132)
    splits = triton.cdiv(32768, rows)
    assert rows % 64 == 0 and splits * rows >= 32768 and splits > 1
    assert rows >= 16 * 72
    # plenty of (batch, head) pairs, or a short N: one split
    assert triton_linear.plan_splits(4096, 512, 1, 64, 1152, 132) >= 4096
    assert triton_linear.plan_splits(1000, 1, 1, 64, 1152, 132) >= 1000


@pytest.mark.parametrize("d", range(16, 129, 8))
def test_head_dim_split_covers_d(d):
    a, b = triton_softmax.head_dim_split(d)
    assert a & (a - 1) == 0 and a <= d and a + b >= d
    assert b == 0 or (b >= 16 and b & (b - 1) == 0 and b < 2 * (d - a) + 16)
    assert triton_softmax.head_dim_split(72) == (64, 16)


@pytest.mark.parametrize("name", TRITON_VARIANTS)
@pytest.mark.parametrize("d", [8, 136])
def test_head_dim_out_of_range_is_a_clear_error(name, d):
    var = az.get(name)
    q, k, v = make_qkv(1, 1, 16, d, torch.float32)
    with pytest.raises(ValueError, match=rf"head dim D must be in \[16, 128\], got D={d}"):
        az.attention(q, k, v, variant=name, impl="triton", **opts_for(var, 16))


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_value_dim_and_dtype_errors(name):
    var = az.get(name)
    q, k, v = make_qkv(1, 1, 16, 16, torch.float32, dv=200)
    with pytest.raises(ValueError, match=r"head dim Dv .* got Dv=200"):
        var.triton(q, k, v, **opts_for(var, 16))
    q, k, v = make_qkv(1, 1, 16, 16, torch.float64)
    with pytest.raises(TypeError, match=r"float16, bfloat16 or float32, got torch\.float64"):
        var.triton(q, k, v, **opts_for(var, 16))


def test_performer_too_many_features_is_a_clear_error():
    q, k, v = make_qkv(1, 1, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="feature dim must be <= 256, got 300"):
        az.get("performer").triton(q, k, v, features=300)


def test_the_eight_variants_are_wired():
    assert set(TRITON_VARIANTS) >= {
        "softmax",
        "softmax_frame",
        "sigmoid",
        "relu_linear",
        "elu_linear",
        "focused_linear",
        "cosformer",
        "performer",
    }


def test_unsupported_reason_and_device_error(monkeypatch):
    q, k, v = make_qkv(1, 1, 16, 16, torch.float16)
    assert triton_softmax.unsupported_reason(q, v) is None
    assert "float64" in triton_softmax.unsupported_reason(q.double(), v.double())
    if DEVICE == "cpu":
        monkeypatch.setattr(triton_softmax, "_interpreted", lambda: False)
        with pytest.raises(ValueError, match="need CUDA tensors, or TRITON_INTERPRET=1"):
            az.get("relu_linear").triton(q, k, v)


# Compiles the kernels for Hopper (sm_90) with Triton's bundled ptxas, no GPU needed: what
# the interpreter cannot check (layouts, wgmma operand shapes, shared memory, the compiled
# form of the constexpr branches). A subprocess, because this module switched the
# interpreter on.
HOPPER_COMPILE = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels import triton_linear as tlin, triton_softmax as tsm

def build(fn, sig, consts, warps):
    attrs = {(i,): [["tt.divisibility", 16]] for i, t in enumerate(sig.values()) if t[0] == "*"}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert k.metadata.shared <= 232448, (fn, consts, k.metadata.shared)

for mode, d, dt in ((0, 72, "bf16"), (1, 72, "bf16"), (2, 72, "bf16"), (0, 40, "fp32")):
    (bd, bd2), (bdv, bdv2) = tsm.head_dim_split(d), tsm.head_dim_split(d)
    p = "*" + dt
    sig = dict(Q=p, K=p, V=p, O=p, N_Q="i32", N_K="i32", qk_scale="fp32", bias2="fp32",
               FRAME="i32")
    consts = dict(MODE=mode, D=d, DV=d, BLOCK_M=128, BLOCK_N=64, BLOCK_D=bd, BLOCK_D2=bd2,
                  BLOCK_DV=bdv, BLOCK_DV2=bdv2, DOT_UPCAST=False,
                  INPUT_PRECISION="ieee" if dt == "fp32" else "tf32")
    build(tsm._attn_fwd_kernel, sig, consts, 8)

for phi, f, p_int in ((1, 72, 0), (2, 72, 0), (3, 72, 3), (3, 64, 0), (0, 144, 0)):
    p, kp = "*bf16", "*fp32" if phi == 0 else "*bf16"
    common = dict(F=f, DV=72, PHI=phi, P_INT=p_int, INPUT_PRECISION="tf32")
    fa, fb, da, db, _ = tlin.tiling(f, 72, "state")
    sig = dict(K=kp, V=p, S_PART="*fp32", Z_PART="*fp32", N_K="i32", ROWS_PER_SPLIT="i32",
               P="fp32")
    build(tlin._linear_state_kernel, sig, dict(common, BLOCK_N=64, FA=fa, FB=fb, DA=da, DB=db), 8)
    fa, fb, da, db, _ = tlin.tiling(f, 72, "out")
    sig = dict(Q=kp, S="*fp32", Z="*fp32", O=p, N_Q="i32", ROWS_PER_SPLIT="i32", P="fp32",
               eps="fp32")
    build(tlin._linear_out_kernel, sig, dict(common, BLOCK_M=64, FA=fa, FB=fb, DA=da, DB=db), 8)
print("compiled")
"""


def test_kernels_compile_for_hopper():
    import triton.backends.nvidia.compiler  # noqa: F401  (the NVIDIA backend must be there)

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", HOPPER_COMPILE],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]
