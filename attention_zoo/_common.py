"""Helpers shared by the variant modules: compute precision and the linear-attention core."""

from __future__ import annotations

import math

import torch

# exp(x) = 2^(x LOG2E): the fast paths' exponentials go through torch's exp2 kernel, which
# ran 2.3x faster than its exp on a Zen 4 EPYC (elu_linear.elu1_inplace has the numbers)
LOG2E = 1.0 / math.log(2.0)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32 (fp32 accumulation)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    dt = compute_dtype(ts[0].dtype)
    return tuple(t.to(dt) for t in ts)


def linear_attention(phi_q, phi_k, v, eps: float) -> torch.Tensor:
    """Non-causal linear attention the efficient way, O(N F Dv) per head.

    phi_q (B, H, Nq, F), phi_k (B, H, Nk, F), v (B, H, Nk, Dv), all in the compute dtype.
    out_i = phi_q_i S / (phi_q_i . z + eps), S = phi_k^T v (F x Dv), z = sum_j phi_k_j.
    """
    state = torch.einsum("bhnf,bhnd->bhfd", phi_k, v)  # (B, H, F, Dv)
    z = phi_k.sum(dim=-2)  # (B, H, F)
    num = torch.einsum("bhnf,bhfd->bhnd", phi_q, state)  # (B, H, Nq, Dv)
    den = torch.einsum("bhnf,bhf->bhn", phi_q, z).unsqueeze(-1)  # (B, H, Nq, 1)
    return num / (den + eps)


def linear_quadratic_form(phi_q, phi_k, v, eps: float) -> torch.Tensor:
    """The defining O(N^2) form of linear attention: A = phi_q phi_k^T, out = A v / (A 1 + eps).
    For tests and for explaining the math; never used on a hot path."""
    a = phi_q @ phi_k.transpose(-1, -2)  # (B, H, Nq, Nk)
    return (a @ v) / (a.sum(dim=-1, keepdim=True) + eps)


def linear_flops(B, H, N, F, Dv) -> int:
    # state 2 N F Dv, key sum N F, numerator 2 N F Dv, denominator 2 N F, divide N Dv
    return B * H * (4 * N * F * Dv + 3 * N * F + N * Dv)


def io_bytes(B, H, N, D, itemsize) -> int:
    # read q, k, v once and write the output once
    return 4 * B * H * N * D * itemsize


# -- Triton launchers: the zoo's side of kernels/ (imported lazily: no Triton needed here) --


def triton_call(fn_name: str, forward, reference, q, k, v) -> torch.Tensor:
    """forward(q, k, v) through a Triton kernel, with gradients from autograd through
    reference(q, k, v) (kernels.triton_softmax.ReferenceBackward). The inputs are checked
    first against what the kernels take; errors name the launcher `fn_name`."""
    from kernels.triton_softmax import ReferenceBackward, check_triton_inputs

    check_triton_inputs(fn_name, q, k, v)
    return ReferenceBackward.apply(forward, reference, q, k, v)


def linear_triton(fn_name: str, phi: str, reference_fn, q, k, v, eps: float, **feature_opts):
    """A linear variant whose feature map the kernel fuses (phi: "relu", "elu", "focused")."""
    from kernels.triton_linear import linear_forward

    p = feature_opts.get("p", 1.0)
    return triton_call(
        fn_name,
        lambda q_, k_, v_: linear_forward(q_, k_, v_, eps, phi, p),
        lambda q_, k_, v_: reference_fn(q_, k_, v_, eps=eps, **feature_opts),
        q,
        k,
        v,
    )


def featured_linear_triton(fn_name: str, feature_fn, reference_fn, q, k, v, eps, **feature_opts):
    """A linear variant whose features are computed outside the kernel (feature_fn, fp32;
    cosformer, performer) and fed to its identity path."""
    from kernels.triton_linear import check_features, linear_forward

    def forward(q_, k_, v_):
        phi_q, phi_k = feature_fn(q_, k_, **feature_opts)
        check_features(fn_name, phi_q)
        return linear_forward(phi_q, phi_k, v_, eps, "identity")

    return triton_call(
        fn_name,
        forward,
        lambda q_, k_, v_: reference_fn(q_, k_, v_, eps=eps, **feature_opts),
        q,
        k,
        v,
    )


def needs_grad(*ts: torch.Tensor) -> bool:
    """Whether autograd would record an op on `ts`."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def inplace_ok(*ts: torch.Tensor) -> bool:
    """Whether a fast path on `ts` may take its in-place shortcuts (steps written into its
    own buffers and into views of them): in eager mode without autograd only. Autograd
    needs the values an in-place step overwrites; a tracer (torch.compile, torch.export
    and so the ONNX exporter) turns a write into a view into a scatter of the whole buffer
    (in ONNX a ScatterND among three full-size Transposes: ~150 ms of Transpose per
    mobilei2v linear block in an onnxruntime profile on a 2-core Xeon), where the
    out-of-place step is one node."""
    tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()
    return not tracing and not needs_grad(*ts)


# Width, in floats, that the eager fast paths round a GEMM's output columns up to: one
# AVX-512 register, one 64-byte cache line. torch's CPU matmul (MKL) runs the (N x D) @
# (D x Dv + 1) product of a linear form faster with its key state zero-padded to such a
# width: at B=1 H=16 N=2760 D=72, fp32, 2 threads, 73 -> 80 columns took 3.58-3.69 vs
# 4.08-4.13 ms in two runs on a 2-core AMD EPYC (Zen 4); there D = 32 and 64 (33 -> 48,
# 65 -> 80) ran the same or up to 3% slower, and D = 128 (129 -> 144) 4% faster.
PANEL = 16


def padded_width(n: int) -> int:
    """n rounded up to a multiple of PANEL."""
    return -(-n // PANEL) * PANEL


def padded_state(kv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A linear form's key state [kv, z] (kv (..., F, Dv), z (..., F): the key sums) in a
    zeroed (..., F, padded_width(Dv + 1)) buffer, so that phi_q @ state gives the numerator
    in its first Dv columns and the denominator in column Dv (the rest are zeros)."""
    dv = kv.shape[-1]
    state = kv.new_zeros(*kv.shape[:-1], padded_width(dv + 1))
    state[..., :dv] = kv
    state[..., dv] = z
    return state


def native_usable(*ts: torch.Tensor) -> bool:
    """Whether a fast path may run the fused CPU kernel (kernels.cpu_linear) on `ts` (the
    upcast inputs): CPU float32, where `inplace_ok` (eager, no autograd: the kernel has no
    backward and a tracer cannot see into it), and the kernel builds and loads here (it is
    compiled at first use; where it cannot be, the PyTorch forms run)."""
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in ts):
        return False
    if not inplace_ok(*ts):
        return False
    from kernels import cpu_linear

    return cpu_linear.available()


def native_linear(q, k, v, eps: float, feature: str, **kw) -> torch.Tensor:
    """kernels.cpu_linear.linear_forward (imported on first use)."""
    from kernels.cpu_linear import linear_forward

    return linear_forward(q, k, v, eps, feature, **kw)


def with_native(torch_fast, native):
    """A fast path that runs `native(q, k, v, eps, **opts)` (the fused CPU kernel, on the
    upcast inputs) where `native_usable`, and `torch_fast(q, k, v, eps, **opts)` (the
    PyTorch form) otherwise. The PyTorch form stays reachable as `.torch_form`, so tests
    and benchmarks can hold it to the same rules."""

    def fast(q, k, v, eps, **opts):
        dtype = q.dtype
        qc, kc, vc = upcast(q, k, v)
        if native_usable(qc, kc, vc):
            return native(qc, kc, vc, eps, **opts).to(dtype)
        return torch_fast(q, k, v, eps, **opts)

    fast.__doc__ = torch_fast.__doc__ + (
        " Runs the fused CPU kernel (kernels.cpu_linear) for float32 CPU inputs in eager "
        "mode without autograd where it builds; `.torch_form` is the PyTorch form."
    )
    fast.torch_form = torch_fast
    return fast


def linear_fast(feature_fn, inplace_feature_fn=None, native: str | None = None):
    """Builds a linear variant's fast CPU path from its feature map: the matmul form with the
    key state padded by a column of key sums (the same as padding V with a column of ones,
    without concatenating over the sequence), so one matmul per side gives numerator and
    denominator:

        S1 = [phi_k^T v, phi_k^T 1]   (F x (Dv + 1));   [num, den] = phi_q S1

    Two batched GEMMs and one division, no einsum (whose CPU and onnxruntime lowerings
    transpose their operands). Where `inplace_ok` (eager, no autograd) the feature map is
    `inplace_feature_fn` where given (the same math with its steps in place in its own
    first buffer; it never writes to its inputs), S1 is zero-padded to padded_width(Dv + 1)
    columns (padded_state: MKL's faster width), the division runs in place in the GEMM's
    output and the result is a view of it: no N-sized buffer beyond those the math needs.
    Under autograd or a tracer (export) the steps run out of place at the exact width (an
    exported graph gets no padding). Same math and compute precision as the reference
    (keys times values first, fp32 or wider).

    Given `native`, float32 inputs in eager mode without autograd run the fused CPU kernel
    instead (with_native): with the feature map fused in ("relu", "elu1", "focus": the
    feature options are passed on) or, for "identity", on features from the in-place map."""

    def fast(q, k, v, eps, **feature_opts):
        dtype = q.dtype
        q, k, v = upcast(q, k, v)
        inplace = inplace_ok(q, k, v)
        features = inplace_feature_fn if inplace and inplace_feature_fn else feature_fn
        phi_q, phi_k = features(q, k, **feature_opts)
        kv = phi_k.transpose(-1, -2) @ v  # (B, H, F, Dv)
        z = phi_k.sum(dim=-2)  # (B, H, F)
        dv = kv.shape[-1]
        if not inplace:
            out = phi_q @ torch.cat([kv, z.unsqueeze(-1)], dim=-1)  # (B, H, Nq, Dv + 1)
            return (out[..., :dv] / (out[..., dv:] + eps)).to(dtype)
        out = phi_q @ padded_state(kv, z)  # (B, H, Nq, padded_width(Dv + 1))
        return out[..., :dv].div_(out[..., dv : dv + 1] + eps).to(dtype)

    fast.__doc__ = (
        "Fast CPU path. q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv). "
        "Matmul form with the key state padded by the key sums (numerator and "
        "denominator from one GEMM)."
    )
    if native is None:
        return fast

    def native_fast(q, k, v, eps, **feature_opts):
        if native == "identity":
            phi_q, phi_k = (inplace_feature_fn or feature_fn)(q, k, **feature_opts)
            return native_linear(phi_q, phi_k, v, eps, "identity")
        return native_linear(q, k, v, eps, native, **feature_opts)

    return with_native(fast, native_fast)


def linear_reference(feature_fn):
    """Builds a linear variant's reference from its feature map:
    feature_fn(q, k, **feature_opts) -> (phi_q, phi_k) in the compute dtype."""

    def reference(q, k, v, eps, **feature_opts):
        dtype = q.dtype
        q, k, v = upcast(q, k, v)
        phi_q, phi_k = feature_fn(q, k, **feature_opts)
        return linear_attention(phi_q, phi_k, v, eps).to(dtype)

    reference.__doc__ = (
        "Reference. q, k: (B, H, Nq|Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv). "
        "Feature-mapped keys times values first (O(N D^2)); float32 or wider accumulation."
    )
    return reference
