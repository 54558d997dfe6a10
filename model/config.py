"""Configuration of the GDN DiT (DESIGN §3): one dataclass, named presets.

Sizes follow the SANA-WM release (NVlabs/Sana `configs/sana_wm/sana_wm_1600m_720p.yaml`):
GLU-MBConv feed-forward with ratio 3 and a temporal conv of 3 frames, head dim 112,
softmax attention every fourth block, a camera branch (UCPE) of full width beside the
main attention branch and a Plücker projection after the self-attention of every block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

LATENT_CHANNELS = 128  # LTX-2 video VAE latents
VAE_TIME_STRIDE = 8  # frames per latent frame (the first latent frame covers one frame)
VAE_SPACE_STRIDE = 32  # pixels per latent token side
PLUCKER_CHANNELS = 6 * VAE_TIME_STRIDE  # [d, o×d] of the 8 frames of one latent frame


@dataclass(frozen=True)
class DiTConfig:
    """Shape and options of `GDNDiT`; invalid combinations fail at construction."""

    depth: int
    """Number of transformer blocks."""
    hidden: int
    """Token width C; must equal heads * head_dim."""
    heads: int
    """Attention heads H (GDN and softmax blocks alike)."""
    head_dim: int
    """Channels per head D; divisible by 8 (half the channels carry UCPE in groups of 4)."""
    softmax_blocks: tuple[int, ...]
    """0-based indexes of the softmax-attention blocks; every other block is frame-wise GDN."""
    latent_channels: int = LATENT_CHANNELS
    """Channels of the VAE latents in and out."""
    text_dim: int = 2304
    """Width of the text-encoder embeddings (2304: Gemma-2-2B, the release's encoder)."""
    mlp_ratio: float = 3.0
    """Hidden width of the GLU-MBConv feed-forward as a multiple of `hidden`."""
    conv_kernel: int = 4
    """Taps of the frame-axis depthwise conv on k in GDN blocks (DESIGN §3.1)."""
    ffn_time_kernel: int = 3
    """Frames spanned by the feed-forward's temporal conv (odd, centred)."""
    rope_theta: float = 10000.0
    """Base of the 3D RoPE frequencies."""
    freq_dim: int = 256
    """Sinusoidal features of the timestep before its MLP."""
    timestep_scale: float = 1000.0
    """t in [0, 1] is multiplied by this before the sinusoidal features (SANA convention)."""
    text_norm_init: float = 0.01
    """Initial weight of the RMSNorm on text embeddings (the release's y_norm_scale_factor)."""
    ucpe_translation_scale: float = 1.0
    """Metres → UCPE units for the camera centre in the per-ray transform."""
    norm_eps: float = 1e-5
    """RMSNorm eps of q/k norms (DESIGN §3.2)."""
    gdn_eps: float = 1e-8
    """Added to the raw GDN denominator (DESIGN §3.5)."""

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"DiTConfig: depth must be >= 1, got {self.depth}")
        if self.hidden != self.heads * self.head_dim:
            raise ValueError(
                f"DiTConfig: hidden {self.hidden} != heads {self.heads} * head_dim {self.head_dim}"
            )
        if self.head_dim % 8:
            raise ValueError(f"DiTConfig: head_dim {self.head_dim} must be divisible by 8 (UCPE uses 4x4 blocks on half of it)")
        bad = [i for i in self.softmax_blocks if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"DiTConfig: softmax block indexes {bad} are outside 0..{self.depth - 1}")
        if len(set(self.softmax_blocks)) != len(self.softmax_blocks):
            raise ValueError(f"DiTConfig: softmax_blocks {self.softmax_blocks} repeat an index")
        if self.ffn_time_kernel % 2 != 1:
            raise ValueError(f"DiTConfig: ffn_time_kernel must be odd, got {self.ffn_time_kernel}")
        if self.conv_kernel < 1 or self.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig: conv_kernel {self.conv_kernel} and mlp_ratio {self.mlp_ratio} must be positive")

    @property
    def ffn_hidden(self) -> int:
        """Width of the feed-forward's inner GLU branch."""
        return int(self.hidden * self.mlp_ratio)

    def is_softmax(self, block: int) -> bool:
        """True when block `block` uses softmax attention instead of frame-wise GDN."""
        return block in self.softmax_blocks


PRESETS: dict[str, DiTConfig] = {
    # Trains on one CPU in tests: 4 blocks, one softmax block, 4 heads × 16.
    "tiny": DiTConfig(depth=4, hidden=64, heads=4, head_dim=16, softmax_blocks=(3,), text_dim=32, mlp_ratio=2.0),
    # A quick GPU model for pipeline checks: 8 blocks, softmax at 3 and 7.
    "small": DiTConfig(depth=8, hidden=512, heads=8, head_dim=64, softmax_blocks=(3, 7)),
    # SANA-WM 2.6B: 20 blocks, hidden 2240, 20 heads × 112, softmax at 3, 7, 11, 15, 19.
    "2.6b": DiTConfig(depth=20, hidden=2240, heads=20, head_dim=112, softmax_blocks=(3, 7, 11, 15, 19)),
}


def preset(name: str, **overrides: object) -> DiTConfig:
    """The named preset ("tiny", "small", "2.6b"), with fields replaced by `overrides`."""
    if name not in PRESETS:
        raise KeyError(f"unknown DiT preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


__all__ = ["DiTConfig", "PRESETS", "preset", "LATENT_CHANNELS", "VAE_TIME_STRIDE", "VAE_SPACE_STRIDE", "PLUCKER_CHANNELS"]
