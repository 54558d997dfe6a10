"""Context parallelism at the op level on 2 gloo ranks: frames split over the ranks give the
unsplit GDN op's and softmax attention's outputs and input gradients."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _gdn_fixtures import NAMES, gdn_inputs
from wmkit.kernels import chunk_sizes_for, frame_gdn_ref
from wmkit.model.softmax_attention import block_causal_mask
from wmkit.train.parallel import context_parallel_attention, context_parallel_gdn, frame_slice

B, T, S, H, D = 1, 11, 6, 2, 8
SPLIT = 7  # chunks [4, 3 | 4]: the GDN slices start on chunk boundaries


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gdn_errors(rank: int) -> dict[str, float]:
    xs = gdn_inputs(B, T, S, H, D, D, seed=3)
    do = torch.randn(B, T, S, H, D, generator=torch.Generator().manual_seed(4))
    full = frame_gdn_ref(*xs, mode="chunk_causal")
    full_grads = torch.autograd.grad((full * do).sum(), xs)
    lo, hi = (0, SPLIT) if rank == 0 else (SPLIT, T)
    local = [x.detach()[:, lo:hi].clone().requires_grad_() for x in xs]
    sizes = chunk_sizes_for(T)[:2] if rank == 0 else chunk_sizes_for(T)[2:]
    out = context_parallel_gdn(*local, mode="chunk_causal", chunk_sizes=sizes)
    grads = torch.autograd.grad((out * do[:, lo:hi]).sum(), local)
    errs = {"gdn out": (out - full[:, lo:hi]).abs().max().item()}
    for name, g, fg in zip(NAMES, grads, full_grads):
        errs[f"gdn d{name}"] = (g - fg[:, lo:hi]).abs().max().item()
    return errs


def _attention_errors(rank: int, mode: str) -> dict[str, float]:
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, H, T * S, D, generator=g, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, T * S, D, generator=g)
    chunks = torch.repeat_interleave(torch.arange(3), torch.tensor(chunk_sizes_for(T)))
    mask = None if mode == "bidirectional" else block_causal_mask(chunks, S, 0)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    full_grads = torch.autograd.grad((full * do).sum(), (q, k, v))
    lo, hi = (s * S for s in frame_slice(T, rank, 2))
    local = [x.detach()[:, :, lo:hi].clone().requires_grad_() for x in (q, k, v)]
    out = context_parallel_attention(*local, mask=None if mask is None else mask[lo:hi])
    grads = torch.autograd.grad((out * do[:, :, lo:hi]).sum(), local)
    errs = {f"{mode} out": (out - full[:, :, lo:hi]).abs().max().item()}
    for name, gr, fg in zip("qkv", grads, full_grads):
        errs[f"{mode} d{name}"] = (gr - fg[:, :, lo:hi]).abs().max().item()
    return errs


def _worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        errs = _gdn_errors(rank)
        for mode in ("bidirectional", "chunk_causal"):
            errs |= _attention_errors(rank, mode)
        results[rank] = errs
    finally:
        dist.destroy_process_group()


def test_split_frames_match_the_unsplit_ops():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
        results = dict(results)
    assert set(results) == {0, 1}
    for rank, errs in results.items():
        for name, err in errs.items():
            assert err < 1e-5, f"rank {rank} {name}: {err:.2e}"


@pytest.mark.parametrize(("frames", "world", "want"), [(11, 2, [(0, 6), (6, 11)]), (4, 4, [(0, 1), (1, 2), (2, 3), (3, 4)]),
                                                     (5, 3, [(0, 2), (2, 4), (4, 5)])])
def test_frame_slices_cover_the_clip_in_order(frames, world, want):
    assert [frame_slice(frames, r, world) for r in range(world)] == want
