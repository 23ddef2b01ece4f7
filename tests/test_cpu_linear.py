"""The fused CPU kernel for linear attention (kernels.cpu_linear): built here, held to the
FlashAttention rule against the float64 reference at awkward shapes and strides, its
feature maps against torch's, NaN kept, errors that name the argument, and the PyTorch
form taking over where the kernel cannot run. (The property tests run it too, as the
linear variants' "fast" implementation.)"""

from __future__ import annotations

import math

import pytest
import torch

import attention_zoo as az
from attention_zoo import _common
from kernels import cpu_linear
from tests.helpers import make_qkv, poisoned_empty

LINEAR = [name for name, var in az.VARIANTS.items() if var.kind == "linear"]
# (B, H, Nq, Nk, D, Dv): one row, one head (one thread), chunk edges (CK = 128 keys,
# CQ = 64 queries), Nq != Nk, odd widths, Dv + 1 across several register panels
SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (1, 1, 5, 7, 3, 1),
    (2, 3, 63, 129, 17, 33),
    (1, 2, 65, 64, 72, 72),
    (3, 1, 130, 257, 60, 200),
    (1, 16, 300, 300, 72, 72),
]


def test_the_kernel_builds_here():
    """CI and every machine of this project have gcc: the kernel must build and load, or
    every "fast" linear row measured here would silently be the PyTorch form."""
    assert cpu_linear.available(), cpu_linear.unavailable_reason()
    assert cpu_linear.unavailable_reason() is None
    assert cpu_linear.vector_width() in (4, 8, 16)


def _inputs(B, H, Nq, Nk, D, Dv, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=g, dtype=torch.float64) * scale
    k = torch.randn(B, H, Nk, D, generator=g, dtype=torch.float64) * scale
    v = torch.randn(B, H, Nk, Dv, generator=g, dtype=torch.float64)
    return q, k, v


def _err(x, ref):
    return (x.double() - ref).abs().max().item()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", LINEAR)
def test_fast_runs_the_kernel_within_2x_of_fp32_torch(name, shape):
    """var.fast on fp32 CPU tensors (the kernel) against the float64 reference: at most 2x
    the error of the fp32 reference (plain PyTorch) plus a few ulps of the output scale.
    The kernel's result differs from the PyTorch form's (another summation order), which
    shows the kernel ran."""
    var = az.get(name)
    q, k, v = _inputs(*shape, seed=len(name))
    opts = var.resolve_opts(q, k, {})
    ref = var.reference(q, k, v, **opts)
    q32, k32, v32 = q.float(), k.float(), v.float()
    with poisoned_empty():
        out = var.fast(q32, k32, v32, **opts)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    plain = _err(var.reference(q32, k32, v32, **opts), ref)
    scale = max(ref.abs().max().item(), v.abs().max().item())
    assert _err(out, ref) <= 2 * plain + 4 * 2.0**-23 * scale, (name, shape)


@pytest.mark.parametrize("name", LINEAR)
def test_kernel_takes_strided_inputs(name):
    """Inputs in the (B, N, H, D) memory order a projection gives, seen as (B, H, N, D)
    through a transpose (row stride H*D), and a value tensor sliced from a wider one: the
    same result as on contiguous copies."""
    var = az.get(name)
    B, H, N, D = 2, 3, 70, 24
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(B, N, H, D, generator=g).transpose(1, 2) for _ in range(2))
    v = torch.randn(B, H, N, 2 * D, generator=g)[..., ::2]  # unit stride lost: copied
    assert not q.is_contiguous() and v.stride(-1) == 2
    opts = var.resolve_opts(q, k, {})
    out = var.fast(q, k, v, **opts)
    assert torch.equal(out, var.fast(q.contiguous(), k.contiguous(), v.contiguous(), **opts))


def test_thread_count_does_not_change_the_result():
    """Heads are split across threads; each head's arithmetic is the same on any thread."""
    q, k, v = (t.float() for t in _inputs(2, 5, 90, 90, 16, 16))
    outs = [cpu_linear.linear_forward(q, k, v, 1e-8, "relu", threads=t) for t in (1, 2, 3, 64)]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])


@pytest.mark.parametrize("name", LINEAR)
def test_nan_in_a_query_row_stays_in_its_output_row(name):
    """A NaN query element makes that query's output NaN, as the PyTorch forms do (the
    kernel's ReLU keeps NaN: x < 0 ? 0 : x); the other rows stay finite. A NaN key spoils
    every row, as it spoils the shared key state."""
    var = az.get(name)
    q, k, v = (t.float() for t in _inputs(1, 2, 40, 40, 8, 8, seed=5))
    q[0, 1, 7, 3] = float("nan")
    opts = var.resolve_opts(q, k, {})
    out = var.fast(q, k, v, **opts)
    torch_out = var.fast_fn.torch_form(q, k, v, **opts)
    assert torch.isnan(out[0, 1, 7]).all() and torch.isnan(torch_out[0, 1, 7]).all()
    rest = torch.ones_like(out, dtype=torch.bool)
    rest[0, 1, 7] = False
    assert torch.isfinite(out[rest]).all()
    k[0, 0, 3, 0] = float("nan")
    assert torch.isnan(var.fast(q, k, v, **opts)[0, 0]).all()


def _ulps(x: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest error in units of the fp32 spacing at the exact value."""
    f32 = torch.finfo(torch.float32)
    spacing = f32.eps * exact.abs().clamp_min(f32.tiny)
    return ((x.double() - exact) / spacing.double()).abs().max().item()


def test_feature_maps_match_torch():
    """The fused maps against torch's: ReLU and cosFormer's re-weighting bit for bit; ELU + 1
    (the kernel's own vectorised e^x) within 2 ulps of float64 over [-90, 10]; the focused
    map within a few ulps of float64 (fp32 norms, as torch's)."""
    from attention_zoo.cosformer import cos_sin_weights
    from attention_zoo.elu_linear import elu1
    from attention_zoo.focused_linear import focus

    x = torch.randn(257, 72, generator=torch.Generator().manual_seed(2)) * 3
    assert torch.equal(cpu_linear.feature_rows(x, "relu"), torch.relu(x))
    assert torch.equal(cpu_linear.feature_rows(x, "identity"), x)
    c, s = cos_sin_weights(257, 300, torch.float32, "cpu")
    r = torch.relu(x)
    got = cpu_linear.feature_rows(x, "relu_cossin", cos_sin=(c, s))
    assert torch.equal(got, torch.cat([r * c, r * s], -1))

    e = torch.linspace(-90, 10, 200_003, dtype=torch.float64)
    e32 = e.float().reshape(-1, 1)
    got = cpu_linear.feature_rows(e32, "elu1").reshape(-1)
    exact = elu1(e32.double().reshape(-1))
    live, dead = e32.reshape(-1) > -87.33, e32.reshape(-1) < -87.34  # ln(FLT_MIN) = -87.3365
    assert _ulps(got[live], exact[live]) <= 2.0
    assert (got[dead] == 0).all()  # e^x under FLT_MIN: 0 (torch gives subnormals)

    for p in (3.0, 2.0, 1.5):
        got = cpu_linear.feature_rows(x, "focus", p=p)
        exact = focus(x.double(), p)
        assert _ulps(got[exact > 0], exact[exact > 0]) <= 8.0, p
        assert (got[exact == 0] == 0).all()
    zero = torch.full((3, 9), -1.0)  # all-zero rows after ReLU stay zero
    assert not cpu_linear.feature_rows(zero, "focus", p=3.0).any()


def test_eager_no_grad_fp32_only():
    """The kernel runs for float32 CPU inputs in eager mode without autograd; float64,
    inputs that need gradients and traced calls take the PyTorch form."""
    f32 = torch.ones(1, 1, 2, 4)
    assert _common.native_usable(f32, f32, f32)
    assert not _common.native_usable(f32.double(), f32.double(), f32.double())
    g = f32.clone().requires_grad_()
    assert not _common.native_usable(g, f32, f32)
    with torch.no_grad():
        assert _common.native_usable(g, f32, f32)


def test_fast_falls_back_to_the_torch_form_without_the_kernel(monkeypatch):
    """Where the kernel cannot be built, the fast paths give the PyTorch form's result, and
    a direct call says why it cannot run."""
    monkeypatch.setattr(cpu_linear, "_library", lambda: (None, "no C compiler found (test)"))
    assert not cpu_linear.available()
    assert cpu_linear.unavailable_reason() == "no C compiler found (test)"
    q, k, v = make_qkv(1, 2, 33, 16, seed=4)
    for name in LINEAR:
        var = az.get(name)
        opts = var.resolve_opts(q, k, {})
        assert torch.equal(var.fast(q, k, v, **opts), var.fast_fn.torch_form(q, k, v, **opts))
    with pytest.raises(RuntimeError, match=r"unavailable: no C compiler found \(test\)"):
        cpu_linear.linear_forward(q, k, v, 1e-8)


def test_build_is_cached_by_source_and_failures_are_reported(tmp_path, monkeypatch):
    """The library is built into $MOBILEATTN_CACHE under a name hashed from the source,
    compiler, flags and CPU; a second build finds it. A compiler that fails is reported
    with its message, and nothing half-written is left."""
    monkeypatch.setenv("MOBILEATTN_CACHE", str(tmp_path))
    lib = cpu_linear._build()
    assert lib.parent == tmp_path / "kernels" and lib.name.startswith("cpu_linear-")
    mtime = lib.stat().st_mtime_ns
    assert cpu_linear._build() == lib and lib.stat().st_mtime_ns == mtime
    assert [p.name for p in lib.parent.iterdir()] == [lib.name]

    bad = tmp_path / "cc"
    bad.write_text(
        "#!/bin/sh\n"
        '[ "$1" = --version ] && echo fake-cc 1.0 && exit 0\n'
        "echo 'cc: error: broken' >&2\n"
        "exit 1\n"
    )
    bad.chmod(0o755)
    monkeypatch.setenv("CC", str(bad))
    with pytest.raises(RuntimeError, match=r"failed on cpu_linear.c:\ncc: error: broken"):
        cpu_linear._build()
    assert [p.name for p in lib.parent.iterdir()] == [lib.name]
    monkeypatch.setenv("CC", str(tmp_path / "missing-cc"))
    with pytest.raises(RuntimeError, match="does not run"):
        cpu_linear._build()


def test_bad_arguments_name_themselves():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match=r"feature must be one of .*got 'gelu'"):
        cpu_linear.linear_forward(q, q, q, 1e-8, "gelu")
    with pytest.raises(ValueError, match=r"q must be a float32 CPU tensor, got torch.float64"):
        cpu_linear.linear_forward(q.double(), q, q, 1e-8)
    with pytest.raises(ValueError, match=r"k must be a 4-D \(B, H, N, D\) tensor, got \(2, 8, 4\)"):
        cpu_linear.linear_forward(q, q[0], q, 1e-8)
    with pytest.raises(ValueError, match=r"k must be \(B, H, Nk, D\) = \(1, 2, 8, 4\)"):
        cpu_linear.linear_forward(q, q[..., :3], q, 1e-8)
    with pytest.raises(ValueError, match=r"threads must be a positive int, got 0"):
        cpu_linear.linear_forward(q, q, q, 1e-8, threads=0)
    with pytest.raises(ValueError, match="needs cos_sin_q and cos_sin_k"):
        cpu_linear.linear_forward(q, q, q, 1e-8, "relu_cossin")
    w = torch.ones(7)
    msg = r"cos_sin_q\[0\] must hold one weight per token \(8\), got \(7,\)"
    with pytest.raises(ValueError, match=msg):
        cpu_linear.linear_forward(q, q, q, 1e-8, "relu_cossin", cos_sin_q=(w, w), cos_sin_k=(w, w))
    with pytest.raises(ValueError, match=r"x must be a 2-D \(rows, D\) tensor"):
        cpu_linear.feature_rows(q, "relu")


def test_large_widths_and_many_heads():
    """More heads than the kernel's 64 thread slots and a feature width (performer's 300)
    over several of the query pass's partial sums: still within the rule."""
    var = az.get("performer")
    q, k, v = _inputs(1, 70, 20, 20, 16, 16, seed=9)
    opts = var.resolve_opts(q, k, {"features": 300})
    ref = var.reference(q, k, v, **opts)
    q32, k32, v32 = q.float(), k.float(), v.float()
    plain = _err(var.reference(q32, k32, v32, **opts), ref)
    out = var.fast(q32, k32, v32, **opts)
    floor = 4 * 2.0**-23 * max(ref.abs().max().item(), 1.0)
    assert _err(out, ref) <= 2 * plain + floor
    assert math.isfinite(_err(out, ref))
