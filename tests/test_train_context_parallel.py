"""Context parallelism at the op level on 2 gloo ranks: frames split over the ranks give the
unsplit GDN op's (chunk-causal with slices on or across chunk edges, bidirectional) and
softmax attention's outputs and input gradients."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from _dist_fixtures import spawn_collect
from _gdn_fixtures import NAMES, gdn_inputs
from _model_fixtures import block_causal_mask
from wmkit.kernels import chunk_sizes_for, frame_gdn_ref
from wmkit.kernels.scan import frame_gdn_context_parallel, slice_chunks
from wmkit.model.softmax_attention import chunk_spans
from wmkit.train.parallel import GroupExchange, context_parallel_attention, context_parallel_gdn, frame_slice

B, T, S, H, D = 1, 11, 6, 2, 8
SPLIT = 7  # chunks [4, 3 | 4]: slices on chunk boundaries (frame_slice's [0, 6) | [6, 11) cuts one)


def _untouched_by_autocast(*args, **kwargs):
    """The reference op as the Triton op runs under autocast: its own precision (fp32 here)."""
    with torch.autocast("cpu", enabled=False):
        return frame_gdn_ref(*args, **kwargs)


def _gdn_errors(rank: int, mode: str, lo_hi: list[tuple[int, int]], autocast: bool = False) -> dict[str, float]:
    """The split op against the unsplit one with rank r holding frames lo_hi[r]; with
    `autocast`, the split call runs under bf16 autocast (as in training on a GPU), whose
    matmuls would otherwise round the exchanged composites to bf16 (~1e-2)."""
    xs = gdn_inputs(B, T, S, H, D, D, seed=3)
    do = torch.randn(B, T, S, H, D, generator=torch.Generator().manual_seed(4))
    full = frame_gdn_ref(*xs, mode=mode)
    full_grads = torch.autograd.grad((full * do).sum(), xs)
    lo, hi = lo_hi[rank]
    local = [x.detach()[:, lo:hi].clone().requires_grad_() for x in xs]
    kw = {}
    if mode == "chunk_causal":
        sizes, continues = slice_chunks(chunk_sizes_for(T), lo, hi)
        kw = {"chunk_sizes": sizes, "first_chunk_continues": continues}
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = frame_gdn_context_parallel(*local, mode=mode, op=_untouched_by_autocast, **kw)
    else:
        out = context_parallel_gdn(*local, mode=mode, **kw)
    grads = torch.autograd.grad((out * do[:, lo:hi]).sum(), local)
    case = f"gdn {mode} {lo_hi}{' autocast' if autocast else ''}"
    errs = {f"{case} out": (out - full[:, lo:hi]).abs().max().item()}
    for name, g, fg in zip(NAMES, grads, full_grads):
        errs[f"{case} d{name}"] = (g - fg[:, lo:hi]).abs().max().item()
    return errs


def _attention_errors(rank: int, mode: str) -> dict[str, float]:
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(B, H, T * S, D, generator=g, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, T * S, D, generator=g)
    chunks = torch.repeat_interleave(torch.arange(3), torch.tensor(chunk_sizes_for(T)))
    mask = None if mode == "bidirectional" else block_causal_mask(chunks, chunks, S)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    full_grads = torch.autograd.grad((full * do).sum(), (q, k, v))
    frames = frame_slice(T, rank, 2)  # [0, 6) | [6, 11): rank 1's first frame ends chunk [4, 7)
    lo, hi = (s * S for s in frames)
    local = [x.detach()[:, :, lo:hi].clone().requires_grad_() for x in (q, k, v)]
    spans = None if mask is None else chunk_spans(chunk_sizes_for(T), frames, S)
    out = context_parallel_attention(*local, spans=spans)
    grads = torch.autograd.grad((out * do[:, :, lo:hi]).sum(), local)
    errs = {f"{mode} out": (out - full[:, :, lo:hi]).abs().max().item()}
    for name, gr, fg in zip("qkv", grads, full_grads):
        errs[f"{mode} d{name}"] = (gr - fg[:, :, lo:hi]).abs().max().item()
    return errs


def _worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        aligned, even = [(0, SPLIT), (SPLIT, T)], [frame_slice(T, r, 2) for r in range(2)]
        errs = _gdn_errors(rank, "chunk_causal", aligned)
        errs |= _gdn_errors(rank, "chunk_causal", even)  # frames [0, 6) | [6, 11) cut the chunk [4, 7)
        errs |= _gdn_errors(rank, "bidirectional", even)
        errs |= _gdn_errors(rank, "bidirectional", even, autocast=True)
        for mode in ("bidirectional", "chunk_causal"):
            errs |= _attention_errors(rank, mode)
        results[rank] = errs
    finally:
        dist.destroy_process_group()


def test_split_frames_match_the_unsplit_ops():
    results = spawn_collect(_worker, 2)
    assert set(results) == {0, 1}
    for rank, errs in results.items():
        for name, err in errs.items():
            assert err < 1e-5, f"rank {rank} {name}: {err:.2e}"


@pytest.mark.parametrize(("frames", "world", "want"), [(11, 2, [(0, 6), (6, 11)]), (4, 4, [(0, 1), (1, 2), (2, 3), (3, 4)]),
                                                     (5, 3, [(0, 2), (2, 4), (4, 5)])])
def test_frame_slices_cover_the_clip_in_order(frames, world, want):
    assert [frame_slice(frames, r, world) for r in range(world)] == want


def _halo_worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=3)
    try:
        slices = [(0, 4), (4, 5), (5, 8)]  # the middle slice is shorter than the halo
        x = torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(6), requires_grad=True)
        lo, hi = slices[rank]
        local = x.detach()[:, lo:hi].clone().requires_grad_()
        past, future = GroupExchange(None, slices).halo(local, 3, 2)
        padded = torch.cat([torch.zeros(2, 3, 3), x, torch.zeros(2, 2, 3)], 1)  # zeros beyond the clip
        want_past, want_future = padded[:, lo:lo + 3], padded[:, hi + 3:hi + 5]
        g = torch.Generator().manual_seed(7)
        w_past, w_future = torch.randn(3, 2, 3, 3, generator=g), torch.randn(3, 2, 2, 3, generator=g)  # per rank
        ((past * w_past[rank]).sum() + (future * w_future[rank]).sum()).backward()
        # the unsplit gradient of every rank's halo terms, summed: each rank must receive its share
        total = sum((padded[:, a:a + 3] * w_past[r]).sum() + (padded[:, b + 3:b + 5] * w_future[r]).sum()
                    for r, (a, b) in enumerate(slices))
        want_grad = torch.autograd.grad(total, x)[0][:, lo:hi]
        results[rank] = {"past": (past - want_past).abs().max().item(),
                         "future": (future - want_future).abs().max().item(),
                         "dx": (local.grad - want_grad).abs().max().item()}
    finally:
        dist.destroy_process_group()


def test_halos_reach_past_a_short_slice():
    """GroupExchange.halo on 3 ranks holding 4 | 1 | 3 frames: 3 frames before, 2 after each
    slice (zeros beyond the clip), and every rank's gradient share of all ranks' halos."""
    results = spawn_collect(_halo_worker, 3)
    assert set(results) == {0, 1, 2}
    for rank, errs in results.items():
        for name, err in errs.items():
            assert err < 1e-6, f"rank {rank} {name}: {err:.2e}"
