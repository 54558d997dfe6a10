"""Triton kernels of the frame-wise GDN: three phases forward, their adjoints backward.

Shapes (row-major, contiguous): q, k, q_rot, k_rot [B, T, S, H, D]; v [B, T, S, H, Dv];
beta [B, T, S, H]; gamma [B, T, H]. Per-frame fp32 buffers are laid out [B·H, T, rows, D].
Programs: one per (frame, batch·head) for the per-frame phases (T and S stay runtime
arguments, so 31/61/121 frames share one compiled kernel); one per (row block,
batch·head) for the scans. Prefixes: p_ pointers, b_ blocks, o_ offsets, m_ masks.
The derivation is in kernels/README.md.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _gram_fwd_kernel(
    p_k, p_v, p_krot, p_beta,  # inputs
    p_m, p_w, p_n, p_u, p_flag,  # fp32 [BH, T, D, D], [BH, T, DV, D], [BH, T, D, D], [BH, T, D]; int32 [BH, T]
    T, S, H,
    D: tl.constexpr, DV: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    STATE_PATH: tl.constexpr,
):
    """Phase A for one (t, b·h): the state path writes M = K̃ᵀBK̃ and W = VᵀBK̃ (K̃ and V
    read once); the normaliser path writes N = KᵀBK and u = Kᵀβ. Counts NaNs into p_flag."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    row0 = (i_b * T + i_t).to(tl.int64) * S
    frame = i_bh.to(tl.int64) * T + i_t
    o_d = tl.arange(0, BLOCK_D)
    o_v = tl.arange(0, BLOCK_DV)
    m_d, m_v = o_d < D, o_v < DV
    acc_dd = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
    if STATE_PATH:
        acc_vd = tl.zeros([BLOCK_DV, BLOCK_D], dtype=tl.float32)
    else:
        acc_u = tl.zeros([BLOCK_D], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        m_s = o_s < S
        o_tok = (row0 + o_s) * H + i_h
        b_beta = tl.load(p_beta + o_tok, mask=m_s, other=0).to(tl.float32)
        o_sd = o_tok[:, None] * D + o_d[None, :]
        m_sd = m_s[:, None] & m_d[None, :]
        if STATE_PATH:
            b_x = tl.load(p_krot + o_sd, mask=m_sd, other=0)
        else:
            b_x = tl.load(p_k + o_sd, mask=m_sd, other=0)
        b_xb = (b_x.to(tl.float32) * b_beta[:, None]).to(b_x.dtype)
        acc_dd += tl.dot(tl.trans(b_xb), b_x)
        if STATE_PATH:
            b_v = tl.load(p_v + o_tok[:, None] * DV + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0)
            acc_vd += tl.dot(tl.trans(b_v), b_xb)
        else:
            acc_u += tl.sum(b_x.to(tl.float32) * b_beta[:, None], 0)
    o_dd = (frame * D + o_d[:, None]) * D + o_d[None, :]
    m_dd = m_d[:, None] & m_d[None, :]
    bad = tl.sum(tl.sum((acc_dd != acc_dd).to(tl.int32), 1), 0)
    if STATE_PATH:
        tl.store(p_m + o_dd, acc_dd, mask=m_dd)
        tl.store(p_w + (frame * DV + o_v[:, None]) * D + o_d[None, :], acc_vd, mask=m_v[:, None] & m_d[None, :])
        bad += tl.sum(tl.sum((acc_vd != acc_vd).to(tl.int32), 1), 0)
    else:
        tl.store(p_n + o_dd, acc_dd, mask=m_dd)
        tl.store(p_u + frame * D + o_d, acc_u, mask=m_d)
        bad += tl.sum((acc_u != acc_u).to(tl.int32), 0)
    tl.store(p_flag + frame, bad)


@triton.jit
def _affine_scan_kernel(
    p_a, p_u, p_gamma, p_reset, p_init, p_out, p_final,
    T, H, R,
    D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
    REVERSE: tl.constexpr, ADD_FIRST: tl.constexpr, STORE_BEFORE: tl.constexpr,
    HAS_RESET: tl.constexpr, HAS_INIT: tl.constexpr, HAS_FINAL: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Phase B (and its adjoints): scan rows X [R, D] of the state over frames with
    L_t(X) = γ_t (X − X A_t). Per frame t, in scan order:
        reset (if flagged) → [X += U_t if ADD_FIRST] → [store X if STORE_BEFORE]
        → X = L_t(X) → [X += U_t if not ADD_FIRST] → [store X if not STORE_BEFORE].
    a [BH, T, D, D], u/out [BH, T, R, D] fp32; init/final [BH, R, D]."""
    i_r, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_r = i_r * BLOCK_R + tl.arange(0, BLOCK_R)
    o_d = tl.arange(0, BLOCK_D)
    m_rd = (o_r < R)[:, None] & (o_d < D)[None, :]
    m_dd = (o_d < D)[:, None] & (o_d < D)[None, :]
    o_rd = o_r[:, None] * D + o_d[None, :]
    if HAS_INIT:
        b_x = tl.load(p_init + i_bh.to(tl.int64) * R * D + o_rd, mask=m_rd, other=0).to(tl.float32)
    else:
        b_x = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for j in range(0, T):
        if REVERSE:
            t = T - 1 - j
        else:
            t = j
        frame = i_bh.to(tl.int64) * T + t
        if HAS_RESET:
            b_x = tl.where(tl.load(p_reset + t) != 0, 0.0, b_x)
        b_u = tl.load(p_u + frame * R * D + o_rd, mask=m_rd, other=0)
        if ADD_FIRST:
            b_x += b_u
        if STORE_BEFORE:
            tl.store(p_out + frame * R * D + o_rd, b_x, mask=m_rd)
        b_a = tl.load(p_a + frame * D * D + o_d[:, None] * D + o_d[None, :], mask=m_dd, other=0)
        b_g = tl.load(p_gamma + (i_b * T + t) * H + i_h).to(tl.float32)
        b_x = b_g * (b_x - tl.dot(b_x, b_a, input_precision=PRECISION))
        if not ADD_FIRST:
            b_x += b_u
        if not STORE_BEFORE:
            tl.store(p_out + frame * R * D + o_rd, b_x, mask=m_rd)
    if HAS_FINAL:
        tl.store(p_final + i_bh.to(tl.int64) * R * D + o_rd, b_x, mask=m_rd)


@triton.jit
def _load_state(p_s, p_r, p_z, p_zr, frame, o_v, o_d, DV: tl.constexpr, D: tl.constexpr, HAS_REV: tl.constexpr):
    """Combined state H_t = S_t + R_t [BLOCK_DV, BLOCK_D] and normaliser ζ_t = z_t + r_t [BLOCK_D], fp32."""
    m_vd = (o_v < DV)[:, None] & (o_d < D)[None, :]
    o_vd = frame * DV * D + o_v[:, None] * D + o_d[None, :]
    b_h = tl.load(p_s + o_vd, mask=m_vd, other=0)
    b_z = tl.load(p_z + frame * D + o_d, mask=o_d < D, other=0)
    if HAS_REV:
        b_h += tl.load(p_r + o_vd, mask=m_vd, other=0)
        b_z += tl.load(p_zr + frame * D + o_d, mask=o_d < D, other=0)
    return b_h, b_z


@triton.jit
def _output_fwd_kernel(
    p_q, p_qrot, p_s, p_r, p_z, p_zr, p_o, p_flag,
    T, S, H, eps,
    D: tl.constexpr, DV: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_REV: tl.constexpr,
):
    """Phase C: program (t, b·h) writes o = (Q̃ H_tᵀ) / (Q ζ_t + ε) for all S tokens of the frame."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    row0 = (i_b * T + i_t).to(tl.int64) * S
    frame = i_bh.to(tl.int64) * T + i_t
    o_d = tl.arange(0, BLOCK_D)
    o_v = tl.arange(0, BLOCK_DV)
    m_d, m_v = o_d < D, o_v < DV
    b_h, b_z = _load_state(p_s, p_r, p_z, p_zr, frame, o_v, o_d, DV, D, HAS_REV)
    b_ht = tl.trans(b_h.to(p_q.dtype.element_ty))
    bad = tl.zeros([], dtype=tl.int32)
    for s0 in range(0, S, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        m_s = o_s < S
        o_tok = (row0 + o_s) * H + i_h
        m_sd = m_s[:, None] & m_d[None, :]
        b_qr = tl.load(p_qrot + o_tok[:, None] * D + o_d[None, :], mask=m_sd, other=0)
        b_q = tl.load(p_q + o_tok[:, None] * D + o_d[None, :], mask=m_sd, other=0)
        b_num = tl.dot(b_qr, b_ht)
        b_den = tl.sum(b_q.to(tl.float32) * b_z[None, :], 1) + eps
        b_o = b_num / b_den[:, None]
        tl.store(p_o + o_tok[:, None] * DV + o_v[None, :], b_o.to(p_o.dtype.element_ty), mask=m_s[:, None] & m_v[None, :])
        bad += tl.sum(tl.sum((b_o != b_o).to(tl.int32), 1), 0)
    tl.store(p_flag + i_bh * T + i_t, bad)


@triton.jit
def _output_bwd_kernel(
    p_q, p_qrot, p_do, p_s, p_r, p_z, p_zr,
    p_dq, p_dqrot, p_dh, p_dz,  # dq, dq_rot like q; dh fp32 [BH, T, DV, D]; dz fp32 [BH, T, D]
    T, S, H, eps,
    D: tl.constexpr, DV: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_REV: tl.constexpr,
):
    """Adjoint of phase C for one (t, b·h): dQ̃ = dN H_t, dQ = dd ζ_tᵀ, dH_t = dNᵀQ̃, dζ_t = Qᵀdd
    with dN = dO / den and dd = −rowsum(dO ⊙ num) / den² (num recomputed, o not stored)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    row0 = (i_b * T + i_t).to(tl.int64) * S
    frame = i_bh.to(tl.int64) * T + i_t
    o_d = tl.arange(0, BLOCK_D)
    o_v = tl.arange(0, BLOCK_DV)
    m_d, m_v = o_d < D, o_v < DV
    b_h, b_z = _load_state(p_s, p_r, p_z, p_zr, frame, o_v, o_d, DV, D, HAS_REV)
    b_hc = b_h.to(p_q.dtype.element_ty)
    b_ht = tl.trans(b_hc)
    acc_dh = tl.zeros([BLOCK_DV, BLOCK_D], dtype=tl.float32)
    acc_dz = tl.zeros([BLOCK_D], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        o_s = s0 + tl.arange(0, BLOCK_S)
        m_s = o_s < S
        o_tok = (row0 + o_s) * H + i_h
        m_sd = m_s[:, None] & m_d[None, :]
        b_qr = tl.load(p_qrot + o_tok[:, None] * D + o_d[None, :], mask=m_sd, other=0)
        b_q = tl.load(p_q + o_tok[:, None] * D + o_d[None, :], mask=m_sd, other=0).to(tl.float32)
        b_do = tl.load(p_do + o_tok[:, None] * DV + o_v[None, :], mask=m_s[:, None] & m_v[None, :], other=0).to(tl.float32)
        b_num = tl.dot(b_qr, b_ht)
        b_den = tl.sum(b_q * b_z[None, :], 1) + eps
        b_dn = b_do / b_den[:, None]
        b_dd = -tl.sum(b_do * b_num, 1) / (b_den * b_den)
        b_dnc = b_dn.to(b_qr.dtype)
        b_dqr = tl.dot(b_dnc, b_hc)
        tl.store(p_dqrot + o_tok[:, None] * D + o_d[None, :], b_dqr.to(p_dqrot.dtype.element_ty), mask=m_sd)
        tl.store(p_dq + o_tok[:, None] * D + o_d[None, :], (b_dd[:, None] * b_z[None, :]).to(p_dq.dtype.element_ty), mask=m_sd)
        acc_dh += tl.dot(tl.trans(b_dnc), b_qr)
        acc_dz += tl.sum(b_q * b_dd[:, None], 0)
    tl.store(p_dh + frame * DV * D + o_v[:, None] * D + o_d[None, :], acc_dh, mask=m_v[:, None] & m_d[None, :])
    tl.store(p_dz + frame * D + o_d, acc_dz, mask=m_d)


@triton.jit
def _gram_bwd_kernel(
    p_k, p_v, p_krot, p_beta, p_gamma,
    p_m, p_n, p_s, p_r, p_z, p_zr, p_s0, p_z0,  # saved: Grams, forward/reverse states, initial state
    p_g, p_e, p_gz, p_ez,  # adjoint scans: G (reverse inclusive), Ẽ (forward exclusive)
    p_dk, p_dv, p_dkrot, p_dbeta, p_dgamma,  # dbeta fp32 [2, B, T, S, H]; dgamma fp32 [2, B, T, H]
    B, T, S, H,
    D: tl.constexpr, DV: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_R: tl.constexpr,
    HAS_REV: tl.constexpr, HAS_INIT: tl.constexpr, PRECISION: tl.constexpr, STATE_PATH: tl.constexpr,
):
    """Adjoint of phase A for one (t, b·h). STATE_PATH: the state path (dM, dW → dK̃, dV,
    dβ, dγ); otherwise the normaliser path (dN, du → dK, dβ, dγ). With X_t =
    S_{t−1}ᵀG_t + R_tᵀẼ_t: dM_t = −γ_t X_t, dW_t = G_t + Ẽ_t,
    dγ_t = ⟨G_t, S_{t−1}⟩ + ⟨Ẽ_t, R_t⟩ − ⟨X_t, M_t⟩; likewise for z with vectors.
    Only the symmetric part Xs = X + Xᵀ is needed (M, N symmetric), built directly so no
    fp32 D×D tile is transposed; X is summed over BLOCK_R state rows at a time to keep
    the fp32 dot operands small in shared memory."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    row0 = (i_b * T + i_t).to(tl.int64) * S
    frame = i_bh.to(tl.int64) * T + i_t
    o_d = tl.arange(0, BLOCK_D)
    o_v = tl.arange(0, BLOCK_DV)
    m_d, m_v = o_d < D, o_v < DV
    m_dd = m_d[:, None] & m_d[None, :]
    o_dd = frame * D * D + o_d[:, None] * D + o_d[None, :]
    b_gam = tl.load(p_gamma + (i_b * T + i_t) * H + i_h).to(tl.float32)
    # S_{t-1}: the previous frame's state, or the initial state at t = 0 (scaled in, not masked:
    # a scalar in a load mask is not supported by the interpreter)
    has_prev = (i_t > 0).to(tl.float32)
    prev = frame - (i_t > 0).to(tl.int64)
    if STATE_PATH:
        b_xs = tl.zeros([BLOCK_D, BLOCK_D], dtype=tl.float32)
        b_dgam = tl.zeros([], dtype=tl.float32)
        for r0 in range(0, DV, BLOCK_R):
            o_r = r0 + tl.arange(0, BLOCK_R)
            m_rd = (o_r < DV)[:, None] & m_d[None, :]
            o_rd = o_r[:, None] * D + o_d[None, :]
            b_gr = tl.load(p_g + frame * DV * D + o_rd, mask=m_rd, other=0)
            b_pr = has_prev * tl.load(p_s + prev * DV * D + o_rd, mask=m_rd, other=0)
            if HAS_INIT:
                b_pr += (1.0 - has_prev) * tl.load(p_s0 + i_bh.to(tl.int64) * DV * D + o_rd, mask=m_rd, other=0)
            b_xs += tl.dot(tl.trans(b_pr), b_gr, input_precision=PRECISION)
            b_xs += tl.dot(tl.trans(b_gr), b_pr, input_precision=PRECISION)
            b_dgam += tl.sum(tl.sum(b_gr * b_pr, 1), 0)
            if HAS_REV:
                b_er = tl.load(p_e + frame * DV * D + o_rd, mask=m_rd, other=0)
                b_rr = tl.load(p_r + frame * DV * D + o_rd, mask=m_rd, other=0)
                b_xs += tl.dot(tl.trans(b_rr), b_er, input_precision=PRECISION)
                b_xs += tl.dot(tl.trans(b_er), b_rr, input_precision=PRECISION)
                b_dgam += tl.sum(tl.sum(b_er * b_rr, 1), 0)
        m_vd = m_v[:, None] & m_d[None, :]
        o_vd = frame * DV * D + o_v[:, None] * D + o_d[None, :]
        b_dw = tl.load(p_g + o_vd, mask=m_vd, other=0)
        if HAS_REV:
            b_dw += tl.load(p_e + o_vd, mask=m_vd, other=0)
        b_mt = tl.load(p_m + o_dd, mask=m_dd, other=0)
        b_dgam -= 0.5 * tl.sum(tl.sum(b_xs * b_mt, 1), 0)
        b_dms = (-b_gam * b_xs).to(p_krot.dtype.element_ty)  # dM + dMᵀ
        b_dwc = b_dw.to(p_krot.dtype.element_ty)
        for s0 in range(0, S, BLOCK_S):
            o_s = s0 + tl.arange(0, BLOCK_S)
            m_s = o_s < S
            o_tok = (row0 + o_s) * H + i_h
            m_sd = m_s[:, None] & m_d[None, :]
            m_sv = m_s[:, None] & m_v[None, :]
            b_beta = tl.load(p_beta + o_tok, mask=m_s, other=0).to(tl.float32)
            b_kr = tl.load(p_krot + o_tok[:, None] * D + o_d[None, :], mask=m_sd, other=0)
            b_vv = tl.load(p_v + o_tok[:, None] * DV + o_v[None, :], mask=m_sv, other=0)
            b_p = tl.dot(b_kr, b_dms)
            b_pv = tl.dot(b_vv, b_dwc)
            b_dkr = b_beta[:, None] * (b_p + b_pv)
            b_dvv = b_beta[:, None] * tl.dot(b_kr, tl.trans(b_dwc))
            b_db = tl.sum((0.5 * b_p + b_pv) * b_kr.to(tl.float32), 1)
            tl.store(p_dkrot + o_tok[:, None] * D + o_d[None, :], b_dkr.to(p_dkrot.dtype.element_ty), mask=m_sd)
            tl.store(p_dv + o_tok[:, None] * DV + o_v[None, :], b_dvv.to(p_dv.dtype.element_ty), mask=m_sv)
            tl.store(p_dbeta + o_tok, b_db, mask=m_s)
        tl.store(p_dgamma + (i_b * T + i_t) * H + i_h, b_dgam)
    else:
        b_gt = tl.load(p_gz + frame * D + o_d, mask=m_d, other=0)
        b_prev = has_prev * tl.load(p_z + prev * D + o_d, mask=m_d, other=0)
        if HAS_INIT:
            b_prev += (1.0 - has_prev) * tl.load(p_z0 + i_bh.to(tl.int64) * D + o_d, mask=m_d, other=0)
        b_xs = b_prev[:, None] * b_gt[None, :] + b_gt[:, None] * b_prev[None, :]
        b_du = b_gt
        b_dgam = tl.sum(b_gt * b_prev, 0)
        if HAS_REV:
            b_et = tl.load(p_ez + frame * D + o_d, mask=m_d, other=0)
            b_rt = tl.load(p_zr + frame * D + o_d, mask=m_d, other=0)
            b_xs += b_rt[:, None] * b_et[None, :] + b_et[:, None] * b_rt[None, :]
            b_du += b_et
            b_dgam += tl.sum(b_et * b_rt, 0)
        b_nt = tl.load(p_n + o_dd, mask=m_dd, other=0)
        b_dgam -= 0.5 * tl.sum(tl.sum(b_xs * b_nt, 1), 0)
        b_dns = (-b_gam * b_xs).to(p_k.dtype.element_ty)
        n_tok = B * T * S * H
        for s0 in range(0, S, BLOCK_S):
            o_s = s0 + tl.arange(0, BLOCK_S)
            m_s = o_s < S
            o_tok = (row0 + o_s) * H + i_h
            m_sd = m_s[:, None] & m_d[None, :]
            b_beta = tl.load(p_beta + o_tok, mask=m_s, other=0).to(tl.float32)
            b_kk = tl.load(p_k + o_tok[:, None] * D + o_d[None, :], mask=m_sd, other=0)
            b_kf = b_kk.to(tl.float32)
            b_p = tl.dot(b_kk, b_dns)
            b_dkk = b_beta[:, None] * (b_p + b_du[None, :])
            b_db = tl.sum((0.5 * b_p + b_du[None, :]) * b_kf, 1)
            tl.store(p_dk + o_tok[:, None] * D + o_d[None, :], b_dkk.to(p_dk.dtype.element_ty), mask=m_sd)
            tl.store(p_dbeta + n_tok + o_tok, b_db, mask=m_s)
        tl.store(p_dgamma + ((B + i_b) * T + i_t) * H + i_h, b_dgam)
