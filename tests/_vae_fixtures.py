"""Test inputs for the VAE, latent-shard and generate tests; the tiny random VAE and caption
encoder themselves live in `wmkit.model.random_weights` (the demo uses them too)."""

from __future__ import annotations

import torch

from wmkit.model.random_weights import LATENT_CHANNELS, save_tiny_text_encoder, save_tiny_vae  # noqa: F401

FRAME_HW = (64, 96)  # pixels: a 2 × 3 latent grid at stride 32


def moving_frames(num_frames: int, hw: tuple[int, int] = FRAME_HW, seed: int = 0) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames of a smooth colour gradient sliding one pixel per frame."""
    g = torch.Generator().manual_seed(seed)
    H, W = hw
    base = torch.rand(3, generator=g) * 0.5 + 0.25
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    t = torch.arange(num_frames)[:, None, None, None]
    wave = torch.sin((xx[None, ..., None] + t) / 7.0 + yy[None, ..., None] / 11.0 + base * 6)
    return ((0.5 + 0.4 * wave) * 255).round().to(torch.uint8).expand(num_frames, H, W, 3).contiguous()
