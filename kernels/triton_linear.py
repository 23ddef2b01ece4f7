"""Non-causal linear attention forward in Triton for the feature-map family.

    out_i = phi(q_i) S / (phi(q_i) . z + eps),  S = sum_j phi(k_j)^T v_j (F x Dv),
                                               z = sum_j phi(k_j)       (F)

Phase 1 (`_linear_state_kernel`, grid (B*H, n_splits, Dv tiles)) splits the keys of each
(batch, head) across programs, so the GPU fills even when B*H is small, and writes one
partial S and z per split in fp32; `torch.sum` over the split axis reduces them (a few
kilobytes per head, not worth a kernel). Phase 2 (`_linear_out_kernel`, same grid shape
over the queries) loads S and z once per program and streams its query rows.

Feature maps are fused into the loads (constexpr PHI): ReLU, ELU + 1, focused (ReLU(x)^p
rescaled per row to keep ||ReLU(x)||), and identity for features computed outside
(performer, cosformer, whose feature dim F differs from D). All math is fp32.

The zoo's launchers (attention_zoo/_common.py) wrap `linear_forward` in
kernels.triton_softmax.ReferenceBackward with the variant's reference and feature map,
which they pass in: nothing here imports the zoo.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_softmax import head_dim_split

PHI_IDENTITY = 0
PHI_RELU = 1
PHI_ELU = 2
PHI_FOCUSED = 3
_PHIS = {"identity": PHI_IDENTITY, "relu": PHI_RELU, "elu": PHI_ELU, "focused": PHI_FOCUSED}

MAX_FEATURES = 256  # two 128-wide feature parts; wider features would need F tiling
MAX_INT_POWER = 8  # integral focusing powers up to this use repeated products (exact)

# A split's partial state costs 2 * F * Dv * 4 bytes (write + read) against 4 * D bytes per
# key row of 16-bit k, v: at least MIN_ROWS_PER_FEATURE * max(F, Dv) rows per split keeps
# that overhead near 10%.
MIN_ROWS_PER_FEATURE = 16
PROGRAMS_PER_SM = 2

# Interpreter tiles: few interpreted iterations, still several blocks at N = 257.
INTERPRET_BLOCK = 64
CUDA_BLOCK_N = 64  # rows per tile on GPU, keys (phase 1) and queries (phase 2)


@triton.jit
def _phi(x, mask, P, PHI: tl.constexpr, P_INT: tl.constexpr):
    """Elementwise part of the feature map on an fp32 tile; masked entries come out 0. For
    the focused map this is ReLU(x)^p, rescaled per row by `_features`. NaN inputs give NaN
    features, as torch.relu / F.elu do in the reference (tl.maximum's default drops NaN)."""
    if PHI == 1:
        f = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
    elif PHI == 2:
        neg = tl.minimum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
        f = tl.where(x > 0.0, x + 1.0, tl.math.exp2(neg * 1.4426950408889634))  # e^x
        f = tl.where(mask, f, 0.0)  # elu(0) + 1 = 1 on padding
    elif PHI == 3:
        r = tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)
        if P_INT > 0:
            f = r
            for _ in tl.static_range(P_INT - 1):
                f = f * r
        else:
            rp = tl.math.exp2(
                P * tl.math.log2(tl.maximum(r, 1e-30, propagate_nan=tl.PropagateNan.ALL))
            )
            f = tl.where(r == 0.0, 0.0, rp)
    else:
        f = x
    return f


@triton.jit
def _features(xa, xb, mask_a, mask_b, P, PHI: tl.constexpr, P_INT: tl.constexpr, FB: tl.constexpr):
    """phi of a row tile held in two column parts (a: the first FA features, b: the rest,
    absent when FB == 0). The focused map's norm ratio ||ReLU x|| / ||ReLU(x)^p|| spans
    both parts."""
    fa = _phi(xa, mask_a, P, PHI, P_INT)
    fb = fa
    if FB > 0:
        fb = _phi(xb, mask_b, P, PHI, P_INT)
    if PHI == 3:
        ra = tl.maximum(xa, 0.0, propagate_nan=tl.PropagateNan.ALL)
        n1 = tl.sum(ra * ra, 1)
        n2 = tl.sum(fa * fa, 1)
        if FB > 0:
            rb = tl.maximum(xb, 0.0, propagate_nan=tl.PropagateNan.ALL)
            n1 += tl.sum(rb * rb, 1)
            n2 += tl.sum(fb * fb, 1)
        # n2 == 0 only for all-zero rows, where the features are 0 too
        ratio = tl.sqrt(n1) / tl.sqrt(tl.where(n2 > 0.0, n2, 1.0))
        fa = fa * ratio[:, None]
        if FB > 0:
            fb = fb * ratio[:, None]
    return fa, fb


@triton.jit
def _linear_state_kernel(
    K,
    V,
    S_PART,
    Z_PART,
    N_K,
    ROWS_PER_SPLIT,
    P,
    F: tl.constexpr,
    DV: tl.constexpr,
    PHI: tl.constexpr,
    P_INT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FA: tl.constexpr,
    FB: tl.constexpr,
    DA: tl.constexpr,
    DB: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """K (BH, N_K, F), V (BH, N_K, DV) contiguous -> S_PART (BH, SPLITS, F, DV) and
    Z_PART (BH, SPLITS, F), fp32. Grid (BH, SPLITS, DV tiles).

    Features are held as parts a = [0, FA) and b = [FA, FA + FB), values as a = this
    program's tile [pid * DA, pid * DA + DA) and b = [DA, DA + DB) (DB > 0 only with one
    tile), so 72 features cost 64 + 16 columns, not 128. The state is four blocks
    S_aa, S_ab, S_ba, S_bb."""
    bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    pid_dv = tl.program_id(2)
    offs_fa = tl.arange(0, FA)
    offs_fb = offs_fa  # placeholder when there is no part b
    if FB > 0:
        offs_fb = FA + tl.arange(0, FB)
    offs_da = pid_dv * DA + tl.arange(0, DA)
    offs_db = offs_da
    if DB > 0:
        offs_db = DA + tl.arange(0, DB)
    k_base = K + bh * N_K * F
    v_base = V + bh * N_K * DV
    row_lo = split * ROWS_PER_SPLIT
    row_hi = tl.minimum(row_lo + ROWS_PER_SPLIT, N_K)

    s_aa = tl.zeros([FA, DA], dtype=tl.float32)
    s_ab = s_aa
    s_ba = s_aa
    s_bb = s_aa
    if DB > 0:
        s_ab = tl.zeros([FA, DB], dtype=tl.float32)
    if FB > 0:
        s_ba = tl.zeros([FB, DA], dtype=tl.float32)
        if DB > 0:
            s_bb = tl.zeros([FB, DB], dtype=tl.float32)
    z_a = tl.zeros([FA], dtype=tl.float32)
    z_b = z_a
    if FB > 0:
        z_b = tl.zeros([FB], dtype=tl.float32)
    for start in range(row_lo, row_hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n[:, None] < row_hi
        mask_a = n_ok & (offs_fa[None, :] < F)
        mask_b = n_ok & (offs_fb[None, :] < F)
        ka = tl.load(k_base + offs_n[:, None] * F + offs_fa[None, :], mask=mask_a, other=0.0)
        kb = ka
        if FB > 0:
            kb = tl.load(k_base + offs_n[:, None] * F + offs_fb[None, :], mask=mask_b, other=0.0)
        phi_a, phi_b = _features(
            ka.to(tl.float32), kb.to(tl.float32), mask_a, mask_b, P, PHI, P_INT, FB
        )
        va = tl.load(
            v_base + offs_n[:, None] * DV + offs_da[None, :],
            mask=n_ok & (offs_da[None, :] < DV),
            other=0.0,
        ).to(tl.float32)
        s_aa += tl.dot(tl.trans(phi_a), va, input_precision=INPUT_PRECISION)
        z_a += tl.sum(phi_a, 0)
        if FB > 0:
            s_ba += tl.dot(tl.trans(phi_b), va, input_precision=INPUT_PRECISION)
            z_b += tl.sum(phi_b, 0)
        if DB > 0:
            vb = tl.load(
                v_base + offs_n[:, None] * DV + offs_db[None, :],
                mask=n_ok & (offs_db[None, :] < DV),
                other=0.0,
            ).to(tl.float32)
            s_ab += tl.dot(tl.trans(phi_a), vb, input_precision=INPUT_PRECISION)
            if FB > 0:
                s_bb += tl.dot(tl.trans(phi_b), vb, input_precision=INPUT_PRECISION)

    part = bh * tl.num_programs(1) + split
    s_base = S_PART + part * F * DV
    z_base = Z_PART + part * F
    fa_ok = offs_fa[:, None] < F
    fb_ok = offs_fb[:, None] < F
    da_ok = offs_da[None, :] < DV
    db_ok = offs_db[None, :] < DV
    tl.store(s_base + offs_fa[:, None] * DV + offs_da[None, :], s_aa, mask=fa_ok & da_ok)
    if DB > 0:
        tl.store(s_base + offs_fa[:, None] * DV + offs_db[None, :], s_ab, mask=fa_ok & db_ok)
    if FB > 0:
        tl.store(s_base + offs_fb[:, None] * DV + offs_da[None, :], s_ba, mask=fb_ok & da_ok)
        if DB > 0:
            tl.store(s_base + offs_fb[:, None] * DV + offs_db[None, :], s_bb, mask=fb_ok & db_ok)
    if pid_dv == 0:
        tl.store(z_base + offs_fa, z_a, mask=offs_fa < F)
        if FB > 0:
            tl.store(z_base + offs_fb, z_b, mask=offs_fb < F)


@triton.jit
def _linear_out_kernel(
    Q,
    S,
    Z,
    O,
    N_Q,
    ROWS_PER_SPLIT,
    P,
    eps,
    F: tl.constexpr,
    DV: tl.constexpr,
    PHI: tl.constexpr,
    P_INT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    FA: tl.constexpr,
    FB: tl.constexpr,
    DA: tl.constexpr,
    DB: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """Q (BH, N_Q, F), S (BH, F, DV) fp32, Z (BH, F) fp32 -> O (BH, N_Q, DV).
    Grid (BH, SPLITS, DV tiles); parts as in `_linear_state_kernel`. S and z are loaded
    once per program, which then streams its query rows."""
    bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    pid_dv = tl.program_id(2)
    offs_fa = tl.arange(0, FA)
    offs_fb = offs_fa  # placeholder when there is no part b
    if FB > 0:
        offs_fb = FA + tl.arange(0, FB)
    offs_da = pid_dv * DA + tl.arange(0, DA)
    offs_db = offs_da
    if DB > 0:
        offs_db = DA + tl.arange(0, DB)
    fa_ok = offs_fa[:, None] < F
    fb_ok = offs_fb[:, None] < F
    da_ok = offs_da[None, :] < DV
    db_ok = offs_db[None, :] < DV
    s_base = S + bh * F * DV
    z_base = Z + bh * F
    s_aa = tl.load(s_base + offs_fa[:, None] * DV + offs_da[None, :], mask=fa_ok & da_ok, other=0.0)
    z_a = tl.load(z_base + offs_fa, mask=offs_fa < F, other=0.0)
    s_ab = s_aa
    s_ba = s_aa
    s_bb = s_aa
    z_b = z_a
    if DB > 0:
        s_ab = tl.load(
            s_base + offs_fa[:, None] * DV + offs_db[None, :], mask=fa_ok & db_ok, other=0.0
        )
    if FB > 0:
        s_ba = tl.load(
            s_base + offs_fb[:, None] * DV + offs_da[None, :], mask=fb_ok & da_ok, other=0.0
        )
        z_b = tl.load(z_base + offs_fb, mask=offs_fb < F, other=0.0)
        if DB > 0:
            s_bb = tl.load(
                s_base + offs_fb[:, None] * DV + offs_db[None, :], mask=fb_ok & db_ok, other=0.0
            )

    q_base = Q + bh * N_Q * F
    o_base = O + bh * N_Q * DV
    row_lo = split * ROWS_PER_SPLIT
    row_hi = tl.minimum(row_lo + ROWS_PER_SPLIT, N_Q)
    for start in range(row_lo, row_hi, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        m_ok = offs_m[:, None] < row_hi
        mask_a = m_ok & (offs_fa[None, :] < F)
        mask_b = m_ok & (offs_fb[None, :] < F)
        qa = tl.load(q_base + offs_m[:, None] * F + offs_fa[None, :], mask=mask_a, other=0.0)
        qb = qa
        if FB > 0:
            qb = tl.load(q_base + offs_m[:, None] * F + offs_fb[None, :], mask=mask_b, other=0.0)
        phi_a, phi_b = _features(
            qa.to(tl.float32), qb.to(tl.float32), mask_a, mask_b, P, PHI, P_INT, FB
        )
        num_a = tl.dot(phi_a, s_aa, input_precision=INPUT_PRECISION)  # (BLOCK_M, DA)
        den = tl.sum(phi_a * z_a[None, :], 1)
        if FB > 0:
            num_a += tl.dot(phi_b, s_ba, input_precision=INPUT_PRECISION)
            den += tl.sum(phi_b * z_b[None, :], 1)
        inv = 1.0 / (den + eps)
        o_ptrs = o_base + offs_m[:, None] * DV
        tl.store(o_ptrs + offs_da[None, :], (num_a * inv[:, None]).to(O.dtype.element_ty),
                 mask=m_ok & da_ok)  # fmt: skip
        if DB > 0:
            num_b = tl.dot(phi_a, s_ab, input_precision=INPUT_PRECISION)  # (BLOCK_M, DB)
            if FB > 0:
                num_b += tl.dot(phi_b, s_bb, input_precision=INPUT_PRECISION)
            tl.store(o_ptrs + offs_db[None, :], (num_b * inv[:, None]).to(O.dtype.element_ty),
                     mask=m_ok & db_ok)  # fmt: skip


def plan_splits(n: int, bh: int, tiles: int, block: int, min_rows: int, num_sms: int) -> int:
    """Rows per split for n rows of each of bh (batch, head) pairs, `tiles` Dv tiles each:
    enough splits to give every SM PROGRAMS_PER_SM programs, but no split shorter than
    min_rows (its partial state would cost more than its rows). A multiple of `block`."""
    want = triton.cdiv(PROGRAMS_PER_SM * num_sms, bh * tiles)
    splits = max(1, min(want, n // max(min_rows, block)))
    return triton.cdiv(triton.cdiv(n, block), splits) * block


def feature_split(f: int) -> tuple[int, int]:
    """Feature dim in two parts: a = min(128, largest power of two <= f), b = the rest
    rounded up to a power of two (>= 16 for tl.dot), 0 if none. 72 -> (64, 16),
    144 (cosFormer at D = 72) -> (128, 16), 256 -> (128, 128)."""
    a = min(128, 1 << (f.bit_length() - 1))
    rest = f - a
    return (a, 0) if rest == 0 else (a, max(16, triton.next_power_of_2(rest)))


def tiling(f: int, dv: int, phase: str) -> tuple[int, int, int, int, int]:
    """(FA, FB, DA, DB, Dv tiles) of one phase.

    Phase "state" has the features as the rows (M) of its dot, which Hopper's wgmma wants
    in multiples of 64: one part padded to a power of two. Phase "out" has them as the
    reduction (K): two parts (`feature_split`). Dv is split like a head dim (72 -> 64 + 16)
    while one program's state blocks stay within 16K fp32 elements (64 KB of registers),
    else it goes in 64-wide tiles across programs."""
    if phase == "state":
        fa, fb = max(16, triton.next_power_of_2(f)), 0
    else:
        fa, fb = feature_split(f)
    da, db = head_dim_split(dv)
    if (fa + fb) * (da + db) <= 1 << 14:
        return fa, fb, da, db, 1
    da = min(64, triton.next_power_of_2(dv))
    return fa, fb, da, 0, triton.cdiv(dv, da)


def linear_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eps: float,
    phi: str,
    p: float = 1.0,
    *,
    rows_per_split: int | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """The two launches, without autograd.

    q: (B, H, Nq, F); k: (B, H, Nk, F); v: (B, H, Nk, Dv) -> (B, H, Nq, Dv) in v's dtype.
    phi: "relu", "elu", "focused" (power p) or "identity" (q, k are features already).
    rows_per_split and block override the split plan and the tile rows (tests); the same
    values serve keys (phase 1) and queries (phase 2).
    """
    b, h, nq, f = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    tiles_k = tiling(f, dv, "state")
    tiles_q = tiling(f, dv, "out")
    on_cuda = q.is_cuda
    if block is None:
        block = CUDA_BLOCK_N if on_cuda else INTERPRET_BLOCK
    if rows_per_split is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count if on_cuda else 1
        min_rows = MIN_ROWS_PER_FEATURE * max(f, dv)
        split_k = plan_splits(nk, b * h, tiles_k[-1], block, min_rows, sms)
        split_q = plan_splits(nq, b * h, tiles_q[-1], block, block, sms)
    else:
        split_k = split_q = rows_per_split
    p_int = int(p) if float(p).is_integer() and 1 <= p <= MAX_INT_POWER else 0
    common = dict(
        F=f,
        DV=dv,
        PHI=_PHIS[phi],
        P_INT=p_int,
        # TF32 on 16-bit inputs keeps error well below the inputs' own rounding; fp32 inputs
        # ask for fp32 accuracy
        INPUT_PRECISION="ieee" if v.dtype == torch.float32 else "tf32",
    )

    def launch_args(fa, fb, da, db, dv_tiles):
        warps = 8 if (fa + fb) * (da + db) > 1 << 12 else 4
        return dict(FA=fa, FB=fb, DA=da, DB=db, num_warps=warps, **common)

    n_splits = triton.cdiv(nk, split_k)
    s_part = torch.empty((b * h, n_splits, f, dv), dtype=torch.float32, device=q.device)
    z_part = torch.empty((b * h, n_splits, f), dtype=torch.float32, device=q.device)
    _linear_state_kernel[(b * h, n_splits, tiles_k[-1])](
        k, v, s_part, z_part, nk, split_k, float(p), BLOCK_N=block, **launch_args(*tiles_k)
    )
    state = s_part.sum(dim=1)  # (BH, F, Dv)
    z = z_part.sum(dim=1)  # (BH, F)

    out = torch.empty((b, h, nq, dv), dtype=v.dtype, device=q.device)
    _linear_out_kernel[(b * h, triton.cdiv(nq, split_q), tiles_q[-1])](
        q, state, z, out, nq, split_q, float(p), float(eps), BLOCK_M=block,
        **launch_args(*tiles_q),
    )  # fmt: skip
    return out


def check_features(fn: str, phi_q: torch.Tensor) -> None:
    """Raises ValueError naming the launcher `fn` when the feature dim is wider than the
    kernels take."""
    if phi_q.shape[-1] > MAX_FEATURES:
        raise ValueError(
            f"{fn}: feature dim must be <= {MAX_FEATURES}, got {phi_q.shape[-1]} "
            f"(features of shape {tuple(phi_q.shape)}); use impl='reference'"
        )
