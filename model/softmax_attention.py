"""Softmax self-attention layer with the UCPE camera branch (the 5 softmax blocks of SANA-WM).

Main branch: q, k, v projections, RMSNorm on q and k over all heads, 3D RoPE, SDPA.
Camera branch: its own projections and norms, UCPE on the first half of each head's
channels (Pᵀ on q, P⁻¹ on k and v, P on the output) and RoPE on the other half,
a zero-initialised output projection; added to the main output before the shared
output projection, so at init the layer is plain softmax attention.

Chunk-causal mode uses a block-causal mask over chunks: a token sees every token of its
own and earlier chunks. A rollout keeps the RoPE'd/UCPE'd keys and values of earlier
chunks in a KV cache, which every token of the current call sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiTConfig
from .context_parallel import CPContext
from .frame_shift import chunk_ids
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


def block_causal_mask(chunks: torch.Tensor, S: int, cached: int, keys: torch.Tensor | None = None) -> torch.Tensor:
    """[T·S, cached + N·S] bool, True where a query token may attend to a key token.

    chunks: [T] chunk index per frame of this call's queries; keys: [N] chunk index per
    frame of its keys (default: the query frames; context parallelism: the whole clip's);
    cached keys are always visible."""
    tok = torch.repeat_interleave(chunks, S)
    key = tok if keys is None else torch.repeat_interleave(keys, S)
    within = tok[:, None] >= key[None, :]
    return torch.cat([within.new_ones(tok.numel(), cached), within], 1)


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

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q: [B, T, S, H, D] → SDPA against k, v [B, H, N, D] → [B, T, S, H, D]."""
        B, T, S, H, D = q.shape
        o = F.scaled_dot_product_attention(q.reshape(B, T * S, H, D).transpose(1, 2), k, v, attn_mask=mask)
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
        """x: [B, T, S, C]; chunks: [T] chunk index per frame; state: keys/values of
        earlier chunks. Returns (out [B, T, S, C], cache extended by this call).

        With `cp`, x is this rank's frame slice (chunks: its frames first, chunk_sizes: the
        clip's layout); keys and values of every rank are all-gathered, no cache is kept."""
        B, T, S, C = x.shape
        H, D = self.heads, self.head_dim
        heads = lambda t: t.unflatten(-1, (H, D))  # noqa: E731
        flat = lambda t: t.reshape(B, T * S, H, D).transpose(1, 2)  # noqa: E731
        if cp is None:
            extend = lambda cached, t: torch.cat([cached, flat(t)], 2)  # noqa: E731
            keys = None
        else:
            extend = lambda cached, t: cp.exchange.gather_tokens(flat(t))  # noqa: E731
            keys = chunk_ids(chunk_sizes, x.device)
        mask = None if mode == "bidirectional" else block_causal_mask(chunks[:T], S, state.k.shape[2], keys).to(x.device)

        q, k, v = self.qkv(x).chunk(3, -1)
        q = apply_rope(heads(self.q_norm(q)), *pos.rope)
        k = apply_rope(heads(self.k_norm(k)), *pos.rope)
        k_all, v_all = extend(state.k, k), extend(state.v, heads(v))
        o = self._attend(q, k_all, v_all, mask)

        qc, kc, vc = self.qkv_cam(x).chunk(3, -1)
        qc, kc, vc = heads(self.q_norm_cam(qc)), heads(self.k_norm_cam(kc)), heads(vc)
        half = D // 2
        qc = torch.cat([pos.ucpe.query(qc)[..., :half], apply_rope(qc[..., half:], *pos.rope_half)], -1)
        kc = torch.cat([pos.ucpe.key(kc)[..., :half], apply_rope(kc[..., half:], *pos.rope_half)], -1)
        kc_all, vc_all = extend(state.k_cam, kc), extend(state.v_cam, pos.ucpe.key(vc))
        oc = pos.ucpe.output(self._attend(qc, kc_all, vc_all, mask))

        out = self.proj(o.flatten(-2) + self.out_cam(oc.flatten(-2)))
        return out, (KVCache(k_all, v_all, kc_all, vc_all) if cp is None else state)
