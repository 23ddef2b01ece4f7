"""Attention microbenchmarks: every zoo variant x every implementation usable here x N, with
the peers (torch SDPA, SANA's pad-ones linear attention; bench/peers.py) in the same group,
and for the linear variants, whose "fast" runs the native CPU kernel, their PyTorch form
("fast_torch").

    pytest bench/test_zoo_bench.py --benchmark-only                  # N in DEFAULT_SIZES
    pytest bench/test_zoo_bench.py --benchmark-only -k "N2760"       # one size
    pytest bench/test_zoo_bench.py --benchmark-disable --bench-sizes 64   # smoke run

q, k, v are (B, H, N, D) = (1, 16, N, 72), fp32 (float16 is not faster on CPU). Cases are
grouped by N and variant (its implementations and peers side by side); FLOPs and bytes
(the variant's analytic counts) go to `extra_info`. Each output is checked once, outside
the timed region, against the float64 reference on the first CHECK_HEADS heads: its error
must be at most twice that of the fp32 reference (the FlashAttention rule) plus a floor
of fp32 ulps of the output's magnitude.

Skipped, with the reason: quadratic variants above QUADRATIC_CAP_CPU tokens on CPU
(seconds per call and GBs of scores), and Triton without CUDA (the interpreter is a
correctness tool, orders of magnitude slower than compiled code; a smoke run with
--benchmark-disable still runs it once, checked). The ANE form is
benchmarked in its own channels-first layout (B, H*D, 1, N), converted outside the timing.
"""

from __future__ import annotations

import pytest
import torch

import attention_zoo as az
from bench.conftest import bench_sizes
from bench.grids import grid_for
from bench.peers import PEERS

B, H, D = 1, 16, 72
QUADRATIC_CAP_CPU = 6120  # MobileI2V at 1080p x 17 frames (3 x 34 x 60 tokens)
CHECK_HEADS = 2
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    cases, ids = [], []
    for n in bench_sizes(metafunc.config):
        for name, var in az.VARIANTS.items():
            torch_form = ("fast_torch",) if getattr(var.fast_fn, "torch_form", None) else ()
            for impl in (*var.usable_impls(), *torch_form, *PEERS.get(name, ())):
                cases.append((n, name, impl))
                ids.append(f"N{n}-{name}-{impl}")
    metafunc.parametrize("case", cases, ids=ids)


def options_for(var: az.Variant, n: int) -> dict:
    """The variant's options for a length-n sequence: the token grid if it takes one."""
    return {"grid": grid_for(n)} if "grid" in var.defaults else {}


def test_attention(benchmark, case):
    n, name, impl = case
    var = az.get(name)
    if DEVICE.type == "cpu" and var.quadratic and n > QUADRATIC_CAP_CPU:
        pytest.skip(f"{name} is quadratic in N: capped at N={QUADRATIC_CAP_CPU} on CPU")
    if impl == "triton" and DEVICE.type != "cuda" and not benchmark.disabled:
        # a smoke run (--benchmark-disable) still calls it once through the interpreter
        pytest.skip("triton is benchmarked on CUDA only (the CPU interpreter is not a fast path)")
    opts = options_for(var, n)
    gen = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(B, H, n, D, generator=gen).to(DEVICE) for _ in range(3))

    if impl == "ane":
        args = tuple(az.to_channels_first(t) for t in (q, k, v))
        fn = var.ane

        def call():
            return fn(*args, H, **opts)

        def as_bhnd(out):
            return az.from_channels_first(out, H)

    else:
        # reference, fast or triton (all (B, H, N, D)), the PyTorch form of a fast path
        # that runs the native kernel, or a peer from bench/peers.py
        if impl == "fast_torch":

            def fn(q, k, v, **o):
                return var.fast_fn.torch_form(q, k, v, **var.resolve_opts(q, k, o))

        else:
            fn = PEERS[name][impl] if impl in PEERS.get(name, ()) else getattr(var, impl)

        def call():
            return fn(q, k, v, **opts)

        def as_bhnd(out):
            return out

    out = as_bhnd(call())
    assert out.shape == (B, H, n, D), f"{name}/{impl} returned shape {tuple(out.shape)}"
    head = slice(0, CHECK_HEADS)
    qs, ks, vs = (t[:, head].contiguous() for t in (q, k, v))
    ref64 = var.reference(qs.double(), ks.double(), vs.double(), **opts)
    # the fp32 baseline on the same full tensors as `out`: BLAS blocking depends on the
    # batch, so a 2-head slice computed alone may round differently from the same heads
    # inside the full call
    ref32 = var.reference(q, k, v, **opts)[:, head]
    err = (out[:, head].double() - ref64).abs().max().item()
    base = (ref32.double() - ref64).abs().max().item()
    # floor: 32 fp32 ulps of the output. Two fp32 evaluations of the very same reference on
    # the same inputs were seen to differ by ~15 ulps (elu_linear, N=63: threaded BLAS
    # reductions), so a lucky baseline must not fail an equally exact implementation.
    ulp = torch.finfo(torch.float32).eps * ref64.abs().max().item()
    assert err <= 2 * base + 32 * ulp, (
        f"{name}/{impl} at N={n}: max error {err:.3g} vs float64 reference; plain fp32 "
        f"reference error {base:.3g}"
    )

    benchmark.group = f"N={n} {name}"  # a variant's implementations and peers side by side
    flops, nbytes = var.flops(B, H, n, D, **opts), var.bytes(B, H, n, D, torch.float32, **opts)
    benchmark.extra_info.update(
        variant=name,
        impl=impl,
        N=n,
        B=B,
        H=H,
        D=D,
        dtype="float32",
        device=str(DEVICE),
        flops=flops,
        bytes=nbytes,
        grid=list(opts["grid"]) if "grid" in opts else None,
        max_err_vs_fp64=err,
    )
    if DEVICE.type == "cuda":

        def timed():
            call()
            torch.cuda.synchronize(DEVICE)

    else:
        timed = call
    benchmark(timed)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gflops_at_median"] = flops / stats.stats.median / 1e9
