"""Context parallelism of `GDNDiT`: one clip's latent frames split over ranks (DESIGN §3.7).

Each rank of a context-parallel group holds a contiguous slice of the clip's latent frames
(rank order = frame order) and runs every block on it; the result on each rank equals its
slice of the unsplit forward, in both modes. What looks across frames gets its neighbours::

    ranks            0: frames [0, 5)        1: frames [5, 9)
    k frame conv     halo: 3 frames each side from the neighbouring slices (zeros at the clip ends)
    FFN time conv    halo: 1 frame each side
    GDN op           forward composite in, reverse composite in (kernels/scan.py)
    softmax          keys/values all-gathered; each query chunk sees the key prefix ending with its global chunk
    RoPE, chunk ids  global frame indexes [start, stop); per-frame timesteps and cameras: the slice's

The model never imports torch.distributed (STYLE §1): the collectives come in as a
`FrameExchange`, which `wmkit.train.parallel.GroupExchange` implements over a process group.
A context-parallel call carries no cache (no rollout state) and returns none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from wmkit.kernels.scan import slice_chunks

from .frame_shift import chunk_ids


class FrameExchange(Protocol):
    """Differentiable collectives over the ranks that share one clip's frames."""

    def halo(self, x: torch.Tensor, before: int, after: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T_local, ...] → (the `before` frames preceding this slice, the `after` frames
        following it), each [B, n, ...], zeros beyond the clip's ends."""

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, N_local, D] → every rank's tokens in rank order [B, H, N, D]."""

    def gdn(self, op: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            beta: torch.Tensor, gamma: torch.Tensor, q_rot: torch.Tensor, k_rot: torch.Tensor, *, mode: str,
            chunk_sizes: list[int] | None, first_chunk_continues: bool, eps: float) -> torch.Tensor:
        """Frame-wise GDN of this slice (`wmkit.kernels.frame_gdn_context_parallel` arguments)."""


@dataclass(frozen=True)
class CPContext:
    """This rank's place in a context-parallel forward: its frames and the collectives."""

    frames: tuple[int, int]
    """[start, stop) latent frames of the clip this rank holds."""
    total: int
    """Latent frames of the whole clip."""
    exchange: FrameExchange

    def __post_init__(self) -> None:
        start, stop = self.frames
        if not 0 <= start < stop <= self.total:
            raise ValueError(f"CPContext: frames [{start}, {stop}) are not a slice of a {self.total}-frame clip")

    def chunks(self, chunk_sizes: list[int], ahead: int, device: torch.device) -> torch.Tensor:
        """Chunk index of this slice's frames and of the `ahead` frames after it (−1 beyond the
        clip): [T_local + ahead], what `shift_frames` compares for future taps over a halo."""
        start, stop = self.frames
        ids = chunk_ids(chunk_sizes, device)
        return torch.cat([ids, ids.new_full((ahead,), -1)])[start : stop + ahead]

    def gdn(self, op: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            beta: torch.Tensor, gamma: torch.Tensor, q_rot: torch.Tensor, k_rot: torch.Tensor, *, mode: str,
            chunk_sizes: list[int] | None, eps: float) -> torch.Tensor:
        """Frame-wise GDN of this slice; chunk_sizes: the clip's layout (chunk_causal), cut here."""
        local, continues = (None, False) if mode == "bidirectional" else slice_chunks(chunk_sizes, *self.frames)
        return self.exchange.gdn(op, q, k, v, beta, gamma, q_rot, k_rot, mode=mode, chunk_sizes=local,
                                 first_chunk_continues=continues, eps=eps)


__all__ = ["CPContext", "FrameExchange"]
