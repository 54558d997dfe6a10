"""Chunk layout of the chunk-causal mode (DESIGN §3.6).

Frames are grouped into chunks; the reverse scan of a frame stops at the end of
its chunk while the forward scan runs over all frames::

    frames  0 1 2 3 | 4 5 6 | 7 8 9 10      (T = 11)
    chunks  [   4   ] [  3  ] [   4   ]      first chunk 4, then 3; a tail < 3 merges back
"""

from __future__ import annotations

import torch

FIRST_CHUNK = 4
NEXT_CHUNK = 3


def small_tensor(values: list, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A small tensor of Python values on `device`, copied without waiting for the device:
    `torch.tensor(values, device=cuda)` synchronises the stream (its copy is blocking), which
    inside a training step drains the GPU's queue once per call. A copy from pageable memory
    with `non_blocking` stages the values at once, so the CPU tensor may go right after."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def chunk_sizes_for(T: int) -> list[int]:
    """Frames per chunk for T frames: first 4, then 3; a tail shorter than 3 merges
    into the previous chunk; T <= 4 is one chunk (chunk-causal equals bidirectional).

    >>> chunk_sizes_for(8), chunk_sizes_for(9), chunk_sizes_for(11)
    ([4, 4], [4, 5], [4, 3, 4])
    """
    if T < 1:
        raise ValueError(f"chunk_sizes_for: T must be >= 1 frames, got {T}")
    if T <= FIRST_CHUNK:
        return [T]
    sizes = [FIRST_CHUNK]
    rest = T - FIRST_CHUNK
    while rest >= NEXT_CHUNK:
        sizes.append(NEXT_CHUNK)
        rest -= NEXT_CHUNK
    sizes[-1] += rest
    return sizes


def check_chunk_sizes(chunk_sizes: list[int], T: int) -> None:
    """Raise ValueError unless chunk_sizes are positive and sum to T frames."""
    if any(int(c) < 1 for c in chunk_sizes) or sum(chunk_sizes) != T:
        raise ValueError(f"chunk_sizes {list(chunk_sizes)} must be positive and sum to T={T} frames")


def chunk_start_flags(chunk_ends: torch.Tensor) -> torch.Tensor:
    """[T] int32, 1 on the first frame of each chunk, from the [T] chunk-end flags."""
    starts = torch.ones_like(chunk_ends)
    starts[1:] = chunk_ends[:-1]
    return starts


def reverse_chunk_ends(mode: str, chunk_sizes: list[int] | None, T: int) -> list[bool] | None:
    """Per frame, True where the reverse scan restarts (last frame of a chunk); None in
    causal mode. bidirectional: one chunk over all T frames; chunk_causal: `chunk_sizes`
    (default `chunk_sizes_for(T)`). Plain Python so torch.compile sees constants."""
    if mode == "causal":
        return None
    sizes = [T] if mode == "bidirectional" else (chunk_sizes_for(T) if chunk_sizes is None else list(chunk_sizes))
    ends = [False] * T
    last = -1
    for size in sizes:
        last += size
        ends[last] = True
    return ends


def reverse_reset_flags(mode: str, chunk_sizes: list[int] | None, T: int, device: torch.device | str) -> torch.Tensor | None:
    """[T] int32 form of `reverse_chunk_ends` for the kernels, or None in causal mode."""
    ends = reverse_chunk_ends(mode, chunk_sizes, T)
    return None if ends is None else small_tensor(ends, torch.int32, device)
