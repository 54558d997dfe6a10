"""Context parallelism through scan composition: a sequence split over 2 gloo ranks on
CPU gives the unsplit outputs and gradients (Triton op, interpreted); bidirectional adds
the reverse-state exchange to the op's output."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from _dist_fixtures import spawn_collect
from _gdn_fixtures import NAMES, gdn_inputs
from wmkit.kernels import chunk_sizes_for, frame_gdn, frame_gdn_context_parallel

B, T, S, H, D, DV = 1, 11, 5, 2, 8, 6
SPLIT = 7  # chunks [4, 3 | 4]: the slices start on chunk boundaries


def _worker(rank: int, port: int, results: dict, mode: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        xs = gdn_inputs(B, T, S, H, D, DV, seed=11)
        do = torch.randn(B, T, S, H, DV, generator=torch.Generator().manual_seed(12))
        # unsplit: every rank computes it whole
        full = frame_gdn(*xs, mode=mode)
        full_grads = torch.autograd.grad((full * do).sum(), xs)
        # split: this rank holds frames [lo, hi)
        lo, hi = (0, SPLIT) if rank == 0 else (SPLIT, T)
        local = [x.detach()[:, lo:hi].contiguous().requires_grad_() for x in xs]
        sizes = chunk_sizes_for(T)[:2] if rank == 0 else chunk_sizes_for(T)[2:]
        out = frame_gdn_context_parallel(*local, mode=mode, chunk_sizes=sizes if mode == "chunk_causal" else None)
        grads = torch.autograd.grad((out * do[:, lo:hi]).sum(), local)
        results[rank] = {
            "out": (out - full[:, lo:hi]).abs().max().item(),
            **{name: (g - fg[:, lo:hi]).abs().max().item() / fg[:, lo:hi].abs().max().item()
               for name, g, fg in zip(NAMES, grads, full_grads)},
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["causal", "chunk_causal", "bidirectional"])
def test_two_rank_split_matches_unsplit(mode):
    results = spawn_collect(_worker, 2, mode)
    assert set(results) == {0, 1}
    for rank, errs in results.items():
        for name, err in errs.items():
            assert err < 1e-5, f"rank {rank} {name}: {err:.2e}"
