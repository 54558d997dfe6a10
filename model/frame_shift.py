"""Frame-axis convolutions under the three attention modes, with history for rollouts.

A conv over frames is a sum of shifted copies of the sequence. Past shifts read the
carried history (zeros at the start of a clip), so they run globally across chunks;
future shifts stop at the end of the frame's chunk (zeros beyond it)::

    chunks      [ 0 1 2 3 ] [ 4 5 6 ]
    x_{t+1}       1 2 3 0     5 6 0      future shift confined to the chunk
    x_{t-1}      h 0 1 2     3 4 5      past shift global (h: last frame of the history)

Bidirectional mode is one chunk over all frames; a rollout calls with one chunk at a time
and the history of the previous chunks, and gets the same values as the full pass. Under
context parallelism the history is the previous rank's last frames and `future` the next
rank's first frames (`model/context_parallel.py`).
"""

from __future__ import annotations

import torch

from wmkit.kernels.chunks import small_tensor


def chunk_ids(chunk_sizes: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """[T] chunk index of every frame (built on the host: no device sync)."""
    return small_tensor([i for i, size in enumerate(chunk_sizes) for _ in range(size)], torch.int64, device)


def shift_frames(
    x: torch.Tensor, shift: int, history: torch.Tensor, chunks: torch.Tensor, future: torch.Tensor | None = None
) -> torch.Tensor:
    """x [B, T, ...] moved so frame t holds frame t + shift.

    shift < 0 reads `history` [B, P, ...] (the P frames before x, P >= −shift) where it
    reaches before frame 0; shift > 0 reads zeros where t + shift leaves t's chunk
    (chunks: [T] chunk index per frame). `future` [B, F, ...]: the frames after x (a
    context-parallel halo), read where t + shift < T + F; chunks then covers them too ([T + F])."""
    T = x.shape[1]
    if shift == 0:
        return x
    if shift < 0:
        full = torch.cat([history, x], 1)
        start = history.shape[1] + shift
        return full[:, start : start + T]
    ext = x if future is None else torch.cat([x, future], 1)
    n = max(0, min(T, ext.shape[1] - shift))  # frames of t + shift that exist
    moved = torch.cat([ext[:, shift : shift + n], torch.zeros_like(x[:, : T - n])], 1)
    ahead = torch.cat([chunks[shift : shift + n], torch.full((T - n,), -1, device=chunks.device, dtype=chunks.dtype)])
    keep = (ahead == chunks[:T]).to(x.dtype).view(1, T, *([1] * (x.dim() - 2)))
    return moved * keep


def new_history(x: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """The last history.shape[1] frames of history followed by x (the next call's history)."""
    P = history.shape[1]
    # clone: a slice would keep the whole concatenation (every frame of x) alive in the cache.
    return torch.cat([history, x], 1)[:, -P:].clone() if P else history


def empty_history(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Zero history of `frames` frames shaped like x [B, T, ...]: the start of a clip."""
    return x.new_zeros(x.shape[0], frames, *x.shape[2:])
