"""Chunk-causal softmax attention without a mask: one SDPA call per query chunk against its
key prefix equals SDPA with the dense block-causal mask (float64, ~1e-12), outputs and
q/k/v gradients, for chunk layouts 4-then-3, uneven tails and T=1, with cached keys, and
for a context-parallel slice's queries against the whole clip's keys; the layer (main and
UCPE camera branch) equals itself run bidirectionally on the prefix a chunk sees, and
chunk by chunk with its KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _model_fixtures import block_causal_mask, clip_inputs
from wmkit.kernels import chunk_sizes_for
from wmkit.model import preset
from wmkit.model.frame_shift import chunk_ids
from wmkit.model.gdn_attention import Positions
from wmkit.model.positional import UCPE, rope_tables
from wmkit.model.softmax_attention import SoftmaxAttention, chunk_causal_attention, chunk_spans

B, H, S, D = 2, 3, 5, 8
THETA = preset("tiny").rope_theta


def _qkv(n_q: int, n_k: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g, dtype=torch.float64, requires_grad=True) for n in (n_q, n_k, n_k)]


def _assert_matches_dense(sizes: list[int], frames: tuple[int, int], cached_frames: int) -> None:
    """Queries of clip frames [a, b) against `cached_frames` cached frames and the whole clip's keys."""
    a, b = frames
    q, k, v = _qkv((b - a) * S, (cached_frames + sum(sizes)) * S)
    do = torch.randn_like(q)
    chunks = chunk_ids(sizes)
    mask = block_causal_mask(chunks[a:b], chunks, S, cached_frames * S)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = chunk_causal_attention(q, k, v, chunk_spans(sizes, frames, S, cached_frames * S))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for g, g_ref in zip(torch.autograd.grad((out * do).sum(), (q, k, v)), torch.autograd.grad((ref * do).sum(), (q, k, v))):
        torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("T", [1, 3, 4, 7, 8, 9, 11, 25])
@pytest.mark.parametrize("cached_frames", [0, 4])
def test_chunk_causal_attention_equals_the_dense_mask(T, cached_frames):
    _assert_matches_dense(chunk_sizes_for(T), (0, T), cached_frames)


@pytest.mark.parametrize(("sizes", "frames"), [([4, 3, 4], (0, 6)), ([4, 3, 4], (6, 11)), ([4, 5], (5, 9)),
                                               ([4, 3, 3, 3], (2, 12)), ([4, 3, 3, 3], (5, 6))])
def test_a_context_parallel_slice_equals_its_rows_of_the_dense_mask(sizes, frames):
    _assert_matches_dense(sizes, frames, 0)


def test_chunk_spans():
    assert chunk_spans([4, 3, 4], (0, 11), 2) == [(0, 8, 8), (8, 14, 14), (14, 22, 22)]
    assert chunk_spans([4, 3, 4], (6, 11), 2, cached=10) == [(0, 2, 24), (2, 10, 32)]
    assert chunk_spans([3], (0, 3), 2, cached=6) == [(0, 6, 12)]
    with pytest.raises(ValueError, match="not a slice"):
        chunk_spans([4, 3], (0, 8), 2)


def _layer_inputs(T: int) -> tuple[SoftmaxAttention, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The tiny preset's softmax layer (camera output woken up), x [1, T, S, C] and UCPE P, float64."""
    torch.manual_seed(0)
    layer = SoftmaxAttention(preset("tiny")).double()
    torch.nn.init.normal_(layer.out_cam.weight, std=0.2)
    hw = (3, 4)
    x = torch.randn(1, T, hw[0] * hw[1], layer.heads * layer.head_dim, dtype=torch.float64)
    P = clip_inputs(B=1, T_latent=T)["cameras"].ucpe.reshape(1, T, -1, 4, 4).double()
    return layer, x, P, hw


def _positions(layer: SoftmaxAttention, P: torch.Tensor, frames: tuple[int, int], hw: tuple[int, int]) -> Positions:
    D, (a, b) = layer.head_dim, frames
    return Positions(rope_tables(D, frames, hw, THETA), rope_tables(D // 2, frames, hw, THETA), UCPE(P[:, a:b]))


def test_each_chunk_sees_exactly_its_prefix_in_the_layer():
    """Chunk c's rows of the chunk-causal layer = the bidirectional layer on frames up to c's end."""
    T = 11
    layer, x, P, hw = _layer_inputs(T)
    sizes = chunk_sizes_for(T)
    pos = _positions(layer, P, (0, T), hw)
    out, _ = layer(x, pos, "chunk_causal", sizes, chunk_ids(sizes), layer.empty_state(x))
    start = 0
    for end in torch.tensor(sizes).cumsum(0).tolist():
        prefix, _ = layer(x[:, :end], _positions(layer, P, (0, end), hw), "bidirectional", [end], chunk_ids([end]),
                          layer.empty_state(x))
        torch.testing.assert_close(out[:, start:end], prefix[:, start:end], rtol=0, atol=1e-12)
        start = end


def test_chunk_by_chunk_with_the_kv_cache_equals_the_full_layer():
    T = 11
    layer, x, P, hw = _layer_inputs(T)
    sizes = chunk_sizes_for(T)
    full, _ = layer(x, _positions(layer, P, (0, T), hw), "chunk_causal", sizes, chunk_ids(sizes), layer.empty_state(x))
    state, start, parts = layer.empty_state(x), 0, []
    for size in sizes:
        frames = (start, start + size)
        out, state = layer(x[:, start:start + size], _positions(layer, P, frames, hw), "chunk_causal", [size],
                           chunk_ids([size]), state)
        parts.append(out)
        start += size
    assert state.k.shape[2] == T * x.shape[2]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-12)
