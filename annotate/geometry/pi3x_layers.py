"""Layers of Pi3X (upstream ``yyfz/Pi3`` ``pi3/models/layers``): 2-D RoPE attention blocks, decoders and heads.

Parameter names match the upstream modules so the official checkpoint loads
strictly. Shapes: L tokens, C channels, ``pos`` (..., L, 2) integer (row, col)
patch coordinates (0 for register tokens, patches start at 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmkit.annotate.geometry.dinov2 import LayerScale, Mlp

__all__ = ["rope_2d", "RopeBlock", "CrossRopeBlock", "TokenDecoder", "ContextDecoder", "ConvHead", "CameraHead"]


def rope_2d(x: Tensor, pos: Tensor, base: float) -> Tensor:
    """2-D rotary encoding: first half of the head channels rotated by the row, second half by the column.

    x: (B, heads, L, D) with D % 4 == 0; pos: (B, L, 2) (row, col). Within each
    half the rotation pairs channel i with i + D/4 (the "rotate half" layout),
    frequencies base^(-2j / (D/2)).
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(0, half, 2, device=x.device, dtype=torch.float32) / half)
    out = []
    for part, coord in zip(x.split(half, dim=-1), pos.unbind(-1)):
        angle = (coord.float()[..., None] * inv_freq).to(x.dtype)  # (B, L, half/2)
        angle = torch.cat([angle, angle], dim=-1)[:, None]  # (B, 1, L, half)
        cos, sin = angle.cos(), angle.sin()
        a, b = part.chunk(2, dim=-1)
        out.append(part * cos + torch.cat([-b, a], dim=-1) * sin)
    return torch.cat(out, dim=-1)


class RopeSelfAttention(nn.Module):
    """Self-attention with fused qkv, optional per-head LayerNorm on q and k, then 2-D RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, rope_base: float) -> None:
        super().__init__()
        self.num_heads, self.rope_base = num_heads, rope_base
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // num_heads
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q = rope_2d(self.q_norm(q).to(v.dtype), pos, self.rope_base)
        k = rope_2d(self.k_norm(k).to(v.dtype), pos, self.rope_base)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class RopeCrossAttention(nn.Module):
    """Cross-attention (separate q/k/v projections) with 2-D RoPE on queries and keys."""

    def __init__(self, dim: int, num_heads: int, rope_base: float) -> None:
        super().__init__()
        self.num_heads, self.rope_base = num_heads, rope_base
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, x_pos: Tensor, context_pos: Tensor) -> Tensor:
        B, L, C = x.shape
        heads = lambda t: t.view(B, t.shape[1], self.num_heads, C // self.num_heads).transpose(1, 2)  # noqa: E731
        q = rope_2d(heads(self.q_proj(x)), x_pos, self.rope_base)
        k = rope_2d(heads(self.k_proj(context)), context_pos, self.rope_base)
        out = F.scaled_dot_product_attention(q, k, heads(self.v_proj(context)))
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class RopeBlock(nn.Module):
    """Pre-norm block with RoPE self-attention and MLP; LayerScale when ``layerscale_init`` is given."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qk_norm: bool, layerscale_init: float | None, rope_base: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RopeSelfAttention(dim, num_heads, qk_norm, rope_base)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class CrossRopeBlock(nn.Module):
    """Cross-attention-only block: x + attn(norm2 x, norm_y context), then x + mlp(norm3 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope_base: float) -> None:
        super().__init__()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.norm_y = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = RopeCrossAttention(dim, num_heads, rope_base)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor, x_pos: Tensor, context_pos: Tensor) -> Tensor:
        x = x + self.cross_attn(self.norm2(x), self.norm_y(context), x_pos, context_pos)
        return x + self.mlp(self.norm3(x))


class TokenDecoder(nn.Module):
    """Per-frame head decoder: Linear in_dim -> dim, ``depth`` RoPE blocks, Linear dim -> out_dim."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, num_heads: int, depth: int, rope_base: float) -> None:
        super().__init__()
        self.projects = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(RopeBlock(dim, num_heads, 4.0, False, None, rope_base) for _ in range(depth))
        self.linear_out = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, L, in_dim), pos: (B, L, 2) -> (B, L, out_dim)."""
        x = self.projects(x)
        for block in self.blocks:
            x = block(x, pos)
        return self.linear_out(x)


class ContextDecoder(nn.Module):
    """Query tokens attending to a context only (the metric-scale decoder)."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, num_heads: int, depth: int, rope_base: float) -> None:
        super().__init__()
        self.projects_x = nn.Linear(in_dim, dim)
        self.projects_y = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(CrossRopeBlock(dim, num_heads, 4.0, rope_base) for _ in range(depth))
        self.linear_out = nn.Linear(dim, out_dim)

    def forward(self, x: Tensor, context: Tensor, x_pos: Tensor, context_pos: Tensor) -> Tensor:
        """x: (B, Lq, in_dim), context: (B, L, in_dim) -> (B, Lq, out_dim)."""
        x, context = self.projects_x(x), self.projects_y(context)
        for block in self.blocks:
            x = block(x, context, x_pos, context_pos)
        return self.linear_out(x)


def view_plane_uv(h: int, w: int, aspect: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2, h, w) pixel-centre coordinates on the view plane normalised by the image diagonal (MoGe convention).

    u spans ±aspect/sqrt(1+aspect²)·(w-1)/w, v spans ±1/sqrt(1+aspect²)·(h-1)/h;
    the heads concatenate it so they know the aspect ratio.
    """
    diag = (1 + aspect**2) ** 0.5
    u = torch.linspace(-(aspect / diag) * (w - 1) / w, (aspect / diag) * (w - 1) / w, w, dtype=dtype, device=device)
    v = torch.linspace(-(1 / diag) * (h - 1) / h, (1 / diag) * (h - 1) / h, h, dtype=dtype, device=device)
    return torch.stack([u.expand(h, w), v[:, None].expand(h, w)])


class ResidualConvBlock(nn.Module):
    """x + [GroupNorm(1) ReLU Conv3x3 GroupNorm(hidden/32) ReLU Conv3x3](x), replicate padding."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        if hidden < 32 or hidden % 32:
            raise ValueError(f"ResidualConvBlock: hidden channels {hidden} must be a positive multiple of 32")
        self.layers = nn.Sequential(
            nn.GroupNorm(1, channels),
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1, padding_mode="replicate"),
            nn.GroupNorm(hidden // 32, hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 3, padding=1, padding_mode="replicate"),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class ConvHead(nn.Module):
    """Dense head (MoGe style): tokens (B, S, C) -> x2 upsamples with UV -> bilinear to H x W -> output convs.

    Each upsample stage: ConvTranspose2d(2, stride 2) + Conv3x3, then ``num_res_blocks``
    residual blocks; each output block: Conv3x3 -> ReLU -> Conv1x1. Returns one
    (B, out_dim, H, W) map per entry of ``out_dims``.
    """

    def __init__(
        self, in_dim: int, upsample_dims: list[int], out_dims: list[int], last_channels: int, num_res_blocks: int = 2
    ) -> None:
        super().__init__()
        stages = []
        for c_in, c_out in zip([in_dim, *upsample_dims[:-1]], upsample_dims):
            upsample = nn.Sequential(
                nn.ConvTranspose2d(c_in + 2, c_out, kernel_size=2, stride=2),
                nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode="replicate"),
            )
            stages.append(nn.Sequential(upsample, *(ResidualConvBlock(c_out, 2 * c_out) for _ in range(num_res_blocks))))
        self.upsample_blocks = nn.ModuleList(stages)
        self.output_block = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(upsample_dims[-1] + 2, last_channels, 3, padding=1, padding_mode="replicate"),
                nn.ReLU(),
                nn.Conv2d(last_channels, out_dim, 1),
            )
            for out_dim in out_dims
        )

    def forward(self, tokens: Tensor, h: int, w: int, patch_size: int) -> list[Tensor]:
        """tokens: (B, h*w, in_dim) patch tokens -> [(B, out_dim, h*p, w*p)] per output."""
        H, W = h * patch_size, w * patch_size
        x = tokens.transpose(1, 2).unflatten(2, (h, w))
        with_uv = lambda t: torch.cat(  # noqa: E731
            [t, view_plane_uv(*t.shape[-2:], W / H, t.dtype, t.device).expand(t.shape[0], -1, -1, -1)], dim=1
        )
        for stage in self.upsample_blocks:
            x = stage(with_uv(x))
        x = with_uv(F.interpolate(x, (H, W), mode="bilinear", align_corners=False))
        return [block(x) for block in self.output_block]


class CameraResBlock(nn.Module):
    """x + ReLU(fc3 ReLU(fc2 ReLU(fc1 x))) on (..., C) (the 1x1 'conv' block of the camera head)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.res_conv3(F.relu(self.res_conv2(F.relu(self.res_conv1(x))))))


def nearest_rotation(m: Tensor) -> Tensor:
    """Closest proper rotation (N, 3, 3) to each 3x3 in (N, 9), rows first normalised (SVD, det fixed to +1)."""
    a = F.normalize(m.reshape(-1, 3, 3), dim=-1).transpose(-1, -2)
    U, _, Vh = torch.linalg.svd(a)
    V = Vh.transpose(-1, -2)
    d = torch.linalg.det(V @ U.transpose(-1, -2))
    V = torch.cat([V[..., :2], V[..., 2:] * d[:, None, None]], dim=-1)
    return V @ U.transpose(-1, -2)


class CameraHead(nn.Module):
    """Per-frame camera-to-world pose (N, 4, 4) from patch tokens: res blocks, mean over patches, MLP, t and R."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(CameraResBlock(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (N, S, dim) -> c2w (N, 4, 4) float32."""
        for block in self.res_conv:
            tokens = block(tokens)
        feat = self.more_mlps(tokens.mean(dim=1)).float()
        pose = torch.zeros(feat.shape[0], 4, 4, dtype=feat.dtype, device=feat.device)
        with torch.autocast(feat.device.type, enabled=False):  # pose regression and SVD in fp32
            pose[:, :3, :3] = nearest_rotation(self.fc_rot(feat))
            pose[:, :3, 3] = self.fc_t(feat)
        pose[:, 3, 3] = 1.0
        return pose
