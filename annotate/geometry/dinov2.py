"""DINOv2 vision transformer (ViT with optional register tokens), the encoder of Pi3X and MoGe-2.

Parameter names follow the published DINOv2 layout (``facebookresearch/dinov2``
``vision_transformer.py``) so encoders inside the Pi3X and MoGe-2 checkpoints
load with ``strict=True``::

    cls_token (1,1,C)  pos_embed (1,1+M*M,C)  register_tokens (1,R,C)  [mask_token (1,C)]
    patch_embed.proj.{weight,bias}            Conv2d(in_chans, C, p, stride p)
    blocks.{i}.norm1 / attn.qkv / attn.proj / ls1.gamma / norm2 / mlp.fc1 / mlp.fc2 / ls2.gamma
    norm

Token order inside the encoder: ``[cls, registers..., patches (row-major)]``.
The learnt position table covers an ``M x M`` patch grid (M = img_size // p);
other grids get it resized bicubically (``interpolate_pos_embed``), which is how
DINOv2 runs at any input whose sides are multiples of the patch size.

Shapes: B images, C channels, H x W pixels (multiples of ``patch_size``),
h = H // p, w = W // p patches, S = h * w patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DinoV2Config", "DinoV2", "PatchEmbed", "Mlp", "LayerScale", "VitBlock", "vit_large_reg4", "vit_large"]


@dataclass(frozen=True)
class DinoV2Config:
    """Architecture of one DINOv2 ViT."""

    embed_dim: int = 1024  # C
    depth: int = 24  # transformer blocks
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14  # p, pixels
    img_size: int = 518  # side of the square image the learnt pos_embed was trained for (M = img_size // p)
    in_chans: int = 3
    num_register_tokens: int = 0  # R; 4 for the "*_reg" checkpoints
    layerscale: bool = True  # ls1/ls2 gamma after attention and MLP (all published DINOv2 weights have it)
    interpolate_antialias: bool = False  # antialias flag of the bicubic pos_embed resize (True for *_reg)
    interpolate_offset: float = 0.1  # resize by scale (h + offset) / M instead of to size h; 0.0 = resize to size
    with_mask_token: bool = True  # the checkpoint carries ``mask_token`` (Pi3X deletes it)

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"DinoV2Config: embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"DinoV2Config: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.depth < 1 or self.num_register_tokens < 0:
            raise ValueError(f"DinoV2Config: depth {self.depth} < 1 or num_register_tokens {self.num_register_tokens} < 0")


def vit_large_reg4(**overrides) -> DinoV2Config:
    """ViT-L/14 with 4 registers (``dinov2_vitl14_reg``): the Pi3X encoder."""
    fields = dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0)
    return DinoV2Config(**{**fields, **overrides})


def vit_large(**overrides) -> DinoV2Config:
    """ViT-L/14 without registers (``dinov2_vitl14``)."""
    return DinoV2Config(**overrides)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to tokens: (B, in_chans, H, W) -> (B, S, C)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learnt residual scale ``gamma`` (C,)."""

    def __init__(self, dim: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (no position encoding)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class VitBlock(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)), then x + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layerscale: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.ls1 = LayerScale(dim) if layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim) if layerscale else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """DINOv2 ViT encoder; ``forward`` gives the normalised patch tokens, ``intermediate_layers`` several blocks'."""

    def __init__(self, config: DinoV2Config) -> None:
        super().__init__()
        self.config = config
        C, M = config.embed_dim, config.img_size // config.patch_size
        self.patch_embed = PatchEmbed(config.in_chans, C, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + M * M, C))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, C)) if config.num_register_tokens else None
        )
        if config.with_mask_token:
            # only used by DINOv2's masked pre-training; kept so those checkpoints load strictly
            self.mask_token = nn.Parameter(torch.zeros(1, C))
        self.blocks = nn.ModuleList(
            VitBlock(C, config.num_heads, config.mlp_ratio, config.layerscale) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(C, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: cls and registers."""
        return 1 + self.config.num_register_tokens

    def interpolate_pos_embed(self, h: int, w: int) -> Tensor:
        """Position table (1, 1 + h*w, C) for an h x w patch grid, resized from the learnt M x M grid."""
        M = self.config.img_size // self.config.patch_size
        if h == M and w == M:
            return self.pos_embed
        table = self.pos_embed.float()
        grid = table[:, 1:].reshape(1, M, M, -1).permute(0, 3, 1, 2)
        offset = self.config.interpolate_offset
        size_or_scale = (
            {"scale_factor": ((h + offset) / M, (w + offset) / M)} if offset else {"size": (h, w)}
        )
        grid = F.interpolate(grid, mode="bicubic", antialias=self.config.interpolate_antialias, **size_or_scale)
        if grid.shape[-2:] != (h, w):
            raise ValueError(f"pos_embed resize gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([table[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def tokens(self, images: Tensor) -> Tensor:
        """Input tokens (B, 1 + R + S, C) from images (B, in_chans, H, W): patches + positions, cls and registers."""
        B, _, H, W = images.shape
        p = self.config.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_embed(H // p, W // p)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        return x

    def forward(self, images: Tensor) -> Tensor:
        """Final-norm patch tokens (B, S, C) of images (B, in_chans, H, W), H and W multiples of the patch size."""
        x = self.tokens(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, self.num_prefix_tokens :]

    def intermediate_layers(self, images: Tensor, layers: list[int], norm: bool = True) -> list[tuple[Tensor, Tensor]]:
        """(patch tokens (B, S, C), cls token (B, C)) after each block index in ``layers`` (0-based), final-normed if ``norm``."""
        wanted = set(layers)
        if not wanted <= set(range(self.config.depth)):
            raise ValueError(f"layers {sorted(wanted)} outside 0..{self.config.depth - 1}")
        x, taken = self.tokens(images), {}
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                taken[i] = self.norm(x) if norm else x
        return [(taken[i][:, self.num_prefix_tokens :], taken[i][:, 0]) for i in layers]
