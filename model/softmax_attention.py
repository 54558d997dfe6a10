"""Softmax self-attention layer with the UCPE camera branch (the 5 softmax blocks of SANA-WM).

Main branch: q, k, v projections, RMSNorm on q and k over all heads, 3D RoPE, SDPA.
Camera branch: its own projections and norms, UCPE on the first half of each head's
channels (Pᵀ on q, P⁻¹ on k and v, P on the output) and RoPE on the other half,
a zero-initialised output projection; added to the main output before the shared
output projection, so at init the layer is plain softmax attention.

Chunk-causal mode is block-causal over chunks: a token sees every token of its own and
earlier chunks. No [N, N] mask is built: each chunk's queries attend, unmasked, to the key
prefix that ends with their chunk (`chunk_spans`, `chunk_causal_attention`), so SDPA may
pick its flash/memory-efficient kernels and skips the masked-out half. A rollout keeps the
RoPE'd/UCPE'd keys and values of earlier chunks in a KV cache, which every token of the
current call sees (it leads every key prefix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiTConfig
from .context_parallel import CPContext
from .gdn_attention import AttentionMode, Positions
from .layers import RMSNorm
from .positional import apply_rope


@dataclass(frozen=True)
class KVCache:
    """Keys and values [B, H, N, D] of earlier chunks, main and camera branch (N may be 0)."""

    k: torch.Tensor
    v: torch.Tensor
    k_cam: torch.Tensor
    v_cam: torch.Tensor


def chunk_spans(chunk_sizes: list[int], frames: tuple[int, int], S: int, cached: int = 0) -> list[tuple[int, int, int]]:
    """Token spans (q_start, q_stop, k_stop) of block-causal attention, one per chunk that
    meets the query frames [a, b) of a clip laid out in `chunk_sizes`: query tokens
    [q_start, q_stop) (counted from frame a) see keys [0, k_stop): the `cached` tokens
    first, then the clip's frames up to the end of their chunk, S tokens each."""
    a, b = frames
    if not 0 <= a < b <= sum(chunk_sizes):
        raise ValueError(f"chunk_spans: frames [{a}, {b}) are not a slice of chunks {chunk_sizes}")
    spans, end = [], 0
    for size in chunk_sizes:
        begin, end = end, end + size
        lo, hi = max(begin, a), min(end, b)
        if lo < hi:
            spans.append(((lo - a) * S, (hi - a) * S, cached + end * S))
    return spans


def chunk_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list[tuple[int, int, int]]) -> torch.Tensor:
    """q [B, H, Nq, D] against k, v [B, H, Nk, D]: each span's queries attend to its key prefix
    (`chunk_spans`), one unmasked SDPA call per span. Returns [B, H, Nq, D]."""
    outs = [F.scaled_dot_product_attention(q[:, :, qa:qb], k[:, :, :kb], v[:, :, :kb]) for qa, qb, kb in spans]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 2)


class SoftmaxAttention(nn.Module):
    """Softmax self-attention with the UCPE camera branch on [B, T, S, C] tokens."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        C, self.heads, self.head_dim = cfg.hidden, cfg.heads, cfg.head_dim
        self.qkv = nn.Linear(C, 3 * C)
        self.q_norm, self.k_norm = RMSNorm(C, eps=cfg.norm_eps), RMSNorm(C, eps=cfg.norm_eps)
        self.qkv_cam = nn.Linear(C, 3 * C)
        self.q_norm_cam, self.k_norm_cam = RMSNorm(C, eps=cfg.norm_eps), RMSNorm(C, eps=cfg.norm_eps)
        self.out_cam = nn.Linear(C, C)
        nn.init.zeros_(self.out_cam.weight)
        nn.init.zeros_(self.out_cam.bias)
        self.proj = nn.Linear(C, C)

    def empty_state(self, x: torch.Tensor) -> KVCache:
        """An empty cache for tokens like x [B, T, S, C]."""
        e = x.new_zeros(x.shape[0], self.heads, 0, self.head_dim)
        return KVCache(e, e, e, e)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list[tuple[int, int, int]]) -> torch.Tensor:
        """q: [B, T, S, H, D] against k, v [B, H, N, D] over `spans` → [B, T, S, H, D]."""
        B, T, S, H, D = q.shape
        o = chunk_causal_attention(q.reshape(B, T * S, H, D).transpose(1, 2), k, v, spans)
        return o.transpose(1, 2).reshape(B, T, S, H, D)

    def forward(
        self,
        x: torch.Tensor,
        pos: Positions,
        mode: AttentionMode,
        chunk_sizes: list[int],
        chunks: torch.Tensor,
        state: KVCache,
        cp: CPContext | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """x: [B, T, S, C]; chunk_sizes: frames per chunk of this call (chunk_causal);
        chunks: unused (the GDN layer's signature; the layout comes from chunk_sizes);
        state: keys/values of earlier chunks. Returns (out [B, T, S, C], cache extended by
        this call).

        With `cp`, x is this rank's frame slice and chunk_sizes the clip's layout; keys and
        values of every rank are all-gathered, no cache is kept."""
        B, T, S, C = x.shape
        H, D = self.heads, self.head_dim
        heads = lambda t: t.unflatten(-1, (H, D))  # noqa: E731
        flat = lambda t: t.reshape(B, T * S, H, D).transpose(1, 2)  # noqa: E731
        if cp is None:
            extend = lambda cached, t: torch.cat([cached, flat(t)], 2)  # noqa: E731
            frames, total, cached = (0, T), T, state.k.shape[2]
        else:
            extend = lambda cached, t: cp.exchange.gather_tokens(flat(t))  # noqa: E731
            frames, total, cached = cp.frames, cp.total, 0
        spans = chunk_spans([total] if mode == "bidirectional" else chunk_sizes, frames, S, cached)

        q, k, v = self.qkv(x).chunk(3, -1)
        q = apply_rope(heads(self.q_norm(q)), *pos.rope)
        k = apply_rope(heads(self.k_norm(k)), *pos.rope)
        k_all, v_all = extend(state.k, k), extend(state.v, heads(v))
        o = self._attend(q, k_all, v_all, spans)

        qc, kc, vc = self.qkv_cam(x).chunk(3, -1)
        qc, kc, vc = heads(self.q_norm_cam(qc)), heads(self.k_norm_cam(kc)), heads(vc)
        half = D // 2
        qc = torch.cat([pos.ucpe.query(qc)[..., :half], apply_rope(qc[..., half:], *pos.rope_half)], -1)
        kc = torch.cat([pos.ucpe.key(kc)[..., :half], apply_rope(kc[..., half:], *pos.rope_half)], -1)
        kc_all, vc_all = extend(state.k_cam, kc), extend(state.v_cam, pos.ucpe.key(vc))
        oc = pos.ucpe.output(self._attend(qc, kc_all, vc_all, spans))

        out = self.proj(o.flatten(-2) + self.out_cam(oc.flatten(-2)))
        return out, (KVCache(k_all, v_all, kc_all, vc_all) if cp is None else state)
