"""Flash-style non-causal attention forward in Triton: softmax, per-frame softmax and sigmoid.

One kernel, three modes chosen at compile time:

* softmax: online softmax over key blocks (exp2, running max and row sum, fp32 accumulators);
* frame: the same, but a query only sees the keys of its own latent frame (tokens in
  (t, y, x) raster order, F = H*W tokens per frame). A query block only visits the key range
  of the frame(s) it covers; a block that straddles frames masks by frame id;
* sigmoid: sigmoid(s * scale + bias) weights, no running max and no row sum.

Any N works (masked tails). Head dims 16..128 are split into a power-of-two part and a
padded remainder inside the kernel (72 = 64 + 16 with 8 masked columns), so the inputs are
never copied or padded and a non-power-of-two head dim pays for 80 columns, not 128.

`ReferenceBackward` pairs a forward with a backward that recomputes through a float
reference with autograd; the caller (attention_zoo) passes both, so nothing here imports
the zoo.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MODE_SOFTMAX = 0
MODE_FRAME = 1
MODE_SIGMOID = 2
_MODES = {"softmax": MODE_SOFTMAX, "frame": MODE_FRAME, "sigmoid": MODE_SIGMOID}

MIN_HEAD_DIM = 16  # tl.dot needs inner dimensions of at least 16
MAX_HEAD_DIM = 128  # one (BLOCK_M, D) query tile and accumulator per program
LOG2E = 1.4426950408889634

# Block sizes for the CPU interpreter: large enough that a test runs few interpreted
# iterations, small enough that N = 257 or 1025 still has several blocks and a masked tail.
INTERPRET_BLOCK_M = 64
INTERPRET_BLOCK_N = 64


def head_dim_split(d: int) -> tuple[int, int]:
    """Splits a head dim into (a, b): a = largest power of two <= d, b = the remainder
    rounded up to a power of two (>= 16 for tl.dot), or 0 when d is a power of two.
    72 -> (64, 16), 96 -> (64, 32), 100 -> (64, 64), 64 -> (64, 0)."""
    a = 1 << (d.bit_length() - 1)
    rest = d - a
    if rest == 0:
        return a, 0
    return a, max(MIN_HEAD_DIM, triton.next_power_of_2(rest))


@triton.jit
def _attn_step(
    acc,
    acc2,
    m_i,
    l_i,
    q,
    q2,
    k_base,
    v_base,
    start_n,
    hi,
    offs_m,
    qk_scale,
    bias2,
    FRAME,
    MODE: tl.constexpr,
    MASK_N: tl.constexpr,
    MASK_FRAME: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_D2: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_DV2: tl.constexpr,
    DOT_UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """One key block: scores, weights and the update of the accumulators."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_n[:, None] < hi
    # k: (BLOCK_N, BLOCK_D), rows contiguous with stride D
    if MASK_N:
        k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :], mask=row_ok, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * DV + offs_dv[None, :], mask=row_ok, other=0.0)
    else:
        k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :])
        v = tl.load(v_base + offs_n[:, None] * DV + offs_dv[None, :])
    if DOT_UPCAST:
        k = k.to(tl.float32)
    if MASK_FRAME:
        # The block's keys span several frames, and p @ v multiplies other frames' values
        # by a zero weight: 0 * NaN would poison rows that never see a non-finite value.
        # Multiply finite values only and poison, below, the rows whose own keys hold one.
        v_ok = (v == v) & (tl.abs(v) < float("inf"))
        v_bad = tl.where(v_ok, 0.0, 1.0)  # fp32: counted exactly on every dtype
        v = tl.where(v_ok, v, 0.0).to(v.dtype)
    s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        m2 = offs_d2[None, :] < D
        if MASK_N:
            m2 = m2 & row_ok
        k2 = tl.load(k_base + offs_n[:, None] * D + offs_d2[None, :], mask=m2, other=0.0)
        if DOT_UPCAST:
            k2 = k2.to(tl.float32)
        s += tl.dot(q2, tl.trans(k2), input_precision=INPUT_PRECISION)
    s = s * qk_scale  # (BLOCK_M, BLOCK_N), log2 units

    if MASK_FRAME:
        valid = (offs_m[:, None] // FRAME) == (offs_n[None, :] // FRAME)
        valid = valid & (offs_n[None, :] < hi)
    elif MASK_N:
        valid = offs_n[None, :] < hi

    if MODE == 2:
        p = 1.0 / (1.0 + tl.math.exp2(-(s + bias2)))
        if MASK_N:
            p = tl.where(valid, p, 0.0)
    else:
        if MASK_N:
            s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASK_N:
            # a row whose keys are all masked so far keeps max -inf; exp2(-inf - 0) = 0
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_use = m_new
        p = tl.math.exp2(s - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
        acc = acc * alpha[:, None]
        if BLOCK_DV2 > 0:
            acc2 = acc2 * alpha[:, None]

    if DOT_UPCAST:
        v = v.to(tl.float32)
        pv = p
    else:
        pv = p.to(v.dtype)
    acc += tl.dot(pv, v, input_precision=INPUT_PRECISION)
    if MASK_FRAME:
        hit = tl.dot(valid.to(tl.float32), v_bad, input_precision=INPUT_PRECISION)
        acc = tl.where(hit > 0, float("nan"), acc)
    if BLOCK_DV2 > 0:
        offs_dv2 = BLOCK_DV + tl.arange(0, BLOCK_DV2)
        mv2 = offs_dv2[None, :] < DV
        if MASK_N:
            mv2 = mv2 & row_ok
        v2 = tl.load(v_base + offs_n[:, None] * DV + offs_dv2[None, :], mask=mv2, other=0.0)
        if MASK_FRAME:
            v2_ok = (v2 == v2) & (tl.abs(v2) < float("inf"))
            v2_bad = tl.where(v2_ok, 0.0, 1.0)
            v2 = tl.where(v2_ok, v2, 0.0).to(v2.dtype)
        if DOT_UPCAST:
            v2 = v2.to(tl.float32)
        acc2 += tl.dot(pv, v2, input_precision=INPUT_PRECISION)
        if MASK_FRAME:
            hit = tl.dot(valid.to(tl.float32), v2_bad, input_precision=INPUT_PRECISION)
            acc2 = tl.where(hit > 0, float("nan"), acc2)
    return acc, acc2, m_i, l_i


@triton.jit
def _attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    N_Q,
    N_K,
    qk_scale,
    bias2,
    FRAME,
    MODE: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_D2: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_DV2: tl.constexpr,
    DOT_UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """Q (BH, N_Q, D), K (BH, N_K, D), V (BH, N_K, DV), O (BH, N_Q, DV), all contiguous.
    Grid (cdiv(N_Q, BLOCK_M), BH). D and DV are constexpr so row strides have known
    divisibility and the loads vectorise."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_base = Q + bh * N_Q * D
    k_base = K + bh * N_K * D
    v_base = V + bh * N_K * DV
    o_base = O + bh * N_Q * DV
    m_ok = offs_m[:, None] < N_Q

    q = tl.load(q_base + offs_m[:, None] * D + offs_d[None, :], mask=m_ok, other=0.0)
    if DOT_UPCAST:
        q = q.to(tl.float32)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        q2 = tl.load(
            q_base + offs_m[:, None] * D + offs_d2[None, :],
            mask=m_ok & (offs_d2[None, :] < D),
            other=0.0,
        )
        if DOT_UPCAST:
            q2 = q2.to(tl.float32)
    else:
        q2 = q

    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    if BLOCK_DV2 > 0:
        acc2 = tl.zeros([BLOCK_M, BLOCK_DV2], dtype=tl.float32)
    else:
        acc2 = acc
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    if MODE == 1:
        # keys of the frames this query block covers: [first frame start, last frame end)
        f_lo = start_m // FRAME
        f_hi = (tl.minimum(start_m + BLOCK_M, N_Q) - 1) // FRAME
        lo = f_lo * FRAME
        hi = (f_hi + 1) * FRAME
        straddles = f_hi > f_lo
    else:
        lo = 0
        hi = N_K
        straddles = False
    n_full = lo + ((hi - lo) // BLOCK_N) * BLOCK_N

    if straddles:
        for start_n in range(lo, hi, BLOCK_N):
            acc, acc2, m_i, l_i = _attn_step(
                acc, acc2, m_i, l_i, q, q2, k_base, v_base, start_n, hi, offs_m,
                qk_scale, bias2, FRAME, MODE, True, True, D, DV, BLOCK_N,
                BLOCK_D, BLOCK_D2, BLOCK_DV, BLOCK_DV2, DOT_UPCAST, INPUT_PRECISION,
            )  # fmt: skip
    else:
        # whole key blocks need no mask; only the tail block does
        for start_n in range(lo, n_full, BLOCK_N):
            acc, acc2, m_i, l_i = _attn_step(
                acc, acc2, m_i, l_i, q, q2, k_base, v_base, start_n, hi, offs_m,
                qk_scale, bias2, FRAME, MODE, False, False, D, DV, BLOCK_N,
                BLOCK_D, BLOCK_D2, BLOCK_DV, BLOCK_DV2, DOT_UPCAST, INPUT_PRECISION,
            )  # fmt: skip
        for start_n in range(n_full, hi, BLOCK_N):
            acc, acc2, m_i, l_i = _attn_step(
                acc, acc2, m_i, l_i, q, q2, k_base, v_base, start_n, hi, offs_m,
                qk_scale, bias2, FRAME, MODE, True, False, D, DV, BLOCK_N,
                BLOCK_D, BLOCK_D2, BLOCK_DV, BLOCK_DV2, DOT_UPCAST, INPUT_PRECISION,
            )  # fmt: skip

    if MODE != 2:
        # l_i is 0 only on padding rows past N_Q (never stored); keep them finite
        inv_l = 1.0 / tl.where(l_i > 0.0, l_i, 1.0)
        acc = acc * inv_l[:, None]
        if BLOCK_DV2 > 0:
            acc2 = acc2 * inv_l[:, None]
    tl.store(
        o_base + offs_m[:, None] * DV + offs_dv[None, :], acc.to(O.dtype.element_ty), mask=m_ok
    )
    if BLOCK_DV2 > 0:
        offs_dv2 = BLOCK_DV + tl.arange(0, BLOCK_DV2)
        tl.store(
            o_base + offs_m[:, None] * DV + offs_dv2[None, :],
            acc2.to(O.dtype.element_ty),
            mask=m_ok & (offs_dv2[None, :] < DV),
        )


def _cuda_configs() -> list:
    # H100-oriented: 128-row query tiles, 64/128-key tiles, 4-8 warps, 2-4 pipeline stages.
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in (
            (128, 64, 4, 3),
            (128, 64, 8, 3),
            (128, 128, 8, 3),
            (128, 128, 8, 2),
            (128, 64, 8, 4),
            (64, 64, 4, 3),
        )
    ]


_attn_fwd_tuned = triton.autotune(
    configs=_cuda_configs(), key=["N_Q", "N_K", "FRAME", "MODE", "D", "DV"]
)(_attn_fwd_kernel)


def _interpreted() -> bool:
    return not isinstance(_attn_fwd_kernel, triton.runtime.JITFunction)


def _unsupported(q: torch.Tensor, v: torch.Tensor) -> tuple[type[Exception], str] | None:
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return TypeError, (
            f"q, k, v must be float16, bfloat16 or float32, got {q.dtype}; "
            "use impl='reference' for float64"
        )
    for name, dim in (("D", q.shape[-1]), ("Dv", v.shape[-1])):
        if not MIN_HEAD_DIM <= dim <= MAX_HEAD_DIM:
            return ValueError, (
                f"head dim {name} must be in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], "
                f"got {name}={dim} (q {tuple(q.shape)}, v {tuple(v.shape)})"
            )
    if not q.is_cuda and not _interpreted():
        return ValueError, (
            f"q is on {q.device}; the Triton kernels need CUDA tensors, or "
            "TRITON_INTERPRET=1 set before `kernels` is imported to run on CPU"
        )
    return None


def unsupported_reason(q: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the Triton kernels here cannot take these inputs, or None if they can: they need
    float16, bfloat16 or float32, head dims D and Dv in [16, 128], and a device Triton runs
    on (CUDA, or CPU under TRITON_INTERPRET=1). q: (B, H, N, D); v: (B, H, N, Dv)."""
    found = _unsupported(q, v)
    return None if found is None else found[1]


def check_triton_inputs(fn: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raises TypeError (dtype) or ValueError (head dims, device) naming the launcher `fn`
    and what it needs."""
    found = _unsupported(q, v)
    if found is not None:
        exc, why = found
        raise exc(f"{fn}: {why}")


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mode: str,
    scale: float,
    bias: float = 0.0,
    frame: int = 1,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """The kernel launch, without autograd.

    q: (B, H, Nq, D); k: (B, H, Nk, D); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv) in q's dtype.
    mode: "softmax", "frame" (`frame` = tokens per frame, Nq = Nk) or "sigmoid" (`bias`).
    block_m, block_n override the tile sizes (tests); by default CUDA autotunes and the
    interpreter uses INTERPRET_BLOCK_M/N.
    """
    b, h, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty((b, h, nq, dv), dtype=q.dtype, device=q.device)
    bd, bd2 = head_dim_split(d)
    bdv, bdv2 = head_dim_split(dv)
    args = dict(
        MODE=_MODES[mode],
        D=d,
        DV=dv,
        BLOCK_D=bd,
        BLOCK_D2=bd2,
        BLOCK_DV=bdv,
        BLOCK_DV2=bdv2,
        # Triton 3.9's interpreter multiplies bfloat16 bit patterns as integers: upcast there
        DOT_UPCAST=q.dtype == torch.bfloat16 and not q.is_cuda,
        # fp32 inputs ask for fp32 accuracy: no TF32 rounding of q, k, v
        INPUT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    scalars = (nq, nk, scale * LOG2E, bias * LOG2E, frame)
    if q.is_cuda and block_m is None and block_n is None:
        grid = lambda meta: (triton.cdiv(nq, meta["BLOCK_M"]), b * h)
        _attn_fwd_tuned[grid](q, k, v, out, *scalars, **args)
    else:
        bm = block_m or INTERPRET_BLOCK_M
        bn = block_n or INTERPRET_BLOCK_N
        grid = (triton.cdiv(nq, bm), b * h)
        _attn_fwd_kernel[grid](q, k, v, out, *scalars, BLOCK_M=bm, BLOCK_N=bn, **args)
    return out


class ReferenceBackward(torch.autograd.Function):
    """Forward through a Triton kernel; backward by autograd through the float reference
    (recomputed), so gradients are exactly the reference's."""

    @staticmethod
    def forward(ctx, forward_fn, reference_fn, q, k, v):
        ctx.reference_fn = reference_fn
        ctx.save_for_backward(q, k, v)
        return forward_fn(q, k, v)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        needs = ctx.needs_input_grad[2:]
        with torch.enable_grad():
            inputs = [
                t.detach().requires_grad_(n) for t, n in zip(ctx.saved_tensors, needs, strict=True)
            ]
            out = ctx.reference_fn(*inputs)
            wrt = [t for t, n in zip(inputs, needs, strict=True) if n]
            grads = iter(torch.autograd.grad(out, wrt, grad_out))
        return None, None, *(next(grads) if n else None for n in needs)
