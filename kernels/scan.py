"""Scan composition (DESIGN §3.7 phase B) for long T and for context parallelism.

One frame's update of the state rows is an affine map F_t(X) = X A_t + U_t with
A_t = γ_t (I − M_t): the state S [Dv, D] uses (M = K̃ᵀBK̃, U = VᵀBK̃), the
normaliser zᵀ [1, D] uses (N = KᵀBK, U = uᵀ = (Kᵀβ)ᵀ). Applying F_1 then F_2 is

    F_2(F_1(X)) = X (A_1 A_2) + (U_1 A_2 + U_2),

the composition rule of DESIGN §3.7 written for row states (DESIGN acts on the
transposed state from the left: (A₂A₁, A₂U₁ + U₂); M and N are symmetric). It is
associative, so a rank scans its slice of frames to one composite and ranks combine
composites in frame order. All in fp32 and differentiable by autograd.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.distributed as dist

from .reference import frame_grams
from .validate import Mode


class FrameMaps(NamedTuple):
    """Affine maps of the state (A, U) and of the normaliser (Az, Uz), fp32.

    Per frame: A, Az [B, H, T, D, D]; U [B, H, T, Dv, D]; Uz [B, H, T, 1, D].
    As a composite (T axis absent): A, Az [B, H, D, D]; U [B, H, Dv, D]; Uz [B, H, 1, D]."""

    A: torch.Tensor
    U: torch.Tensor
    Az: torch.Tensor
    Uz: torch.Tensor


def frame_affine_maps(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, k_rot: torch.Tensor) -> FrameMaps:
    """Per-frame maps F_t from k, k_rot [B, T, S, H, D], v [B, T, S, H, Dv], beta [B, T, S, H], gamma [B, T, H]."""
    M, W, N, u = frame_grams(k, v, beta, k_rot)
    g = gamma.float().permute(0, 2, 1)[..., None, None]  # [B, H, T, 1, 1]
    eye = torch.eye(M.shape[-1], device=M.device, dtype=M.dtype)
    return FrameMaps(g * (eye - M), W, g * (eye - N), u[..., None, :])


def combine_composites(first: FrameMaps, second: FrameMaps) -> FrameMaps:
    """Composite of applying `first`, then `second` (both composites, no T axis)."""
    return FrameMaps(
        first.A @ second.A,
        first.U @ second.A + second.U,
        first.Az @ second.Az,
        first.Uz @ second.Az + second.Uz,
    )


def scan_composite(maps: FrameMaps) -> FrameMaps:
    """Fold a slice of per-frame maps (T axis at dim 2) into one composite, in frame order."""
    T = maps.A.shape[2]
    comp = FrameMaps(*(x[:, :, 0] for x in maps))
    for t in range(1, T):
        comp = combine_composites(comp, FrameMaps(*(x[:, :, t] for x in maps)))
    return comp


def apply_composite(state: tuple[torch.Tensor, torch.Tensor], comp: FrameMaps) -> tuple[torch.Tensor, torch.Tensor]:
    """Map a state (S [B, H, Dv, D], z [B, H, D]) through a composite."""
    S, z = state
    return S @ comp.A + comp.U, (z[..., None, :] @ comp.Az + comp.Uz)[..., 0, :]


def _fold_earlier(comps: list[FrameMaps], rank: int, initial_state: tuple[torch.Tensor, torch.Tensor]):
    state = initial_state
    for r in range(rank):
        state = apply_composite(state, comps[r])
    return state


class _IncomingState(torch.autograd.Function):
    """All-gather the ranks' composites and fold the earlier ones over the initial state.

    Every rank's output takes part in its loss (it is the state its slice starts from),
    so every rank enters the backward, which sums the gradients each rank's fold sends
    to every composite with one all-reduce and keeps this rank's share."""

    @staticmethod
    def forward(ctx, group, S0, z0, *local):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        gathered = []
        for x in local:
            parts = [torch.empty_like(x) for _ in range(world)]
            dist.all_gather(parts, x.contiguous(), group=group)
            gathered.append(parts)
        comps = [FrameMaps(*(g[r] for g in gathered)) for r in range(world)]
        ctx.group, ctx.rank, ctx.comps = group, rank, comps
        ctx.save_for_backward(S0, z0)
        return _fold_earlier(comps, rank, (S0, z0))

    @staticmethod
    def backward(ctx, dS, dz):
        S0, z0 = ctx.saved_tensors
        with torch.enable_grad():
            comps = [FrameMaps(*(x.detach().requires_grad_() for x in c)) for c in ctx.comps]
            init = (S0.detach().requires_grad_(), z0.detach().requires_grad_())
            state = _fold_earlier(comps, ctx.rank, init)
            leaves = [x for c in comps for x in c] + list(init)
            grads = torch.autograd.grad(state, leaves, (dS, dz), allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
        flat = torch.cat([g.reshape(-1) for g in grads[:-2]])
        dist.all_reduce(flat, group=ctx.group)
        sizes = [x.numel() for x in leaves[:-2]]
        per_leaf = list(flat.split(sizes))
        mine = per_leaf[4 * ctx.rank : 4 * ctx.rank + 4]
        local = [g.view_as(x) for g, x in zip(mine, ctx.comps[ctx.rank])]
        return (None, grads[-2], grads[-1], *local)


def incoming_state(
    local: FrameMaps, initial_state: tuple[torch.Tensor, torch.Tensor], group: dist.ProcessGroup | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """State entering this rank's first frame when frames are split over the ranks of
    `group` in rank order: all-gather every rank's composite and apply those of earlier
    ranks in order. Differentiable: gradients reach earlier ranks' composites through an
    all-reduce in the backward; the initial state's gradient is this rank's share (sum
    it over ranks if it is replicated)."""
    return _IncomingState.apply(group, initial_state[0], initial_state[1], *local)


def frame_gdn_context_parallel(
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
    eps: float = 1e-8,
    group: dist.ProcessGroup | None = None,
    op: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Frame-wise GDN over a sequence whose frames are split over ranks (contiguous slices
    in rank order); each rank passes its slice (tensors as in `frame_gdn`, T = local frames).

    Each rank scans its frames to a composite, the composites are exchanged and the
    state entering the slice feeds `op` (default `frame_gdn`) as its initial state.
    causal and chunk_causal only: the reverse part of chunk_causal stays inside a chunk,
    so slices must start on chunk boundaries and `chunk_sizes` is this slice's layout
    (required for chunk_causal); bidirectional would need a reverse exchange.
    """
    if mode == "bidirectional":
        raise ValueError("frame_gdn_context_parallel: bidirectional mode needs a reverse-state exchange; use causal or chunk_causal")
    if mode == "chunk_causal" and chunk_sizes is None:
        raise ValueError("frame_gdn_context_parallel: chunk_causal needs this slice's chunk_sizes (slices start on chunk boundaries)")
    if op is None:
        from .frame_gdn import frame_gdn as op
    B, _, _, H, D = k.shape
    if initial_state is None:
        zeros = k.new_zeros(B, H, v.shape[-1], D, dtype=torch.float32)
        initial_state = (zeros, k.new_zeros(B, H, D, dtype=torch.float32))
    state = incoming_state(scan_composite(frame_affine_maps(k, v, beta, gamma, k_rot)), initial_state, group)
    return op(
        q, k, v, beta, gamma, q_rot, k_rot,
        mode=mode, chunk_sizes=chunk_sizes, initial_state=(state[0].contiguous(), state[1].contiguous()), eps=eps,
    )
