"""The zoo's references: each against its defining quadratic form in float64, generated from
the registry so a new variant is covered without a new test; plus independent
re-derivations (SDPA, SANA's padded-V form, cosFormer's explicit weights)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import attention_zoo as az
from tests.helpers import grid_for, make_qkv, opts_for, rel_err

SIZES = list(itertools.product([1, 2], [1, 3], [1, 63, 257, 1000], [17, 32, 72]))  # B, H, N, D


@pytest.mark.parametrize("name", list(az.VARIANTS))
@pytest.mark.parametrize(("B", "H", "N", "D"), SIZES, ids=lambda x: str(x))
def test_reference_equals_defining_form(name, B, H, N, D):
    var = az.get(name)
    q, k, v = make_qkv(B, H, N, D, dtype=torch.float64, seed=N * 131 + D)
    opts = opts_for(var, N)
    out = var.reference(q, k, v, **opts)
    assert out.shape == (B, H, N, D) and out.dtype == torch.float64
    assert torch.isfinite(out).all()
    assert rel_err(out, var.naive(q, k, v, **opts)) < 1e-10


@pytest.mark.parametrize("name", list(az.VARIANTS))
def test_value_dim_may_differ(name):
    var = az.get(name)
    q, k, _ = make_qkv(2, 3, 63, 17, dtype=torch.float64)
    v = torch.randn(2, 3, 63, 5, dtype=torch.float64)
    opts = opts_for(var, 63)
    out = var.reference(q, k, v, **opts)
    assert out.shape == (2, 3, 63, 5)
    assert rel_err(out, var.naive(q, k, v, **opts)) < 1e-10


@pytest.mark.parametrize("name", list(az.VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs_keep_dtype_and_accuracy(name, dtype):
    """fp16/bf16 inputs are computed in fp32 and rounded once at the end, so their error
    against float64 math on the same (rounded) inputs is about the output rounding; fp32
    inputs accumulate in fp32 (a few hundred terms here: well under 1e-5 relative)."""
    var = az.get(name)
    q, k, v = make_qkv(1, 2, 257, 32, dtype=dtype)
    opts = opts_for(var, 257)
    out = var.reference(q, k, v, **opts)
    assert out.dtype == dtype
    exact = var.reference(q.double(), k.double(), v.double(), **opts)
    bound = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps
    assert rel_err(out.double(), exact) < bound


def test_softmax_equals_sdpa_float64():
    for B, H, N, D in [(1, 1, 1, 17), (2, 3, 63, 72), (1, 3, 1000, 32)]:
        q, k, v = make_qkv(B, H, N, D, dtype=torch.float64)
        ref = F.scaled_dot_product_attention(q, k, v)
        assert rel_err(az.get("softmax").reference(q, k, v), ref) < 1e-12
        ref = F.scaled_dot_product_attention(q, k, v, scale=0.3)
        assert rel_err(az.get("softmax").reference(q, k, v, scale=0.3), ref) < 1e-12


def test_softmax_query_blocks_do_not_change_result():
    q, k, v = make_qkv(1, 2, 257, 17, dtype=torch.float64)
    var = az.get("softmax")
    assert rel_err(var.reference(q, k, v, chunk=10), var.reference(q, k, v)) < 1e-14


def test_softmax_cross_attention_lengths():
    q = torch.randn(2, 3, 10, 16, dtype=torch.float64)
    k = torch.randn(2, 3, 37, 16, dtype=torch.float64)
    v = torch.randn(2, 3, 37, 8, dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert rel_err(az.get("softmax").reference(q, k, v), ref) < 1e-12


def _sana_relu_linear(q, k, v, eps):
    """SANA's LiteLA in its own channels-first formulation: pad V with a row of ones so one
    matmul gives numerator and denominator."""
    qc, kc, vc = (t.transpose(-1, -2) for t in (q, k, v))  # (B, H, D, N)
    qc, kc = torch.relu(qc), torch.relu(kc)
    vc = F.pad(vc, (0, 0, 0, 1), mode="constant", value=1.0)  # (B, H, D+1, N)
    vk = vc @ kc.transpose(-1, -2)  # (B, H, D+1, D)
    out = vk @ qc  # (B, H, D+1, N)
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)
    return out.transpose(-1, -2)


@pytest.mark.parametrize(("N", "D"), [(1, 17), (63, 72), (1000, 32)])
def test_relu_linear_equals_sana(N, D):
    q, k, v = make_qkv(2, 3, N, D, dtype=torch.float64)
    for eps in (1e-8, 1e-15, 0.5):
        ref = _sana_relu_linear(q, k, v, eps)
        assert rel_err(az.get("relu_linear").reference(q, k, v, eps=eps), ref) < 1e-12


def test_relu_linear_zero_features_give_zero_not_nan():
    q, k, v = make_qkv(1, 1, 8, 4, dtype=torch.float64)
    q[..., 3, :] = -1.0  # this query's ReLU features are all zero
    out = az.get("relu_linear").reference(q, k, v)
    assert torch.isfinite(out).all()
    assert (out[..., 3, :] == 0).all()


def test_cosformer_matches_explicit_cos_weights():
    q, k, v = make_qkv(1, 2, 63, 17, dtype=torch.float64)
    n = 63
    idx = torch.arange(n, dtype=torch.float64)
    w = torch.cos(math.pi / 2 * (idx[:, None] - idx[None, :]) / n)
    a = (torch.relu(q) @ torch.relu(k).transpose(-1, -2)) * w
    ref = (a @ v) / (a.sum(-1, keepdim=True) + 1e-8)
    assert rel_err(az.get("cosformer").reference(q, k, v), ref) < 1e-12


def test_focused_features_preserve_norm():
    x = torch.randn(2, 3, 50, 17, dtype=torch.float64)
    from attention_zoo.focused_linear import focus

    for p in (1.0, 2.0, 3.0, 5.5):
        phi = focus(x, p)
        assert torch.allclose(phi.norm(dim=-1), torch.relu(x).norm(dim=-1), rtol=1e-12)
    assert (focus(-x.abs(), 3.0) == 0).all()


def test_performer_is_seeded_and_approximates_softmax():
    q, k, v = make_qkv(1, 2, 200, 16, dtype=torch.float64, scale=0.5)
    var = az.get("performer")
    a = var.reference(q, k, v)
    assert torch.equal(a, var.reference(q, k, v)), "same call, same answer"
    assert not torch.equal(a, var.reference(q, k, v, seed=1)), "the seed changes the features"
    exact = az.get("softmax").reference(q, k, v)
    coarse = rel_err(var.reference(q, k, v, features=16), exact)
    fine = rel_err(var.reference(q, k, v, features=4096), exact)
    assert fine < 0.1 and fine < coarse / 3


def test_sigmoid_default_bias_is_minus_log_n():
    q, k, v = make_qkv(1, 1, 63, 8, dtype=torch.float64)
    var = az.get("sigmoid")
    assert rel_err(var.reference(q, k, v), var.reference(q, k, v, bias=-math.log(63))) == 0
    assert rel_err(var.reference(q, k, v), var.reference(q, k, v, bias=0.0)) > 1e-3


def test_softmax_frame_is_blockwise_softmax():
    grid = (3, 4, 5)
    q, k, v = make_qkv(2, 2, 60, 8, dtype=torch.float64)
    out = az.get("softmax_frame").reference(q, k, v, grid=grid)
    for t in range(3):
        sl = slice(t * 20, (t + 1) * 20)
        ref = F.scaled_dot_product_attention(q[..., sl, :], k[..., sl, :], v[..., sl, :])
        assert rel_err(out[..., sl, :], ref) < 1e-12
    # one frame = plain softmax attention
    one = az.get("softmax_frame").reference(q, k, v, grid=(1, 6, 10))
    assert rel_err(one, az.get("softmax").reference(q, k, v)) < 1e-12


def test_grid_helper_multiplies_to_n():
    for n in (1, 63, 257, 1000, 2760):
        assert math.prod(grid_for(n)) == n


# -- registry, dispatch and counts ---------------------------------------------------------


def test_registry_lists_eight_variants_with_kinds():
    expected = {
        "softmax",
        "relu_linear",
        "elu_linear",
        "focused_linear",
        "cosformer",
        "performer",
        "sigmoid",
        "softmax_frame",
    }
    assert set(az.VARIANTS) == expected
    for var in az.VARIANTS.values():
        assert var.kind in az.KINDS
        assert var.quadratic == (var.kind != "linear")
        assert "reference" in var.impls()


def test_auto_dispatches_to_the_fast_path_on_cpu():
    q, k, v = make_qkv(1, 2, 33, 16, dtype=torch.float64)
    for name, var in az.VARIANTS.items():
        opts = opts_for(var, 33)
        assert "fast" in var.impls(), name  # every variant has a fast exact CPU path
        fast, ref = var.fast(q, k, v, **opts), var.reference(q, k, v, **opts)
        assert torch.equal(az.attention(q, k, v, variant=name, impl="auto", **opts), fast)
        assert torch.equal(az.attention(q, k, v, variant=name, impl="fast", **opts), fast)
        assert torch.equal(az.attention(q, k, v, variant=name, impl="reference", **opts), ref)
        assert (fast - ref).abs().max() < 1e-12  # float64: the same math


def test_auto_falls_back_to_the_reference_without_a_fast_path(bare_variant):
    q, k, v = make_qkv(1, 2, 33, 16, dtype=torch.float64)
    ref = bare_variant.reference(q, k, v)
    assert torch.equal(az.attention(q, k, v, variant="test_bare"), ref)
    assert torch.equal(bare_variant.fast(q, k, v), ref)


@pytest.fixture
def bare_variant():
    """A registered variant with no fast forms, removed again after the test."""
    base = az.get("relu_linear")
    var = az.registry.register(
        az.Variant(
            name="test_bare",
            kind="linear",
            cost=base.cost,
            summary="relu_linear without fast forms",
            defaults=dict(base.defaults),
            reference_fn=base.reference_fn,
            feature_fn=base.feature_fn,
            flops_fn=base.flops_fn,
            bytes_fn=base.bytes_fn,
        )
    )
    yield var
    del az.VARIANTS["test_bare"]


@pytest.mark.parametrize("impl", ["fast", "triton", "ane"])
def test_missing_implementation_names_what_exists(bare_variant, impl):
    q, k, v = make_qkv(1, 1, 4, 4)
    assert impl not in bare_variant.impls()
    with pytest.raises(
        NotImplementedError, match=r"has no '\w+' implementation; it has: reference"
    ):
        az.attention(q, k, v, variant="test_bare", impl=impl, heads=1)


def test_flops_and_bytes():
    B, H, N, D = 2, 16, 2760, 72
    assert az.get("softmax").flops(B, H, N, D) == 4 * B * H * N * N * D
    assert az.get("sigmoid").flops(B, H, N, D) == 4 * B * H * N * N * D
    frame = az.get("softmax_frame").flops(B, H, N, D, grid=(3, 23, 40))
    assert frame == 4 * B * H * 3 * (23 * 40) ** 2 * D
    for name in ("relu_linear", "elu_linear", "focused_linear"):
        f = az.get(name).flops(B, H, N, D)
        assert 4 * B * H * N * D * D < f < 5 * B * H * N * D * D
    assert az.get("cosformer").flops(B, H, N, D) > az.get("relu_linear").flops(B, H, N, D) * 1.9
    for var in az.VARIANTS.values():
        opts = opts_for(var, N)
        assert var.bytes(B, H, N, D, torch.bfloat16, **opts) == 4 * B * H * N * D * 2
        assert var.bytes(B, H, N, D, torch.float32, **opts) == 4 * B * H * N * D * 4


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("name", list(az.VARIANTS))
def test_gradients_flow_through_every_variant(name, impl):
    """Block distillation and training backpropagate through the zoo: every variant's
    reference and fast path are differentiable, with gradients equal to the float64
    definition's (torch.autograd.gradcheck on small inputs)."""
    var = az.get(name)
    opts = opts_for(var, 6)
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 6, 8, dtype=torch.float64))
    fn = getattr(var, impl)
    assert torch.autograd.gradcheck(lambda a, b, c: fn(a, b, c, **opts), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(az.VARIANTS))
def test_fast_path_never_writes_its_inputs(name, dtype):
    """The fast paths run their steps in place where autograd is off (linear feature maps,
    the division); in the compute dtype upcast() returns the caller's own tensors, so
    in-place work must stay in buffers the path made. Inputs keep their values, and the
    in-place (no-grad) result equals the out-of-place (autograd) one."""
    var = az.get(name)
    opts = opts_for(var, 60)
    q, k, v = make_qkv(2, 3, 60, 16, dtype=dtype, seed=3)
    before = [t.clone() for t in (q, k, v)]
    with torch.no_grad():
        out = var.fast(q, k, v, **opts)
    for t, b in zip((q, k, v), before, strict=True):
        assert torch.equal(t, b)
    grads = [t.clone().requires_grad_() for t in (q, k, v)]
    out_grad = var.fast(*grads, **opts)
    assert out_grad.requires_grad
    torch.testing.assert_close(out, out_grad.detach(), rtol=1e-5, atol=1e-6)


def test_padded_state_rounds_the_key_state_up_to_whole_panels():
    """The eager linear paths' key state [kv, z] is zero-padded to a multiple of 16 columns
    (attention_zoo._common.padded_state): kv in the first Dv columns, the key sums in
    column Dv, zeros after, whatever the batch dims."""
    from attention_zoo._common import PANEL, padded_state, padded_width

    assert PANEL == 16
    assert [padded_width(n) for n in (1, 16, 17, 33, 65, 73, 129)] == [16, 16, 32, 48, 80, 80, 144]
    kv, z = torch.randn(2, 3, 8, 72), torch.randn(2, 3, 8)
    s = padded_state(kv, z)
    assert s.shape == (2, 3, 8, 80)
    assert torch.equal(s[..., :72], kv) and torch.equal(s[..., 72], z)
    assert not s[..., 73:].any()
