"""Plain-torch reference of the frame-wise Gated DeltaNet (DESIGN §3.4–3.6): the specification.

Batched per-frame GEMMs (phase A), an fp32 loop over frames (phase B), one output
GEMM (phase C); autograd differentiates it. `frame_gdn` (Triton) is its twin: same
arguments in the same order, tested against it.
"""

from __future__ import annotations

import torch

from .chunks import reverse_chunk_ends
from .validate import REFERENCE_DTYPES, Mode, check_frame_gdn_args, check_frame_gdn_values


def frame_grams(
    k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, k_rot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Phase A in fp32 (float64 for float64 inputs): per frame and head the Gram terms.

    k, k_rot: [B, T, S, H, D]; v: [B, T, S, H, Dv]; beta: [B, T, S, H].
    Returns M = K̃ᵀBK̃ [B, H, T, D, D], W = VᵀBK̃ [B, H, T, Dv, D],
    N = KᵀBK [B, H, T, D, D], u = Kᵀβ [B, H, T, D]."""
    acc = torch.promote_types(k.dtype, torch.float32)
    kf, vf, krf, bf = (x.to(acc) for x in (k, v, k_rot, beta))
    krb = krf * bf[..., None]
    kb = kf * bf[..., None]
    M = torch.einsum("btshd,btshe->bhtde", krb, krf)
    W = torch.einsum("btshv,btshd->bhtvd", vf, krb)
    N = torch.einsum("btshd,btshe->bhtde", kb, kf)
    u = kb.sum(2).permute(0, 2, 1, 3)
    return M, W, N, u


def affine_scan(
    M: torch.Tensor,
    U: torch.Tensor,
    gamma: torch.Tensor,
    init: torch.Tensor | None,
    *,
    reverse: bool = False,
    resets: list[bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase B: scan X ← γ_t X (I − M_t) + U_t over frames, in fp32.

    M: [B, H, T, D, D]; U: [B, H, T, R, D]; gamma: [B, T, H]; init: [B, H, R, D] or None.
    Forward (reverse=False) stores each frame's state after its update (inclusive:
    S_t). Reverse stores before the update (exclusive: R_t sums frames > t) and
    restarts from zero on frames where resets[t] is True (chunk ends).
    Returns (states [B, H, T, R, D], final carry [B, H, R, D])."""
    B, H, T, R, D = U.shape
    g = gamma.to(U.dtype).permute(0, 2, 1)  # [B, H, T]
    X = U.new_zeros(B, H, R, D) if init is None else init.to(U.dtype)
    out = []
    frames = range(T - 1, -1, -1) if reverse else range(T)
    for t in frames:
        if reverse:
            if resets is not None and resets[t]:
                X = torch.zeros_like(X)
            out.append(X)
        X = g[:, :, t, None, None] * (X - X @ M[:, :, t]) + U[:, :, t]
        if not reverse:
            out.append(X)
    if reverse:
        out.reverse()
    return torch.stack(out, 2), X


def frame_gdn_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    q_rot: torch.Tensor,
    k_rot: torch.Tensor,
    *,
    mode: Mode,
    chunk_sizes: list[int] | None = None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_final_state: bool = False,
    eps: float = 1e-8,
    check_values: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Frame-wise GDN in plain torch; twin of `wmkit.kernels.frame_gdn` (see its docstring
    for the arguments). Computes in fp32 (float64 for float64 inputs, which only the
    reference takes) and returns o in q's dtype."""
    check_frame_gdn_args(q, k, v, beta, gamma, q_rot, k_rot, mode, chunk_sizes, initial_state, REFERENCE_DTYPES)
    if check_values:
        check_frame_gdn_values(beta, gamma)
        for name, x in (("q", q), ("k", k), ("v", v), ("q_rot", q_rot), ("k_rot", k_rot)):
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"frame_gdn_ref: {name} contains NaN/Inf")
    T = q.shape[1]
    M, W, N, u = frame_grams(k, v, beta, k_rot)
    S0, z0 = (None, None) if initial_state is None else initial_state
    states, S_last = affine_scan(M, W, gamma, S0)
    zs, z_last = affine_scan(N, u[..., None, :], gamma, None if z0 is None else z0[..., None, :])
    resets = reverse_chunk_ends(mode, chunk_sizes, T)
    if resets is not None:
        states = states + affine_scan(M, W, gamma, None, reverse=True, resets=resets)[0]
        zs = zs + affine_scan(N, u[..., None, :], gamma, None, reverse=True, resets=resets)[0]
    num = torch.einsum("btshd,bhtvd->btshv", q_rot.to(states.dtype), states)
    den = torch.einsum("btshd,bhtd->btsh", q.to(states.dtype), zs[..., 0, :]) + eps
    o = (num / den[..., None]).to(q.dtype)
    if return_final_state:
        return o, (S_last, z_last[..., 0, :])
    return o
