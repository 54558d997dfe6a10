"""Public entry of the Triton frame-wise GDN: validate once, then the custom ops
`wmkit::frame_gdn_forward` / `wmkit::frame_gdn_backward` (autograd registered), whose
kernels run in the plain `frame_gdn_fwd` / `frame_gdn_bwd`."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch

from .chunks import chunk_start_flags, reverse_reset_flags
from .validate import Mode, check_frame_gdn_args, check_frame_gdn_values, raise_on_nonfinite

# Scan launch: 32 state rows per program, 8 warps, 2 stages. Measured on the H100 at
# T = 121, B·H = 20, tf32x3 (bench/gdn_notes.md): 0.57 ms per scan against 1.08 ms for
# 16 rows / 4 warps / 3 stages, which spilled 100 registers.
BLOCK_R = 32
SCAN_LAUNCH = {"num_warps": 8, "num_stages": 2}
BLOCK_R_GRAD = 32  # state rows per step when the backward sums S_{t-1}ᵀG_t: 32 × 128 fp32 dot operands
NONFINITE_GROUPS = ("k_rot / v / beta", "k / beta", "q / q_rot")


def _kernels() -> ModuleType:
    """The Triton kernels module, imported on first launch: CPU installs without Triton
    (the `kernels` extra; CUDA builds of torch bring it) still import wmkit and run the reference."""
    try:
        from . import triton_gdn
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"frame_gdn needs Triton ({err}); install it with pip install 'wmkit[kernels]', "
            "or use frame_gdn_ref (the model does so on CPU)"
        ) from err
    return triton_gdn


def _pow2(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << (n - 1).bit_length()


def _dims(D: int, Dv: int) -> dict[str, int]:
    # tl.dot needs power-of-two tiles of at least 16: D = 112 is padded to 128 by masks.
    return {"BLOCK_D": max(16, _pow2(D)), "BLOCK_DV": max(16, _pow2(Dv))}


def _tiles(dtype: torch.dtype) -> dict[str, int]:
    """Token tile and pipelining depth of the per-frame kernels. The D×D operands held
    across the token loop take 32 KB each in bf16/fp16 and 64 KB in fp32, so fp32 gets
    half the token tile and no prefetch stage to fit in 227 KB of shared memory."""
    if dtype == torch.float32:
        return {"BLOCK_S": 32, "num_stages": 1}
    return {"BLOCK_S": 64, "num_stages": 2}


def _scan_precision(device: torch.device) -> str:
    # The state stays fp32; on the GPU tf32x3 keeps fp32 accuracy on tensor cores
    # (the interpreter computes exact fp32 whatever is asked).
    return "tf32x3" if device.type == "cuda" else "ieee"


def affine_scan(
    A: torch.Tensor,
    U: torch.Tensor,
    gamma: torch.Tensor,
    *,
    reverse: bool,
    add_first: bool,
    store_before: bool,
    resets: torch.Tensor | None = None,
    init: torch.Tensor | None = None,
    want_final: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `_affine_scan_kernel` (phase B and its adjoints) over rows of U.

    A: [BH, T, D, D] fp32; U: [BH, T, R, D] fp32; gamma: [B, T, H]; resets: [T] int32;
    init: [BH, R, D] fp32. Returns (per-frame rows [BH, T, R, D], final carry or None)."""
    BH, T, R, D = U.shape
    H = gamma.shape[2]
    out = torch.empty_like(U)
    final = torch.empty(BH, R, D, device=U.device, dtype=torch.float32) if want_final else None
    grid = (-(-R // BLOCK_R), BH)
    _kernels()._affine_scan_kernel[grid](
        A, U, gamma, resets, init, out, final, T, H, R,
        D=D, BLOCK_R=BLOCK_R, BLOCK_D=_dims(D, D)["BLOCK_D"],
        REVERSE=reverse, ADD_FIRST=add_first, STORE_BEFORE=store_before,
        HAS_RESET=resets is not None, HAS_INIT=init is not None, HAS_FINAL=want_final,
        PRECISION=_scan_precision(U.device), **SCAN_LAUNCH,
    )
    return out, final


def _concurrently(*jobs: Callable[[], tuple[torch.Tensor, torch.Tensor | None]]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Run independent scans side by side: on a GPU each job gets its own stream, since
    one scan fills only B·H·ceil(R/BLOCK_R) programs and is bound by its per-frame latency."""
    if not torch.cuda.is_available() or not jobs:
        return [job() for job in jobs]
    main = torch.cuda.current_stream()
    results = []
    for job in jobs:
        side = torch.cuda.Stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            results.append(job())
        main.wait_stream(side)
    for out in results:
        for x in out:
            if x is not None:
                x.record_stream(main)  # allocated on the side stream, used and freed on main
    return results


@dataclass
class ForwardSaved:
    """What the backward needs besides the inputs: Grams and per-frame states, fp32."""

    M: torch.Tensor  # [BH, T, D, D]
    N: torch.Tensor  # [BH, T, D, D]
    states: torch.Tensor  # forward S_t [BH, T, Dv, D]
    zs: torch.Tensor  # forward z_t [BH, T, 1, D]
    rev_states: torch.Tensor | None  # reverse R_t [BH, T, Dv, D]
    rev_zs: torch.Tensor | None  # reverse r_t [BH, T, 1, D]
    resets: torch.Tensor | None  # [T] chunk-end flags of the reverse scan


def frame_gdn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    q_rot: torch.Tensor,
    k_rot: torch.Tensor,
    mode: Mode,
    chunk_sizes: list[int] | None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None,
    eps: float,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], ForwardSaved, torch.Tensor]:
    """Forward phases A → B → C on validated inputs.

    Returns (o [B, T, S, H, Dv] in q's dtype, final state (S [B, H, Dv, D], z [B, H, D]) fp32,
    saved tensors for the backward, non-finite counts [3, B, H, T] int32)."""
    B, T, S, H, D = q.shape
    Dv = v.shape[-1]
    BH, dev = B * H, q.device
    f32 = {"device": dev, "dtype": torch.float32}
    dims = _dims(D, Dv)
    flags = torch.zeros(3, BH, T, device=dev, dtype=torch.int32)
    M, N = torch.empty(BH, T, D, D, **f32), torch.empty(BH, T, D, D, **f32)
    W, u = torch.empty(BH, T, Dv, D, **f32), torch.empty(BH, T, 1, D, **f32)
    for group, state_path in ((0, True), (1, False)):
        _kernels()._gram_fwd_kernel[(T, BH)](
            k, v, k_rot, beta, M, W, N, u, flags[group], T, S, H,
            D=D, DV=Dv, STATE_PATH=state_path, **dims, **_tiles(q.dtype),
        )
    S0, z0 = (None, None) if initial_state is None else (initial_state[0].view(BH, Dv, D), initial_state[1].view(BH, 1, D))
    resets = reverse_reset_flags(mode, chunk_sizes, T, dev)
    fwd = {"reverse": False, "add_first": False, "store_before": False, "want_final": True}
    rev = {"reverse": True, "add_first": False, "store_before": True, "resets": resets}
    jobs = [lambda: affine_scan(M, W, gamma, init=S0, **fwd), lambda: affine_scan(N, u, gamma, init=z0, **fwd)]
    if resets is not None:
        jobs += [lambda: affine_scan(M, W, gamma, **rev), lambda: affine_scan(N, u, gamma, **rev)]
    scans = _concurrently(*jobs)
    (states, S_last), (zs, z_last) = scans[:2]
    rev_states, rev_zs = (scans[2][0], scans[3][0]) if resets is not None else (None, None)
    o = torch.empty(B, T, S, H, Dv, device=dev, dtype=q.dtype)
    has_rev = resets is not None
    _kernels()._output_fwd_kernel[(T, BH)](
        q, q_rot, states, rev_states if has_rev else states, zs, rev_zs if has_rev else zs, o, flags[2],
        T, S, H, eps, D=D, DV=Dv, HAS_REV=has_rev, **dims, **_tiles(q.dtype),
    )
    saved = ForwardSaved(M, N, states, zs, rev_states, rev_zs, resets)
    final = (S_last.view(B, H, Dv, D), z_last.view(B, H, D))
    return o, final, saved, flags.view(3, B, H, T)


def frame_gdn_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    q_rot: torch.Tensor,
    k_rot: torch.Tensor,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None,
    saved: ForwardSaved,
    do: torch.Tensor,
    d_final: tuple[torch.Tensor, torch.Tensor] | None,
    eps: float,
) -> tuple[torch.Tensor, ...]:
    """Backward with its own kernels: adjoint of C, adjoint scans of B, adjoint of A.

    do: [B, T, S, H, Dv]; d_final: gradients of the returned final state or None.
    Returns (dq, dk, dv, dbeta, dgamma, dq_rot, dk_rot, dS0 [B, H, Dv, D], dz0 [B, H, D])."""
    B, T, S, H, D = q.shape
    Dv = v.shape[-1]
    BH, dev = B * H, q.device
    f32 = {"device": dev, "dtype": torch.float32}
    dims = _dims(D, Dv)
    has_rev = saved.resets is not None
    rev_states = saved.rev_states if has_rev else saved.states
    rev_zs = saved.rev_zs if has_rev else saved.zs
    dq, dq_rot = torch.empty_like(q), torch.empty_like(q_rot)
    dH, dzeta = torch.empty(BH, T, Dv, D, **f32), torch.empty(BH, T, 1, D, **f32)
    _kernels()._output_bwd_kernel[(T, BH)](
        q, q_rot, do, saved.states, rev_states, saved.zs, rev_zs, dq, dq_rot, dH, dzeta,
        T, S, H, eps, D=D, DV=Dv, HAS_REV=has_rev, **dims, **_tiles(q.dtype),
    )
    dS_last = dz_last = None
    if d_final is not None:
        dS_last, dz_last = d_final[0].contiguous().view(BH, Dv, D), d_final[1].contiguous().view(BH, 1, D)
    # G_t: gradient reaching the forward state S_t (reverse scan, inclusive).
    grad_fwd = {"reverse": True, "add_first": True, "store_before": True, "want_final": True}
    jobs = [lambda: affine_scan(saved.M, dH, gamma, init=dS_last, **grad_fwd),
            lambda: affine_scan(saved.N, dzeta, gamma, init=dz_last, **grad_fwd)]
    if has_rev:
        # Ẽ_t: gradient reaching R_{t-1} (forward scan, exclusive, restarting at chunk starts).
        grad_rev = {"reverse": False, "add_first": False, "store_before": True, "resets": chunk_start_flags(saved.resets)}
        jobs += [lambda: affine_scan(saved.M, dH, gamma, **grad_rev), lambda: affine_scan(saved.N, dzeta, gamma, **grad_rev)]
    scans = _concurrently(*jobs)
    (G, dS0), (Gz, dz0) = scans[:2]
    E, Ez = (scans[2][0], scans[3][0]) if has_rev else (G, Gz)
    dk, dv, dk_rot = torch.empty_like(k), torch.empty_like(v), torch.empty_like(k_rot)
    dbeta = torch.empty(2, B, T, S, H, **f32)
    dgamma = torch.empty(2, B, T, H, **f32)
    S0, z0 = (saved.states, saved.zs) if initial_state is None else initial_state
    for state_path in (True, False):
        _kernels()._gram_bwd_kernel[(T, BH)](
            k, v, k_rot, beta, gamma, saved.M, saved.N, saved.states, rev_states, saved.zs, rev_zs, S0, z0,
            G, E, Gz, Ez, dk, dv, dk_rot, dbeta, dgamma, B, T, S, H,
            D=D, DV=Dv, BLOCK_R=BLOCK_R_GRAD, HAS_REV=has_rev, HAS_INIT=initial_state is not None,
            PRECISION=_scan_precision(dev), STATE_PATH=state_path, **dims, **_tiles(q.dtype),
        )
    return (
        dq, dk, dv, dbeta.sum(0).to(beta.dtype), dgamma.sum(0).to(gamma.dtype), dq_rot, dk_rot,
        dS0.view(B, H, Dv, D), dz0.view(B, H, D),
    )


# The op is two torch.library custom ops (forward, backward) with a registered autograd
# formula and shape-only fake kernels: torch.compile sees one opaque node per call (no graph
# break, so a compiled block stays whole), and activation checkpointing recomputes the
# forward's saved Grams and states (~1 GB a layer at 121 frames) like any saved tensor.
# Tensors the reverse scan does not produce (causal mode) are returned empty ([BH, 0, ...]).


def _no_reverse(like: torch.Tensor, BH: int, rows: int, D: int) -> torch.Tensor:
    return like.new_empty(BH, 0, rows, D, dtype=torch.float32)


@torch.library.custom_op("wmkit::frame_gdn_forward", mutates_args=())
def _forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor,
    q_rot: torch.Tensor, k_rot: torch.Tensor, S0: torch.Tensor | None, z0: torch.Tensor | None,
    mode: str, chunk_sizes: list[int] | None, eps: float, check_values: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """(o, S_last, z_last, M, N, states, zs, rev_states, rev_zs) of `frame_gdn_fwd`."""
    if check_values:
        check_frame_gdn_values(beta, gamma)
    initial_state = None if S0 is None else (S0, z0)
    o, final, saved, flags = frame_gdn_fwd(q, k, v, beta, gamma, q_rot, k_rot, mode, chunk_sizes, initial_state, eps)
    if check_values:
        raise_on_nonfinite(flags, NONFINITE_GROUPS)
    BH, D, Dv = saved.M.shape[0], q.shape[-1], v.shape[-1]
    rev_states = _no_reverse(q, BH, Dv, D) if saved.rev_states is None else saved.rev_states
    rev_zs = _no_reverse(q, BH, 1, D) if saved.rev_zs is None else saved.rev_zs
    return o, final[0], final[1], saved.M, saved.N, saved.states, saved.zs, rev_states, rev_zs


@_forward_op.register_fake
def _(q, k, v, beta, gamma, q_rot, k_rot, S0, z0, mode, chunk_sizes, eps, check_values):  # noqa: ANN001, ANN202
    B, T, S, H, D = q.shape
    Dv, BH, Tr = v.shape[-1], B * H, 0 if mode == "causal" else T
    f32 = lambda *shape: q.new_empty(shape, dtype=torch.float32)  # noqa: E731
    return (q.new_empty(B, T, S, H, Dv), f32(B, H, Dv, D), f32(B, H, D), f32(BH, T, D, D), f32(BH, T, D, D),
            f32(BH, T, Dv, D), f32(BH, T, 1, D), f32(BH, Tr, Dv, D), f32(BH, Tr, 1, D))


@torch.library.custom_op("wmkit::frame_gdn_backward", mutates_args=())
def _backward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor,
    q_rot: torch.Tensor, k_rot: torch.Tensor, S0: torch.Tensor | None, z0: torch.Tensor | None,
    M: torch.Tensor, N: torch.Tensor, states: torch.Tensor, zs: torch.Tensor, rev_states: torch.Tensor,
    rev_zs: torch.Tensor, do: torch.Tensor, dS_last: torch.Tensor | None, dz_last: torch.Tensor | None,
    mode: str, chunk_sizes: list[int] | None, eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dbeta, dgamma, dq_rot, dk_rot, dS0, dz0) of `frame_gdn_bwd`."""
    resets = reverse_reset_flags(mode, chunk_sizes, q.shape[1], q.device)
    has_rev = resets is not None
    saved = ForwardSaved(M, N, states, zs, rev_states if has_rev else None, rev_zs if has_rev else None, resets)
    initial_state = None if S0 is None else (S0, z0)
    d_final = None if dS_last is None and dz_last is None else (
        torch.zeros_like(states[:, 0]) if dS_last is None else dS_last,
        torch.zeros_like(zs[:, 0, 0]) if dz_last is None else dz_last,
    )
    return frame_gdn_bwd(q, k, v, beta, gamma, q_rot, k_rot, initial_state, saved, do.contiguous(), d_final, eps)


@_backward_op.register_fake
def _(q, k, v, beta, gamma, q_rot, k_rot, S0, z0, M, N, states, zs, rev_states, rev_zs, do, dS_last, dz_last,  # noqa: ANN001, ANN202
      mode, chunk_sizes, eps):
    B, _, _, H, D = q.shape
    Dv = v.shape[-1]
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta),
            torch.empty_like(gamma), torch.empty_like(q_rot), torch.empty_like(k_rot),
            q.new_empty(B, H, Dv, D, dtype=torch.float32), q.new_empty(B, H, D, dtype=torch.float32))


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    q, k, v, beta, gamma, q_rot, k_rot, S0, z0, mode, chunk_sizes, eps, _ = inputs
    ctx.mode, ctx.chunk_sizes, ctx.eps = mode, chunk_sizes, eps
    ctx.mark_non_differentiable(*output[3:])
    ctx.save_for_backward(q, k, v, beta, gamma, q_rot, k_rot, S0, z0, *output[3:])


def _backward(ctx, do, dS_last, dz_last, *_):  # noqa: ANN001, ANN202
    q, k, v, beta, gamma, q_rot, k_rot, S0, z0, *saved = ctx.saved_tensors
    grads = torch.ops.wmkit.frame_gdn_backward(q, k, v, beta, gamma, q_rot, k_rot, S0, z0, *saved, do, dS_last,
                                               dz_last, ctx.mode, ctx.chunk_sizes, ctx.eps)
    dS0, dz0 = (None, None) if S0 is None else (grads[7], grads[8])
    return (*grads[:7], dS0, dz0, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def frame_gdn(
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
    """Frame-wise Gated DeltaNet (DESIGN §3.4–3.6), Triton forward and backward.

    Per head, frame t of S tokens updates the fp32 state with one rank-S delta step
    S_t = γ_t S_{t−1}(I − K̃_tᵀB_tK̃_t) + V_tᵀB_tK̃_t, the normaliser
    z_t = γ_t(I − K_tᵀB_tK_t)z_{t−1} + K_tᵀβ_t, and outputs o = (H_t q̃) / (ζ_tᵀq + eps).

    Args:
        q, k: [B, T, S, H, D] unrotated query/key (normaliser and denominator). k must
            already be ReLU'd and scaled by 1/sqrt(D·S) (DESIGN §3.2): the op does not scale.
        v: [B, T, S, H, Dv] values.
        beta: [B, T, S, H] per-token write strength in [0, 1].
        gamma: [B, T, H] per-frame decay in (0, 1].
        q_rot, k_rot: [B, T, S, H, D] RoPE-rotated q̃, k̃ (numerator; erase and write terms).
        mode: "causal" (frames <= t), "bidirectional" (+ reverse over frames > t) or
            "chunk_causal" (global forward + reverse confined to t's chunk).
        chunk_sizes: frames per chunk for chunk_causal (default `chunk_sizes_for(T)`).
        initial_state: (S [B, H, Dv, D], z [B, H, D]) fp32 entering the forward scan.
        return_final_state: also return the forward scan's last (S, z), fp32.
        eps: added to the raw denominator (no abs, no clamp).
        check_values: check gamma in (0, 1] and NaN in the inputs (one host sync
            before and one after the kernels); turn off inside CUDA graphs.
    q, k, v, q_rot, k_rot share one dtype (bf16, fp16 or fp32); the state is fp32.
    Returns o [B, T, S, H, Dv] in q's dtype, and (S, z) if return_final_state.
    """
    check_frame_gdn_args(q, k, v, beta, gamma, q_rot, k_rot, mode, chunk_sizes, initial_state)
    S0, z0 = (None, None) if initial_state is None else initial_state
    o, S_last, z_last, *_ = torch.ops.wmkit.frame_gdn_forward(
        q, k, v, beta, gamma, q_rot, k_rot, S0, z0, mode, None if chunk_sizes is None else list(chunk_sizes), eps, check_values
    )
    if return_final_state:
        return o, (S_last, z_last)
    return o
