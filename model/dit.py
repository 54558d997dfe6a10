"""The GDN DiT of SANA-WM (DESIGN §3): blocks, embeddings and the two attention modes.

One block (NVlabs/Sana `sana_multi_scale_video_camctrl.py` order), with per-frame adaLN
from the per-frame timesteps::

    x = x + gate_msa · Attn(modulate(LN(x), shift_msa, scale_msa))    GDN or softmax, + UCPE branch
    x = x + W_plücker · plücker_embedding                              zero-initialised, every block
    x = x + CrossAttn(x, caption)
    x = x + gate_mlp · FFN(modulate(LN(x), shift_mlp, scale_mlp))      GLU-MBConv + temporal conv

Latents [B, 128, T', H', W'] become tokens [B, T', S = H'·W', C] by a linear patch
embedding (patch 1: the VAE already compresses 8× in time and 32× in space); the final
layer maps back with a zero-initialised linear (the model starts predicting 0).

Modes: "bidirectional" (every frame sees every frame) and "chunk_causal" (chunks of
`chunk_sizes_for(T')` latent frames; a frame sees its own and earlier chunks). A call may
start from a `DiTCache` of earlier chunks (GDN states, frame-conv and FFN histories,
softmax KV caches, the frame offset for RoPE) and return the cache extended by its frames:
`rollout` runs a clip chunk by chunk this way. With a `CPContext` the call is one rank's
frame slice of a clip split over a context-parallel group (`model/context_parallel.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wmkit.kernels import chunk_sizes_for

from .camera_rays import CameraInputs
from .config import PLUCKER_CHANNELS, DiTConfig
from .context_parallel import CPContext
from .frame_shift import chunk_ids, empty_history
from .gdn_attention import AttentionMode, GDNAttention, GDNBackend, GDNState, Positions
from .layers import CaptionEmbedder, CrossAttention, GLUMBConvTemporal, TimestepEmbedder, modulate
from .positional import UCPE, rope_tables
from .softmax_attention import KVCache, SoftmaxAttention


@dataclass(frozen=True)
class BlockState:
    """Carried state of one block: its attention's (GDN state or KV cache) and the FFN's
    temporal-conv history [B, reach, S, C]."""

    attn: GDNState | KVCache
    ffn_history: torch.Tensor


@dataclass(frozen=True)
class DiTCache:
    """Everything a chunk-causal call needs from the latent frames before it."""

    frame_offset: int
    """Latent frames already consumed (the first frame of the next call, for RoPE)."""
    blocks: tuple[BlockState, ...]


class DiTBlock(nn.Module):
    """One transformer block: self-attention (GDN or softmax), Plücker injection,
    cross-attention and feed-forward, modulated per frame."""

    def __init__(self, cfg: DiTConfig, softmax: bool) -> None:
        super().__init__()
        C = cfg.hidden
        self.norm1 = nn.LayerNorm(C, elementwise_affine=False, eps=1e-6)
        self.attn = SoftmaxAttention(cfg) if softmax else GDNAttention(cfg)
        self.plucker_proj = nn.Linear(C, C)
        nn.init.zeros_(self.plucker_proj.weight)
        nn.init.zeros_(self.plucker_proj.bias)
        self.cross = CrossAttention(C, cfg.heads, cfg.norm_eps)
        self.norm2 = nn.LayerNorm(C, elementwise_affine=False, eps=1e-6)
        self.ffn = GLUMBConvTemporal(C, cfg.ffn_hidden, cfg.ffn_time_kernel)
        self.scale_shift_table = nn.Parameter(torch.randn(6, C) / C**0.5)

    def empty_state(self, x: torch.Tensor) -> BlockState:
        """State at the start of a clip for tokens like x [B, T, S, C]."""
        return BlockState(self.attn.empty_state(x), empty_history(x, self.ffn.reach))

    def forward(
        self,
        x: torch.Tensor,
        t_mod: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        plucker: torch.Tensor,
        pos: Positions,
        grid_hw: tuple[int, int],
        mode: AttentionMode,
        chunk_sizes: list[int],
        chunks: torch.Tensor,
        state: BlockState,
        cp: CPContext | None = None,
    ) -> tuple[torch.Tensor, BlockState]:
        """x: [B, T, S, C]; t_mod: [B, T, 6, C]; text: [B, L, C]; plucker: [B, T, S, C];
        cp: this rank's frame slice and collectives (context parallelism) or None."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.scale_shift_table + t_mod).unbind(2)
        h, attn_state = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), pos, mode, chunk_sizes, chunks,
                                  state.attn, cp)
        x = x + gate_msa[:, :, None] * h
        x = x + self.plucker_proj(plucker)
        x = x + self.cross(x, text, text_mask)
        h, ffn_history = self.ffn(modulate(self.norm2(x), shift_mlp, scale_mlp), grid_hw, chunks, state.ffn_history, cp)
        x = x + gate_mlp[:, :, None] * h
        return x, BlockState(attn_state, ffn_history)


class GDNDiT(nn.Module):
    """SANA-WM's hybrid GDN / softmax DiT with camera control (see the module docstring)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.hidden
        self.patch_embed = nn.Linear(cfg.latent_channels, C)
        self.t_embedder = TimestepEmbedder(C, cfg.freq_dim, cfg.timestep_scale)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        self.caption = CaptionEmbedder(cfg.text_dim, C, cfg.text_norm_init)
        self.plucker_embed = nn.Sequential(nn.Linear(PLUCKER_CHANNELS, C), nn.SiLU(), nn.Linear(C, C))
        self.blocks = nn.ModuleList(DiTBlock(cfg, cfg.is_softmax(i)) for i in range(cfg.depth))
        self.final_norm = nn.LayerNorm(C, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.randn(2, C) / C**0.5)
        self.final = nn.Linear(C, cfg.latent_channels)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def set_gdn_backend(self, backend: GDNBackend) -> None:
        """Choose the frame-wise GDN op of every GDN block ("auto", "triton", "reference")."""
        for block in self.blocks:
            if isinstance(block.attn, GDNAttention):
                block.attn.backend = backend

    def _check(
        self, latents: torch.Tensor, timesteps: torch.Tensor, cameras: CameraInputs, text: torch.Tensor, text_mask: torch.Tensor
    ) -> None:
        cfg = self.cfg
        if latents.dim() != 5 or latents.shape[1] != cfg.latent_channels:
            raise ValueError(f"GDNDiT: latents must be [B, {cfg.latent_channels}, T', H', W'], got {tuple(latents.shape)}")
        B, _, T, Hl, Wl = latents.shape
        if timesteps.shape != (B, T):
            raise ValueError(f"GDNDiT: timesteps must be per latent frame [B, T'] = {(B, T)}, got {tuple(timesteps.shape)}")
        if cameras.plucker.shape != (B, T, Hl, Wl, PLUCKER_CHANNELS) or cameras.ucpe.shape != (B, T, Hl, Wl, 4, 4):
            raise ValueError(
                f"GDNDiT: cameras must be plucker [B, T', H', W', {PLUCKER_CHANNELS}] and ucpe [B, T', H', W', 4, 4] "
                f"for latents {tuple(latents.shape)}, got {tuple(cameras.plucker.shape)} and {tuple(cameras.ucpe.shape)}"
            )
        if text.dim() != 3 or text.shape[0] != B or text.shape[2] != cfg.text_dim or text_mask.shape != text.shape[:2]:
            raise ValueError(
                f"GDNDiT: text must be [B, L, {cfg.text_dim}] with a [B, L] mask, "
                f"got {tuple(text.shape)} and {tuple(text_mask.shape)}"
            )
        if not bool(text_mask.any(1).all()):
            raise ValueError(
                "GDNDiT: every sample needs at least one unmasked text token (an empty caption keeps its end token)"
            )

    @staticmethod
    def _check_cp(cp: CPContext, T: int, cache: DiTCache | None, return_cache: bool) -> int:
        """The clip's frame count under context parallelism, after checking the call fits it."""
        start, stop = cp.frames
        if stop - start != T:
            raise ValueError(f"GDNDiT: context-parallel frames [{start}, {stop}) but the latents hold {T} frames")
        if cache is not None or return_cache:
            raise ValueError("GDNDiT: a context-parallel call neither takes nor returns a cache (rollouts run on one rank)")
        return cp.total

    def empty_cache(self, latents: torch.Tensor) -> DiTCache:
        """The cache at the start of a clip for latents [B, 128, T', H', W']."""
        B, _, _, Hl, Wl = latents.shape
        probe = latents.new_zeros(B, 0, Hl * Wl, self.cfg.hidden, dtype=self.patch_embed.weight.dtype)
        return DiTCache(0, tuple(block.empty_state(probe) for block in self.blocks))

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cameras: CameraInputs,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        *,
        mode: AttentionMode = "bidirectional",
        chunk_sizes: list[int] | None = None,
        cache: DiTCache | None = None,
        return_cache: bool = False,
        cp: CPContext | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, DiTCache]:
        """Predict the flow velocity of every latent token.

        Args:
            latents: [B, 128, T', H', W'] noisy VAE latents.
            timesteps: [B, T'] per-latent-frame flow time in [0, 1] (0 = clean).
            cameras: `CameraInputs` of these latent frames (`camera_inputs`).
            text: [B, L, text_dim] text-encoder embeddings; text_mask: [B, L] bool.
            mode: "bidirectional" or "chunk_causal".
            chunk_sizes: chunk layout of these frames in chunk_causal mode (default
                `chunk_sizes_for(T')`; a rollout passes one chunk).
            cache: state of the latent frames before these (chunk_causal only).
            return_cache: also return the cache extended by these frames.
            cp: context parallelism (`CPContext`): latents, timesteps and cameras are this
                rank's frames `cp.frames` of a `cp.total`-frame clip, chunk_sizes (if given)
                the clip's layout; no cache in or out.
        Returns the velocity [B, 128, T', H', W'] (and the cache); with cp, of this rank's frames.
        """
        self._check(latents, timesteps, cameras, text, text_mask)
        if mode not in ("bidirectional", "chunk_causal"):
            raise ValueError(f"GDNDiT: mode must be 'bidirectional' or 'chunk_causal', got {mode!r}")
        if cache is not None and mode != "chunk_causal":
            raise ValueError("GDNDiT: a cache continues a chunk_causal rollout; bidirectional calls see the whole clip")
        B, _, T, Hl, Wl = latents.shape
        S, dtype, dev = Hl * Wl, self.patch_embed.weight.dtype, latents.device
        clip = T if cp is None else self._check_cp(cp, T, cache, return_cache)
        sizes = [clip] if mode == "bidirectional" else list(chunk_sizes or chunk_sizes_for(clip))
        cache = self.empty_cache(latents) if cache is None else cache
        if cp is None:
            chunks = chunk_ids(sizes, dev)
            frames = (cache.frame_offset, cache.frame_offset + T)
        else:  # the slice's global chunk ids and those of the halo frames after it
            chunks = cp.chunks(sizes, max(self.cfg.conv_kernel - 1, self.cfg.ffn_time_kernel // 2), dev)
            frames = cp.frames
        D = self.cfg.head_dim
        pos = Positions(
            rope_tables(D, frames, (Hl, Wl), self.cfg.rope_theta, dev),
            rope_tables(D // 2, frames, (Hl, Wl), self.cfg.rope_theta, dev),
            UCPE(cameras.ucpe.reshape(B, T, S, 4, 4).to(dtype)),
        )

        x = self.patch_embed(latents.to(dtype).permute(0, 2, 3, 4, 1).reshape(B, T, S, -1))
        t_emb = self.t_embedder(timesteps)  # [B, T, C]
        t_mod = self.t_block(t_emb).unflatten(-1, (6, -1))
        y = self.caption(text.to(dtype))
        plucker = self.plucker_embed(cameras.plucker.reshape(B, T, S, -1).to(dtype))
        states = []
        for block, state in zip(self.blocks, cache.blocks):
            x, new_state = block(x, t_mod, y, text_mask, plucker, pos, (Hl, Wl), mode, sizes, chunks, state, cp)
            if return_cache:  # in training, keeping 20 blocks' KV caches and histories costs tens of GB
                states.append(new_state)
        shift, scale = (self.final_table + t_emb[:, :, None]).unbind(2)
        out = self.final(modulate(self.final_norm(x), shift, scale))
        out = out.reshape(B, T, Hl, Wl, -1).permute(0, 4, 1, 2, 3)
        if return_cache:
            return out, DiTCache(cache.frame_offset + T, tuple(states))
        return out


def rollout(
    model: GDNDiT,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    cameras: CameraInputs,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    chunk_sizes: list[int] | None = None,
) -> torch.Tensor:
    """Chunk-causal pass run one chunk at a time, carrying the `DiTCache` between calls.

    Same arguments and result as `model(..., mode="chunk_causal")` (up to float rounding):
    it is the streaming form whose per-call memory does not grow with the GDN part."""
    T = latents.shape[2]
    outs, cache, start = [], None, 0
    for size in chunk_sizes or chunk_sizes_for(T):
        stop = start + size
        out, cache = model(
            latents[:, :, start:stop], timesteps[:, start:stop], cameras.frames(start, stop), text, text_mask,
            mode="chunk_causal", chunk_sizes=[size], cache=cache, return_cache=True,
        )
        outs.append(out)
        start = stop
    return torch.cat(outs, 2)
