"""Inputs and an independent float64 spec of the frame-wise GDN for the kernel tests."""

from __future__ import annotations

import torch

from wmkit.kernels import chunk_sizes_for

NAMES = ("q", "k", "v", "beta", "gamma", "q_rot", "k_rot")


def gdn_inputs(
    B: int, T: int, S: int, H: int, D: int, Dv: int, *, dtype: torch.dtype = torch.float32,
    device: str = "cpu", seed: int = 0, requires_grad: bool = True,
) -> list[torch.Tensor]:
    """Random q, k, v, beta, gamma, q_rot, k_rot as the GDN block would make them: q, k
    ReLU'd (non-negative), k scaled by 1/sqrt(D·S), k_rot a rotation-sized copy, beta in
    (0, 1), gamma in [0.5, 1) — so denominators stay positive and the update contractive."""
    g = torch.Generator().manual_seed(seed)
    scale = (D * S) ** -0.5
    q = torch.rand(B, T, S, H, D, generator=g)
    k = torch.rand(B, T, S, H, D, generator=g) * scale
    v = torch.randn(B, T, S, H, Dv, generator=g)
    beta = torch.rand(B, T, S, H, generator=g)
    gamma = 0.5 + 0.5 * torch.rand(B, T, H, generator=g)
    q_rot = torch.randn(B, T, S, H, D, generator=g)
    k_rot = torch.randn(B, T, S, H, D, generator=g) * scale
    return [x.to(device=device, dtype=dtype).requires_grad_(requires_grad) for x in (q, k, v, beta, gamma, q_rot, k_rot)]


def random_state(B: int, H: int, D: int, Dv: int, *, device: str = "cpu", seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A plausible fp32 (S [B, H, Dv, D], z [B, H, D]) with z > 0 so denominators stay away from 0."""
    g = torch.Generator().manual_seed(seed)
    S = 0.1 * torch.randn(B, H, Dv, D, generator=g)
    z = 0.1 * torch.rand(B, H, D, generator=g)
    return S.to(device).requires_grad_(), z.to(device).requires_grad_()


def err_ratio(x: torch.Tensor, ref: torch.Tensor) -> float:
    """RMS of the difference over RMS of the reference (scale-free error for bf16 paths)."""
    return ((x.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def spec_frame_gdn(q, k, v, beta, gamma, q_rot, k_rot, *, mode, chunk_sizes=None, initial_state=None, eps=1e-8):
    """DESIGN §3.4–3.6 written out frame by frame in float64, one head at a time."""
    q, k, v, beta, gamma, q_rot, k_rot = (x.detach().double() for x in (q, k, v, beta, gamma, q_rot, k_rot))
    B, T, S, H, D = q.shape
    Dv = v.shape[-1]
    o = torch.empty(B, T, S, H, Dv, dtype=torch.float64)
    if mode == "causal":
        chunk_of = None
    else:
        sizes = [T] if mode == "bidirectional" else (chunk_sizes or chunk_sizes_for(T))
        chunk_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    eye = torch.eye(D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            def step(St, zt, t):
                Kr, Kk, V, bt = k_rot[b, t, :, h], k[b, t, :, h], v[b, t, :, h], torch.diag(beta[b, t, :, h])
                St = gamma[b, t, h] * St @ (eye - Kr.T @ bt @ Kr) + V.T @ bt @ Kr
                zt = gamma[b, t, h] * (eye - Kk.T @ bt @ Kk) @ zt + Kk.T @ beta[b, t, :, h]
                return St, zt
            if initial_state is None:
                St, zt = torch.zeros(Dv, D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
            else:
                St, zt = initial_state[0][b, h].detach().double(), initial_state[1][b, h].detach().double()
            fwd = []
            for t in range(T):
                St, zt = step(St, zt, t)
                fwd.append((St, zt))
            for t in range(T):
                Ht, zeta = fwd[t]
                if chunk_of is not None:
                    # reverse part: R_t over frames t+1 .. end of t's chunk, frame t+1 undecayed
                    Rt, rt = torch.zeros(Dv, D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64)
                    last = int((chunk_of == chunk_of[t]).nonzero().max())
                    for j in range(last, t, -1):
                        Rt, rt = step(Rt, rt, j)
                    Ht, zeta = Ht + Rt, zeta + rt
                o[b, t, :, h] = (q_rot[b, t, :, h] @ Ht.T) / (q[b, t, :, h] @ zeta + eps)[:, None]
    return o
