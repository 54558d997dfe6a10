"""Argument checks shared by `frame_gdn` and `frame_gdn_ref` (one message format for both)."""

from __future__ import annotations

from typing import get_args, Literal

import torch

from .chunks import check_chunk_sizes

Mode = Literal["causal", "bidirectional", "chunk_causal"]
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the Triton op takes
REFERENCE_DTYPES = (*FLOAT_DTYPES, torch.float64)  # the reference also runs the float64 spec checks


def check_frame_gdn_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    q_rot: torch.Tensor,
    k_rot: torch.Tensor,
    mode: str,
    chunk_sizes: list[int] | None,
    initial_state: tuple[torch.Tensor, torch.Tensor] | None,
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES,
) -> None:
    """Raise ValueError/TypeError naming the argument for wrong shapes, dtypes, devices,
    non-contiguous tensors, an unknown mode or a bad chunk layout (no device sync)."""
    if mode not in get_args(Mode):
        raise ValueError(f"frame_gdn: mode must be one of {get_args(Mode)}, got {mode!r}")
    named = {"q": q, "k": k, "v": v, "beta": beta, "gamma": gamma, "q_rot": q_rot, "k_rot": k_rot}
    for name, x in named.items():
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"frame_gdn: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in dtypes:
            raise TypeError(f"frame_gdn: {name} has dtype {x.dtype}; expected one of {dtypes}")
        if x.device != q.device:
            raise ValueError(f"frame_gdn: {name} is on {x.device} but q is on {q.device}")
        if not x.is_contiguous():
            raise ValueError(f"frame_gdn: {name} with shape {tuple(x.shape)} is not contiguous; call .contiguous()")
    if q.dim() != 5:
        raise ValueError(f"frame_gdn: q must be [B, T, S, H, D], got shape {tuple(q.shape)}")
    B, T, S, H, D = q.shape
    for name in ("k", "q_rot", "k_rot"):
        if named[name].shape != q.shape:
            raise ValueError(f"frame_gdn: {name} has shape {tuple(named[name].shape)}, q has {tuple(q.shape)}")
    for name in ("k", "v", "q_rot", "k_rot"):
        if named[name].dtype != q.dtype:
            raise TypeError(f"frame_gdn: {name} has dtype {named[name].dtype}, q has {q.dtype}")
    if v.dim() != 5 or v.shape[:4] != (B, T, S, H):
        raise ValueError(f"frame_gdn: v must be [B, T, S, H, Dv] = [{B}, {T}, {S}, {H}, Dv], got {tuple(v.shape)}")
    if beta.shape != (B, T, S, H):
        raise ValueError(f"frame_gdn: beta must be [B, T, S, H] = {(B, T, S, H)}, got {tuple(beta.shape)}")
    if gamma.shape != (B, T, H):
        raise ValueError(f"frame_gdn: gamma must be [B, T, H] = {(B, T, H)}, got {tuple(gamma.shape)}")
    if min(B, T, S, H, D, v.shape[-1]) < 1:
        raise ValueError(f"frame_gdn: empty dimension in q {tuple(q.shape)} / v {tuple(v.shape)}")
    if chunk_sizes is not None:
        if mode != "chunk_causal":
            raise ValueError(f"frame_gdn: chunk_sizes is only used by mode='chunk_causal', got mode={mode!r}")
        check_chunk_sizes(chunk_sizes, T)
    if initial_state is not None:
        state, z = initial_state
        Dv = v.shape[-1]
        if state.shape != (B, H, Dv, D) or z.shape != (B, H, D):
            raise ValueError(
                f"frame_gdn: initial_state must be ([B, H, Dv, D], [B, H, D]) = ({(B, H, Dv, D)}, {(B, H, D)}), "
                f"got ({tuple(state.shape)}, {tuple(z.shape)})"
            )
        for name, x in (("initial_state[0]", state), ("initial_state[1]", z)):
            state_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
            if x.dtype != state_dtype:
                raise TypeError(f"frame_gdn: {name} must be {state_dtype} (the state dtype for {q.dtype} inputs), got {x.dtype}")
            if x.device != q.device:
                raise ValueError(f"frame_gdn: {name} is on {x.device} but q is on {q.device}")
            if not x.is_contiguous():
                raise ValueError(f"frame_gdn: {name} is not contiguous")


def check_frame_gdn_values(beta: torch.Tensor, gamma: torch.Tensor) -> None:
    """Raise ValueError for gamma outside (0, 1] or NaN in gamma/beta (one host sync).

    gamma and beta are small ([B, T, H], [B, T, S, H]); NaN in the large tensors is
    caught after the forward through the per-frame reductions (see `raise_on_nonfinite`)."""
    bad_gamma = ~((gamma > 0) & (gamma <= 1))  # NaN compares False, so it lands here too
    bad_beta = torch.isnan(beta)
    flags = torch.stack([bad_gamma.any(), bad_beta.any()]).tolist()
    if flags[0]:
        b, t, h = (int(i) for i in bad_gamma.nonzero()[0])
        raise ValueError(
            f"frame_gdn: gamma must lie in (0, 1]; gamma[{b}, {t}, {h}] = {gamma[b, t, h].item()} (batch, frame, head)"
        )
    if flags[1]:
        b, t, s, h = (int(i) for i in bad_beta.nonzero()[0])
        raise ValueError(f"frame_gdn: beta is NaN at [{b}, {t}, {s}, {h}] (batch, frame, token, head)")


def raise_on_nonfinite(flags: torch.Tensor, names: tuple[str, ...]) -> None:
    """Raise ValueError if any per-(group, batch·head, frame) non-finite count is set.

    flags: [G, B, H, T] int32 counts of non-finite values found by the kernels, group g
    covering the inputs named names[g]."""
    if not bool(flags.any()):
        return
    g, b, h, t = (int(i) for i in flags.nonzero()[0])
    raise ValueError(
        f"frame_gdn: non-finite values (NaN/Inf) from {names[g]} at batch {b}, frame {t}, head {h}"
    )
