"""Scan composition (DESIGN §3.7 phase B) for long T and for context parallelism.

One frame's update of the state rows is an affine map F_t(X) = X A_t + U_t with
A_t = γ_t (I − M_t): the state S [Dv, D] uses (M = K̃ᵀBK̃, U = VᵀBK̃), the
normaliser zᵀ [1, D] uses (N = KᵀBK, U = uᵀ = (Kᵀβ)ᵀ). Applying F_1 then F_2 is

    F_2(F_1(X)) = X (A_1 A_2) + (U_1 A_2 + U_2),

the composition rule of DESIGN §3.7 written for row states (DESIGN acts on the
transposed state from the left: (A₂A₁, A₂U₁ + U₂); M and N are symmetric). It is
associative, so a rank scans its slice of frames to one composite and ranks combine
composites in frame order. The reverse scan (bidirectional, chunk_causal) composes the
same maps in the other direction, a chunk start zeroing its map (`reverse_frame_maps`),
so slices may cut chunks. All in fp32 and differentiable by autograd.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.distributed as dist

from .chunks import small_tensor
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


def reverse_frame_maps(maps: FrameMaps, continues: list[bool]) -> FrameMaps:
    """The reverse scan's steps over a slice, in the order it applies them (last frame first).

    The reverse state R_{t−1} (frames after t − 1 in its chunk) is frame t's map applied to
    R_t, or 0 where frame t starts a chunk (t − 1 ends one). continues: [T] per frame, True
    where it lies in the chunk of the frame before it (for frame 0: the previous rank's last
    frame). Zeroed maps make the reset part of the composition, so slices may cut chunks."""
    keep = small_tensor(continues, maps.A.dtype, maps.A.device).view(1, 1, -1, 1, 1)
    return FrameMaps(*((x * keep).flip(2) for x in maps))


def _fold(comps: list[FrameMaps], ranks: list[int], initial_state: tuple[torch.Tensor, torch.Tensor]):
    state = initial_state
    for r in ranks:
        state = apply_composite(state, comps[r])
    return state


def _reaching_ranks(rank: int, world: int, reverse: bool) -> list[int]:
    """Ranks whose composites reach this rank's slice, in the order they apply: the earlier
    ranks for the forward scan, the later ranks from the last one down for the reverse scan."""
    return list(range(world - 1, rank, -1)) if reverse else list(range(rank))


class _IncomingState(torch.autograd.Function):
    """All-gather the ranks' composites and fold those that reach this rank over the initial state.

    Every rank's output takes part in its loss (it is the state its slice starts from),
    so every rank enters the backward, which sums the gradients each rank's fold sends
    to every composite with one all-reduce and keeps this rank's share."""

    @staticmethod
    def forward(ctx, group, reverse, S0, z0, *local):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        gathered = []
        for x in local:
            parts = [torch.empty_like(x) for _ in range(world)]
            dist.all_gather(parts, x.contiguous(), group=group)
            gathered.append(parts)
        comps = [FrameMaps(*(g[r] for g in gathered)) for r in range(world)]
        ctx.group, ctx.rank, ctx.comps = group, rank, comps
        ctx.ranks = _reaching_ranks(rank, world, reverse)
        ctx.save_for_backward(S0, z0)
        return _fold(comps, ctx.ranks, (S0, z0))

    @staticmethod
    def backward(ctx, dS, dz):
        S0, z0 = ctx.saved_tensors
        with torch.enable_grad():
            comps = [FrameMaps(*(x.detach().requires_grad_() for x in c)) for c in ctx.comps]
            init = (S0.detach().requires_grad_(), z0.detach().requires_grad_())
            state = _fold(comps, ctx.ranks, init)
            leaves = [x for c in comps for x in c] + list(init)
            grads = torch.autograd.grad(state, leaves, (dS, dz), allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
        flat = torch.cat([g.reshape(-1) for g in grads[:-2]])
        dist.all_reduce(flat, group=ctx.group)
        sizes = [x.numel() for x in leaves[:-2]]
        per_leaf = list(flat.split(sizes))
        mine = per_leaf[4 * ctx.rank : 4 * ctx.rank + 4]
        local = [g.view_as(x) for g, x in zip(mine, ctx.comps[ctx.rank])]
        return (None, None, grads[-2], grads[-1], *local)


def incoming_state(
    local: FrameMaps,
    initial_state: tuple[torch.Tensor, torch.Tensor],
    group: dist.ProcessGroup | None = None,
    *,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """State entering this rank's slice when frames are split over the ranks of `group` in
    rank order: all-gather every rank's composite and apply those of earlier ranks in order
    (reverse=True: those of later ranks, last rank first — the reverse scan's state at this
    slice's last frame, with `reverse_frame_maps` composites). Differentiable: gradients reach
    the other ranks' composites through an all-reduce in the backward; the initial state's
    gradient is this rank's share (sum it over ranks if it is replicated)."""
    return _IncomingState.apply(group, reverse, initial_state[0], initial_state[1], *local)


def _scan_rows(X: torch.Tensor, A: torch.Tensor, U: torch.Tensor | None, frames: range) -> list[torch.Tensor]:
    """X ← X A_t (+ U_t) over `frames` (t indexes dim 2 of A, U); the state after each step."""
    out = []
    for t in frames:
        X = X @ A[:, :, t] if U is None else X @ A[:, :, t] + U[:, :, t]
        out.append(X)
    return out


def _add_reverse_incoming(
    o: torch.Tensor,
    q: torch.Tensor,
    q_rot: torch.Tensor,
    maps: FrameMaps,
    z_in: torch.Tensor,
    reverse_in: tuple[torch.Tensor, torch.Tensor],
    tail: int,
    eps: float,
) -> torch.Tensor:
    """Correct the local op's output o [B, T, S, H, Dv] for the reverse state that later ranks
    send into this slice's last chunk piece (its last `tail` frames).

    The local op reset the reverse scan at the slice end; the full reverse state of a tail frame
    t adds ΔH_t = R_in A_{T−1} ⋯ A_{t+1} (δ_t likewise for the normaliser). With the op's own
    denominator den_t = q·(z_t + r_t) + ε recomputed from the normaliser scans (vectors: cheap),
    o_full = (o·den + q̃ ΔH_tᵀ) / (den + q·δ_t): exact, and the op's numerator is never needed."""
    T = q.shape[1]
    first = T - tail
    R_in, r_in = reverse_in
    # forward normaliser z_t (inclusive, from the incoming state) of the tail frames
    z = _scan_rows(z_in.to(maps.Az.dtype)[..., None, :], maps.Az, maps.Uz, range(T))[first:]
    # local reverse normaliser (0 at the slice end) and the propagated incoming states
    zero = torch.zeros_like(r_in)[..., None, :]
    back = range(T - 1, first, -1)
    r = [*_scan_rows(zero, maps.Az, maps.Uz, back)[::-1], zero]
    dz = [*_scan_rows(r_in[..., None, :], maps.Az, None, back)[::-1], r_in[..., None, :]]
    dH = [*_scan_rows(R_in, maps.A, None, back)[::-1], R_in]
    stack = lambda xs: torch.stack(xs, 2)  # noqa: E731  [B, H, tail, ·, D]
    qf, qr = q[:, first:].to(maps.A.dtype), q_rot[:, first:].to(maps.A.dtype)
    den = torch.einsum("btshd,bhtd->btsh", qf, (stack(z) + stack(r))[..., 0, :]) + eps
    extra_den = torch.einsum("btshd,bhtd->btsh", qf, stack(dz)[..., 0, :])
    extra_num = torch.einsum("btshd,bhtvd->btshv", qr, stack(dH))
    o_tail = (o[:, first:].to(den.dtype) * den[..., None] + extra_num) / (den + extra_den)[..., None]
    return torch.cat([o[:, :first], o_tail.to(o.dtype)], 1)


def slice_chunks(chunk_sizes: list[int], start: int, stop: int) -> tuple[list[int], bool]:
    """The chunk layout of frames [start, stop) of a clip with layout `chunk_sizes`: the
    clip's chunks cut at the slice edges, and whether the first one began before `start`
    (the arguments `frame_gdn_context_parallel` takes in chunk_causal mode).

    >>> slice_chunks([4, 3, 4], 6, 11)
    ([1, 4], True)
    """
    if not 0 <= start < stop <= sum(chunk_sizes):
        raise ValueError(f"slice_chunks: frames [{start}, {stop}) are not a slice of {sum(chunk_sizes)} frames")
    pieces, edge = [], 0
    for size in chunk_sizes:
        lo, hi = max(edge, start), min(edge + size, stop)
        if lo < hi:
            pieces.append(hi - lo)
        edge += size
    continues = start not in {sum(chunk_sizes[:i]) for i in range(len(chunk_sizes))}
    return pieces, continues


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
    first_chunk_continues: bool = False,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None = None,
    eps: float = 1e-8,
    group: dist.ProcessGroup | None = None,
    op: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Frame-wise GDN over a sequence whose frames are split over ranks (contiguous slices
    in rank order); each rank passes its slice (tensors as in `frame_gdn`, T = local frames).

    Forward scan: each rank folds its frames to a composite, the composites are exchanged and
    the state entering the slice feeds `op` (default `frame_gdn`) as its initial state.
    Reverse scan (bidirectional, chunk_causal): the mirror exchange of `reverse_frame_maps`
    composites gives the reverse state at the slice's last frame, added to the op's output
    by `_add_reverse_incoming`. chunk_causal: `chunk_sizes` is this slice's layout (the clip's
    chunks cut at the slice edges) and `first_chunk_continues` says whether its first chunk
    began on the previous rank; bidirectional is one chunk over all ranks.
    """
    if mode == "chunk_causal" and chunk_sizes is None:
        raise ValueError("frame_gdn_context_parallel: chunk_causal needs this slice's chunk_sizes (the clip's chunks cut at the slice edges)")
    if op is None:
        from .frame_gdn import frame_gdn as op
    B, T, _, H, D = k.shape
    if initial_state is None:
        state_dtype = torch.promote_types(k.dtype, torch.float32)  # the op's: fp32, float64 for float64 inputs
        zeros = k.new_zeros(B, H, v.shape[-1], D, dtype=state_dtype)
        initial_state = (zeros, k.new_zeros(B, H, D, dtype=state_dtype))
    fp32 = torch.autocast(q.device.type, enabled=False)  # the scans stay fp32 under the caller's autocast
    with fp32:
        maps = frame_affine_maps(k, v, beta, gamma, k_rot)
        state = incoming_state(scan_composite(maps), initial_state, group)
    state = (state[0].contiguous(), state[1].contiguous())
    o = op(q, k, v, beta, gamma, q_rot, k_rot, mode=mode, chunk_sizes=chunk_sizes, initial_state=state, eps=eps)
    if mode == "causal":
        return o
    if mode == "bidirectional":
        sizes, continues = [T], dist.get_rank(group) > 0
    else:
        sizes, continues = list(chunk_sizes), first_chunk_continues
    starts = {sum(sizes[:i]) for i in range(len(sizes))}
    flags = [continues] + [t not in starts for t in range(1, T)]
    zero = tuple(torch.zeros_like(x) for x in initial_state)
    with fp32:
        reverse_in = incoming_state(scan_composite(reverse_frame_maps(maps, flags)), zero, group, reverse=True)
        return _add_reverse_incoming(o, q, q_rot, maps, state[1], reverse_in, sizes[-1], eps)
