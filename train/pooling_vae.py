"""A stand-in "VAE" for tests and CPU demos: average pooling to the latent grid. Not a real VAE.

It has the interface of the video VAE the trainer uses (`encode(frames) -> z`) and the
same latent layout (128 channels, stride 8 in time with the first frame alone, 32×32 in
space), so the video-shard path of the trainer runs without weights. Each latent token
holds the RGB means of a 4×4 grid of 8×8-pixel cells of its 32×32 patch (48 channels,
averaged over the token's frames), in [-1, 1]; channels 48…127 are zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmkit.model.config import LATENT_CHANNELS, VAE_SPACE_STRIDE, VAE_TIME_STRIDE

_CELLS = 4  # cells per token side: 3·4·4 = 48 informative channels


class PoolingVAE:
    """Test instrument: frames uint8 [B, T, H, W, 3] → z [B, 128, T', H/32, W/32] by pooling."""

    latent_channels = LATENT_CHANNELS

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: uint8 [B, T, H, W, 3] with T = 8·(T' − 1) + 1 and H, W multiples of 32.
        Returns float32 z [B, 128, T', H/32, W/32]."""
        B, T, H, W, _ = frames.shape
        if (T - 1) % VAE_TIME_STRIDE or H % VAE_SPACE_STRIDE or W % VAE_SPACE_STRIDE:
            raise ValueError(f"PoolingVAE: frames {tuple(frames.shape)} need T = 8k+1 and H, W multiples of 32")
        x = frames.float().permute(0, 4, 1, 2, 3) / 127.5 - 1.0  # [B, 3, T, H, W]
        first, rest = x[:, :, :1], x[:, :, 1:]
        rest = rest.unflatten(2, (-1, VAE_TIME_STRIDE)).mean(3)  # one latent frame per 8 frames
        x = torch.cat([first, rest], 2)
        cell = VAE_SPACE_STRIDE // _CELLS
        x = F.avg_pool3d(x, (1, cell, cell))  # [B, 3, T', 4H', 4W']
        Tl, h, w = x.shape[2:]
        x = x.reshape(B, 3, Tl, h // _CELLS, _CELLS, w // _CELLS, _CELLS)
        x = x.permute(0, 1, 4, 6, 2, 3, 5).reshape(B, 3 * _CELLS * _CELLS, Tl, h // _CELLS, w // _CELLS)
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, LATENT_CHANNELS - x.shape[1]))


__all__ = ["PoolingVAE"]
