"""Property tests: every variant x every implementation usable here, on random shapes, dtypes
and input scales, against the float64 reference. Generated from the registry, so a new
variant or implementation is tested without a new test.

Each example draws B in 1..3, H in 1..4, N in 1..600 (biased small: the Triton interpreter
is slow, but 600 is reached), D from {8, 16, 17, 32, 64, 72}, a dtype (fp32, fp16, bf16),
an input scale s in [1e-3, 1e3] (log-uniform; q, k, v ~ s * N(0, 1)) and a seed.

The tolerance is FlashAttention's rule. The float64 reference runs on the very inputs the
implementation saw (already rounded to the dtype), so input rounding is not error. The
implementation's max abs error against it must be at most 2x the max abs error of plain
PyTorch doing the same math in the same precision, plus a floor for tiny problems, where
a plain evaluation can be exact by luck: one ulp of the 16-bit dtypes (the exact result
rounded into the dtype, plus the rounding of the last operation done in it), 1e-6 for
fp32, relative to the scale of what attention averages, max(max|out|, max|v|): the
rounding error of a weighted sum is set by its terms, not by its (possibly cancelling)
result. Plain PyTorch is evaluated two ways, and the larger error counts: the zoo
reference with its fp32 upcast switched off (scale folded into q; linear forms multiply
keys by values first) and the variant's defining form computed naively (`Variant.naive`:
scores, then scale; A = phi(q) phi(k)^T, then A v / A 1). At large input scales the error
is dominated by conditioning (fp32 logits of 1e6 carry absolute errors near 0.1), one
association can be lucky by 3x, and the fast kernels (scores first, like `naive`) would
then be judged against luck rather than against plain PyTorch.

Where low precision legitimately fails, the decisions (documented per case):

* Plain fp16 overflows at large scales (q k^T reaches 1e6 * D; a linear state sums N of
  1e6-sized products): its error is infinite and the rule says nothing. The reference and
  the Triton kernels accumulate in fp32, so they must stay finite and obey the rule against
  plain fp32 on the same inputs instead (plus the fp16 output floor). The ANE forms compute
  in the input dtype by design (as the fp16 Core ML program does), so they may overflow
  exactly where plain fp16 does: on (b, h, query) rows where plain fp16 is finite they must
  be finite and obey the rule; rows where plain fp16 overflowed carry no accuracy claim.
* An exact output beyond the dtype's range (sigmoid sums up to N values of 1e3) rounds to
  +-inf: such elements must come out as the same infinity (or finite and as large as the
  dtype allows), never NaN; they are left out of the error.
* Head dims outside the Triton kernels' 16..128 (D = 8 here) must raise the ValueError
  naming the head dim: that is the property for those examples.
* The ANE linear forms keep the state and key sum as means over the keys (Nk^-1/2 on each
  factor; kernels.ane.linear_head), so that an fp16 program cannot overflow on long
  sequences. That association is their "same math": in 16 bits they are judged against
  plain PyTorch computing those means in the dtype. It costs accuracy for small inputs:
  at scales below ~1e-2 the fp16 products fall into subnormals, up to Nk times sooner
  than plain fp16's sums (README, "Numerical behaviour").
* performer's features are exp(w x' - |x'|^2 / 2) with logits up to |x|^2 / (2 sqrt(D)):
  rounding the logits alone changes the features by u * |logit| (u the dtype's unit
  roundoff), whatever the evaluation order. Two evaluations of the same features (the ANE
  form folds D^-1/4 into its projection) differ by that much, so the floor adds it.
* Triton 3.9's interpreter converts fp32 to bf16 by truncation (CUDA rounds to nearest):
  its bf16 outputs get one more ulp of floor.

The number of distinct examples per variant and implementation is printed by the last test
(in the pytest output, and as junit properties) and asserted >= 200.
"""

from __future__ import annotations

import collections
import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first @triton.jit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attention_zoo as az
import attention_zoo._common as zoo_common
from tests.helpers import grid_for, poisoned_empty

EXAMPLES = 200  # distinct examples required per (variant, impl)
MAX_EXAMPLES = 215  # Hypothesis repeats a few (the simplest example first): 200+ distinct
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HEAD_DIMS = (8, 16, 17, 32, 64, 72)
TRITON_HEAD_DIMS = range(16, 129)
# One ulp of the 16-bit dtypes, a few of fp32, relative to the scale of the values attention
# averages (see the module docstring).
FLOOR = {torch.float32: 1e-6, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
ULP = {torch.float32: 2.0**-23, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}

CASES = [(name, impl) for name, var in az.VARIANTS.items() for impl in var.usable_impls()]
# "fast" runs the fused CPU kernel (kernels.cpu_linear) where it builds; the PyTorch form
# it replaces there (`torch_form`, what runs under autograd, tracers and without a
# compiler) is held to the same rule.
CASES += [
    (name, "fast_torch")
    for name, var in az.VARIANTS.items()
    if getattr(var.fast_fn, "torch_form", None) is not None
]
# (variant, impl) -> examples that passed, as hashable keys (Hypothesis repeats a few)
SEEN: dict[tuple[str, str], list[tuple]] = collections.defaultdict(list)

# N buckets: most examples small (one interpreter block), some medium, a few up to 600
# (600 itself drawn explicitly: Hypothesis favours the low end of a range).
N_BUCKETS = st.sampled_from(("small",) * 13 + ("medium",) * 4 + ("large",) * 3)
N_DRAWS = {
    "small": st.integers(1, 64),
    "medium": st.integers(65, 256),
    "large": st.one_of(st.just(600), st.integers(257, 600)),
}


@st.composite
def examples(draw):
    bucket = draw(N_BUCKETS)
    return {
        "B": draw(st.integers(1, 3)),
        "H": draw(st.integers(1, 4)),
        "N": draw(N_DRAWS[bucket]),
        "D": draw(st.sampled_from(HEAD_DIMS)),
        "dtype": draw(st.sampled_from(DTYPES)),
        # both ends drawn explicitly: Hypothesis favours simple floats
        "log10_scale": draw(st.one_of(st.sampled_from((-3.0, 3.0)), st.floats(-3.0, 3.0))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def make_inputs(ex) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(ex["seed"])
    scale = 10.0 ** ex["log10_scale"]
    shape = (ex["B"], ex["H"], ex["N"], ex["D"])
    return tuple(
        (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(ex["dtype"])
        for _ in range(3)
    )


def run_impl(var, impl, q, k, v, opts) -> torch.Tensor:
    if impl == "reference":
        return var.reference(q, k, v, **opts)
    if impl in ("fast", "triton"):
        with poisoned_empty():
            return getattr(var, impl)(q, k, v, **opts)
    if impl == "fast_torch":
        with poisoned_empty():
            return var.fast_fn.torch_form(q, k, v, **var.resolve_opts(q, k, opts))
    heads = q.shape[1]
    out = var.ane(
        az.to_channels_first(q), az.to_channels_first(k), az.to_channels_first(v), heads, **opts
    )
    assert out.shape == (q.shape[0], heads * v.shape[-1], 1, q.shape[2])
    return az.from_channels_first(out, heads)


def plain(var, q, k, v, opts, mean_state: bool = False) -> torch.Tensor:
    """The variant's math in plain PyTorch in q's dtype: the baseline of the 2x rule.

    fp32: the fp32 reference. 16 bits: the zoo reference with its fp32 upcast switched off
    (features, scores, softmax, state and sums in the dtype), except that linear variants
    divide in fp32: eps = 1e-8 underflows in fp16 and would turn a zero-feature row into
    0 / 0, which would leave such rows untested. mean_state: the linear state and key sum
    as means over the keys (Nk^-1/2 on each factor), the association the ANE forms use so
    that an fp16 program does not overflow on long sequences (kernels.ane.linear_head)."""
    if q.dtype == torch.float32:
        return var.reference(q, k, v, **opts)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo_common, "compute_dtype", lambda dtype: dtype)
        if var.kind != "linear":
            return var.reference(q, k, v, **opts)
        o = var.resolve_opts(q, k, opts)
        feature_opts = {n: val for n, val in o.items() if n != "eps"}
        phi_q, phi_k = var.feature_fn(q, k, **feature_opts)
    eps = o["eps"]
    if mean_state:
        r = k.shape[-2] ** -0.5
        phi_k, v, eps = phi_k * r, v * r, eps * r * r
        z = (phi_k * r).sum(dim=-2)  # (B, H, F)
    else:
        z = phi_k.sum(dim=-2)
    state = phi_k.transpose(-1, -2) @ v  # (B, H, F, Dv)
    num = phi_q @ state  # (B, H, N, Dv)
    den = (phi_q @ z.unsqueeze(-1)).float() + eps  # (B, H, N, 1)
    return (num.float() / den).to(q.dtype)


def performer_floor(var, q, k, opts) -> float:
    """Relative error that merely rounding performer's logits (w x' - |x'|^2 / 2, up to
    |x|^2 / (2 sqrt(D)) in size) puts into its exp features, q's and k's: twice half an ulp
    of the dtype times the largest logit. Any two evaluations of the same features (the ANE
    form folds D^-1/4 into its projection) differ by about this much, so the 2x rule alone
    would compare two samples of the same conditioning error."""
    if var.name != "performer":
        return 0.0
    o = var.resolve_opts(q, k, opts)
    w = az.performer.projection(o["features"], q.shape[-1], o["seed"], torch.float64, "cpu")
    xs = torch.cat([q, k], dim=-2).double() * q.shape[-1] ** -0.25
    logits = (xs @ w.T).abs() + 0.5 * (xs * xs).sum(dim=-1, keepdim=True)
    return torch.finfo(q.dtype).eps * logits.max().item()


def plain_naive(var, q, k, v, opts) -> torch.Tensor:
    """The variant's defining form computed naively in q's dtype (Variant.naive: the scores
    first, then the scale; for linear forms A = phi(q) phi(k)^T, then A v / A 1): the second
    way plain PyTorch does the same math."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo_common, "compute_dtype", lambda dtype: dtype)
        return var.naive(q, k, v, **opts).to(q.dtype)


def baseline_err(var, q, k, v, opts, ref, keep, mean_state=False) -> float:
    """The larger error of the two plain evaluations (`plain`, `plain_naive`) on the kept
    elements, ignoring one that is not finite there; inf when neither is finite."""
    errs = [
        max_err(plain(var, q, k, v, opts, mean_state), ref, keep),
        max_err(plain_naive(var, q, k, v, opts), ref, keep),
    ]
    finite = [e for e in errs if math.isfinite(e)]
    return max(finite) if finite else math.inf


def max_err(x: torch.Tensor, ref: torch.Tensor, keep: torch.Tensor) -> float:
    """Max abs error over the kept elements; inf when any kept element is not finite."""
    if not keep.any():
        return 0.0
    d = (x.double() - ref)[keep].abs()
    return math.inf if not torch.isfinite(d).all() else d.max().item()


def check_example(var, impl, ex) -> None:
    q, k, v = make_inputs(ex)
    opts = {"grid": grid_for(ex["N"])} if "grid" in var.required else {}
    if impl == "triton" and ex["D"] not in TRITON_HEAD_DIMS:
        with pytest.raises(
            ValueError, match=rf"head dim D must be in \[16, 128\], got D={ex['D']}"
        ):
            var.triton(q, k, v, **opts)
        return
    out = run_impl(var, impl, q, k, v, opts)
    assert out.shape == q.shape and out.dtype == q.dtype
    ref = var.reference(q.double(), k.double(), v.double(), **opts)
    assert torch.isfinite(ref).all(), "the float64 reference of finite inputs must be finite"

    finfo = torch.finfo(q.dtype)
    rep = ref.abs() <= finfo.max  # elements whose exact value the dtype can hold
    big = ~rep
    if big.any():
        # the exact value rounds to +-inf: the same infinity, or the largest finite values
        o = out.double()[big]
        assert not torch.isnan(o).any(), "an overflowing output must not be NaN"
        assert (torch.sign(o) == torch.sign(ref[big])).all()
        assert (o.abs() >= finfo.max / 2).all()

    mean_state = impl == "ane"
    keep = rep
    base = baseline_err(var, q, k, v, opts, ref, keep, mean_state)
    if math.isinf(base):
        if impl == "ane":
            # computes in the dtype like plain PyTorch: judged on the rows plain kept finite
            base_out = plain(var, q, k, v, opts, mean_state)
            keep = rep & torch.isfinite(base_out).all(dim=-1, keepdim=True)
            base = baseline_err(var, q, k, v, opts, ref, keep, mean_state)
        else:
            # fp32 accumulation: must stay finite; judged against plain fp32
            base = baseline_err(var, q.float(), k.float(), v.float(), opts, ref, keep)
    scale = max(ref[keep].abs().max().item() if keep.any() else 0.0, v.abs().max().item())
    err = max_err(out, ref, keep)
    floor = FLOOR[q.dtype] + performer_floor(var, q, k, opts)
    if impl == "triton" and q.dtype == torch.bfloat16 and not q.is_cuda:
        # Triton 3.9's interpreter converts fp32 to bf16 by truncation (CUDA rounds to
        # nearest): one more ulp
        floor += ULP[q.dtype]
    bound = 2 * base + floor * scale
    assert err <= bound, (
        f"{var.name}.{impl} {ex}: max error {err:.3g} > 2 x plain {q.dtype} error {base:.3g} "
        f"+ floor {floor * scale:.3g}"
    )


PROPERTY_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize(("name", "impl"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_matches_float64_reference(name, impl):
    var = az.get(name)

    @PROPERTY_SETTINGS
    @given(ex=examples())
    def prop(ex):
        check_example(var, impl, ex)
        SEEN[name, impl].append(tuple((key, str(val)) for key, val in ex.items()))

    prop()


def test_examples_per_variant_and_impl(record_property, capsys):
    """Runs after the property tests (file order): each (variant, impl) that ran here passed
    at least EXAMPLES distinct examples, and together they reach the corners of the space
    (N = 1 and 600, every D and dtype, scales 1e-3 and 1e3). Prints the table."""
    ran = {case: SEEN[case] for case in CASES if SEEN[case]}
    if not ran:
        pytest.skip("no property test ran in this session (deselected)")
    with capsys.disabled():
        print(f"\nproperty examples per variant x implementation ({len(ran)} pairs):")
        for (name, impl), seen in ran.items():
            ns = [int(dict(key)["N"]) for key in set(seen)]
            print(
                f"  {name:15s} {impl:10s} {len(set(seen))} distinct ({len(seen)} run), "
                f"{sum(n > 256 for n in ns)} with N > 256, max N {max(ns)}"
            )
    for (name, impl), seen in ran.items():
        record_property(f"examples[{name}-{impl}]", len(set(seen)))
        assert len(set(seen)) >= EXAMPLES, (name, impl, len(set(seen)))
        drawn = [dict(key) for key in seen]
        ns = {int(d["N"]) for d in drawn}
        scales = {float(d["log10_scale"]) for d in drawn}
        assert {1, 600} <= ns and len([n for n in ns if n > 256]) >= 3, (name, impl)
        assert {int(d["D"]) for d in drawn} == set(HEAD_DIMS), (name, impl)
        assert {d["dtype"] for d in drawn} == {str(t) for t in DTYPES}, (name, impl)
        assert min(scales) == -3.0 and max(scales) == 3.0, (name, impl)
