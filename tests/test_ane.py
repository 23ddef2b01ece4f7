"""The channels-first ANE forms (kernels/ane_attention.py) against the references, generated
from the registry: every variant with an ANE form, awkward N and D, 1 and 3 heads, query
chunking on and off (with a remainder chunk), float64 and float32; plus the structure the
ANE needs (rank <= 4, only the native MIL einsum, one key transpose per head at most)."""

from __future__ import annotations

import pytest
import torch

import attention_zoo as az
from tests.helpers import grid_for, make_qkv, rel_err

ANE_VARIANTS = [name for name, var in az.VARIANTS.items() if var.ane_path is not None]

# (B, H, Nq, Nk, D, Dv, chunk). chunk only reaches variants that take it; 100 over 257
# queries and 16 over 63 leave remainder chunks (57 and 15); 63 == N and 4 > N = 1 are the
# edge cases where one chunk holds everything.
CASES = [
    (2, 3, 63, 63, 17, 17, None),
    (2, 3, 63, 63, 17, 17, 16),
    (1, 1, 257, 257, 32, 32, 100),
    (1, 3, 257, 257, 72, 72, None),
    (2, 1, 1, 1, 72, 72, 4),
    (1, 3, 63, 63, 32, 17, 63),
    (1, 3, 63, 257, 17, 32, 10),  # cross attention: Nq != Nk, Dv != D
]

# The fp32 rule's floor: an absolute max error below this passes whatever the plain fp32
# reference's error (which can be ~0 on tiny problems); ~10 ulps of fp32 at |out| ~ 1.
FP32_FLOOR = 1e-6


def case_inputs(var, case, dtype, seed=0):
    B, H, nq, nk, D, Dv, chunk = case
    q, _, _ = make_qkv(B, H, nq, D, dtype=torch.float64, seed=seed)
    _, k, _ = make_qkv(B, H, nk, D, dtype=torch.float64, seed=seed + 1)
    _, _, v = make_qkv(B, H, nk, Dv, dtype=torch.float64, seed=seed + 2)
    opts = {}
    if "chunk" in var.defaults:
        opts["chunk"] = chunk
    if "grid" in var.required:
        opts["grid"] = grid_for(nq)
    return (q.to(dtype), k.to(dtype), v.to(dtype)), opts


def _case_id(case) -> str:
    return "B{}H{}Nq{}Nk{}D{}Dv{}c{}".format(*case)


# Variants that need as many queries as keys (per-frame attention) skip the cross case.
PAIRS = [
    pytest.param(name, case, id=f"{name}-{_case_id(case)}")
    for name in ANE_VARIANTS
    for case in CASES
    if case[2] == case[3] or not az.get(name)._needs_same_length
]
CHUNKED = [name for name in ANE_VARIANTS if "chunk" in az.get(name).defaults]


def run_ane(var, q, k, v, opts):
    heads = q.shape[1]
    out = var.ane(
        az.to_channels_first(q), az.to_channels_first(k), az.to_channels_first(v), heads, **opts
    )
    assert out.shape == (q.shape[0], heads * v.shape[-1], 1, q.shape[2])
    assert out.dtype == q.dtype
    return az.from_channels_first(out, heads)


@pytest.mark.parametrize(("name", "case"), PAIRS)
def test_ane_float64_matches_reference(name, case, poison_empty):
    var = az.get(name)
    (q, k, v), opts = case_inputs(var, case, torch.float64)
    out = run_ane(var, q, k, v, opts)
    ref = var.reference(q, k, v, **opts)
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-10


@pytest.mark.parametrize(("name", "case"), PAIRS)
def test_ane_float32_obeys_tolerance_rule(name, case, poison_empty):
    """FlashAttention's rule: the fp32 ANE form's max error against the float64 reference is
    at most 2x that of the plain fp32 reference (or below FP32_FLOOR)."""
    var = az.get(name)
    (q, k, v), opts = case_inputs(var, case, torch.float64)
    exact = var.reference(q, k, v, **opts)
    q32, k32, v32 = q.float(), k.float(), v.float()
    out = run_ane(var, q32, k32, v32, opts)
    plain = var.reference(q32, k32, v32, **opts)
    ane_err = (out.double() - exact).abs().max().item()
    plain_err = (plain.double() - exact).abs().max().item()
    assert ane_err <= 2 * plain_err + FP32_FLOOR, (ane_err, plain_err)


@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_equals_unchunked(name):
    var = az.get(name)
    q, k, v = (az.to_channels_first(t) for t in make_qkv(1, 2, 45, 16, dtype=torch.float64))
    whole = var.ane(q, k, v, 2, chunk=None)
    for chunk in (1, 7, 44, 45, 1000):
        assert torch.allclose(var.ane(q, k, v, 2, chunk=chunk), whole, rtol=1e-12, atol=1e-14)


def test_zero_feature_query_gives_zero_like_reference():
    """A query whose ReLU features are all zero gets 0 (0 / eps), as in the reference."""
    var = az.get("relu_linear")
    q, k, v = make_qkv(1, 2, 9, 8, dtype=torch.float64)
    q[:, :, 3] = -1.0
    out = run_ane(var, q, k, v, {})
    assert torch.equal(out[:, :, 3], torch.zeros_like(out[:, :, 3]))
    assert rel_err(out, var.reference(q, k, v)) < 1e-10


def test_performer_projection_changes_with_seed():
    var = az.get("performer")
    q, k, v = (az.to_channels_first(t) for t in make_qkv(1, 1, 20, 8, dtype=torch.float64))
    a = var.ane(q, k, v, 1, seed=0, features=16)
    b = var.ane(q, k, v, 1, seed=1, features=16)
    assert not torch.allclose(a, b)


def test_ane_rejects_the_reference_layout():
    q, k, v = make_qkv(1, 2, 8, 4)
    with pytest.raises(ValueError, match="channels-first"):
        az.get("softmax").ane(q, k, v, 2)


# -- structure: what the Core ML program will hold -------------------------------------


class _Attn(torch.nn.Module):
    def __init__(self, name, heads, opts):
        super().__init__()
        self.var, self.heads, self.opts = az.get(name), heads, opts

    def forward(self, q, k, v):
        return self.var.ane(q, k, v, self.heads, **self.opts)


def _exported_nodes(name, heads=3, n=24, d=8, chunk=10):
    var = az.get(name)
    opts = {"chunk": chunk} if "chunk" in var.defaults else {}
    if "grid" in var.required:
        opts["grid"] = grid_for(n)
    ex = tuple(torch.randn(1, heads * d, 1, n) for _ in range(3))
    ep = torch.export.export(_Attn(name, heads, opts), ex).run_decompositions({})
    return [node for node in ep.graph.nodes if node.op == "call_function"]


@pytest.mark.parametrize("name", ANE_VARIANTS)
def test_ane_form_structure(name):
    """Rank <= 4 everywhere, only "nchw,nwhu->nchu" einsums, no reshape, and at most one key
    transpose per head (exactly one for the forms whose features act per channel)."""
    heads = 3
    nodes = _exported_nodes(name, heads=heads)
    for node in nodes:
        val = node.meta.get("val")
        vals = val if isinstance(val, (list, tuple)) else [val]
        for t in vals:
            if isinstance(t, torch.Tensor):
                assert t.dim() <= 4, (node.target, tuple(t.shape))
    targets = [str(node.target) for node in nodes]
    einsums = [node for node in nodes if "einsum" in str(node.target)]
    assert einsums, "the ANE form contracts with einsum"
    assert {node.args[0] for node in einsums} == {"nchw,nwhu->nchu"}
    assert not any(("view" in t or "reshape" in t) for t in targets), targets
    n_transposes = sum(("transpose" in t or "permute" in t) for t in targets)
    assert 1 <= n_transposes <= heads


def test_heads_is_accepted_positionally_and_by_keyword_everywhere():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2 * 16, 1, 10, generator=gen) for _ in range(3))
    var = az.get("relu_linear")
    outs = [
        var.ane(q, k, v, 2),
        var.ane(q, k, v, heads=2),
        az.attention(q, k, v, variant="relu_linear", impl="ane", heads=2),
        az.attention(q, k, v, 2, variant="relu_linear", impl="ane"),
    ]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    with pytest.raises(TypeError, match="heads given twice"):
        var.ane(q, k, v, 2, heads=2)
    with pytest.raises(TypeError, match="only with impl='ane'"):
        az.attention(q, k, v, 2, variant="relu_linear", impl="reference")
