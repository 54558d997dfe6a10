"""MoGe-2 network (microsoft/MoGe ``moge/model/v2.py``), written for wmkit.

Data flow for a batch of B images (RGB in [0, 1], any size H x W)::

    image (B,3,H,W) --resize--> (B,3,14h,14w) --DINOv2--> tokens of layers 5/11/17/23 (+ class token)
      tokens --1x1 conv each, summed--> level-0 grid (B,C0,h,w) ++ uv
      neck: 5-level pyramid h..16h, each level ++ its uv grid
      points head -> (B,3,16h,16w) --bilinear--> (B,H,W,3) --remap--> affine point map
      mask head   -> sigmoid -> (B,H,W) in [0,1]
      scale MLP on the last class token -> exp -> metric scale (B,) > 0

The module tree (attribute names, ``nn.Sequential`` indices, buffers) matches the
upstream ``MoGeModel`` so the official checkpoints load with ``strict=True``:
``encoder.backbone.*`` (DINOv2), ``encoder.output_projections.{i}``,
``encoder.image_mean/std``, ``neck|points_head|mask_head|normal_head.{input_blocks,
res_blocks,resamplers,output_blocks}.*`` and ``scale_head.{0,2,4}``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wmkit.annotate.geometry.dinov2 import DinoV2
from wmkit.annotate.geometry.moge2_config import NUM_LEVELS, ConvStackConfig, EncoderConfig, MoGe2Config

__all__ = ["MoGe2Model", "MoGe2Encoder", "ConvStack", "view_plane_uv", "base_grid"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def view_plane_uv(width: int, height: int, aspect_ratio: float, dtype: torch.dtype | None = None,
                  device: torch.device | None = None) -> torch.Tensor:
    """(height, width, 2) pixel-centre coordinates on the view plane, in units of the half diagonal.

    The image spans ``u in [-a/d, a/d]``, ``v in [-1/d, 1/d]`` with ``a`` the
    aspect ratio and ``d = sqrt(1 + a^2)`` (corners at distance 1 from the
    centre); pixel centres sit half a pixel inside. MoGe feeds these to every
    decoder level and expresses focal lengths in the same unit.
    """
    diag = math.sqrt(1.0 + aspect_ratio**2)
    span_u, span_v = aspect_ratio / diag, 1.0 / diag
    u = torch.linspace(-span_u * (width - 1) / width, span_u * (width - 1) / width, width, dtype=dtype, device=device)
    v = torch.linspace(-span_v * (height - 1) / height, span_v * (height - 1) / height, height, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


def base_grid(num_tokens: int, height: int, width: int) -> tuple[int, int]:
    """Token grid (h, w) with about ``num_tokens`` tokens and the aspect ratio of a height x width image."""
    aspect = width / height
    return round((num_tokens / aspect) ** 0.5), round((num_tokens * aspect) ** 0.5)


class MoGe2Encoder(nn.Module):
    """DINOv2 on the resized, normalised image; the chosen layers projected and summed into one grid."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = DinoV2(cfg.vit)
        self.output_projections = nn.ModuleList(nn.Conv2d(cfg.vit.embed_dim, cfg.dim_out, 1) for _ in cfg.intermediate_layers)
        self.register_buffer("image_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, dim_out, rows, cols) and the last chosen layer's class token (B, embed_dim).

        ``image``: (B, 3, H, W) RGB in [0, 1]; it is resized (bilinear, antialiased)
        to rows x cols patches.
        """
        p = self.cfg.vit.patch_size
        x = F.interpolate(image, (rows * p, cols * p), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.image_mean) / self.image_std
        layers = self.backbone.intermediate_layers(x, list(self.cfg.intermediate_layers))
        grid = sum(
            proj(patches.transpose(1, 2).unflatten(2, (rows, cols)))
            for proj, (patches, _) in zip(self.output_projections, layers)
        )
        return grid, layers[-1][1]


class ResidualConvBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))), replicate padding (MoGe-2 uses no norms: Identity slots keep indices)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        conv = lambda: nn.Conv2d(channels, channels, 3, padding=1, padding_mode="replicate")  # noqa: E731
        self.layers = nn.Sequential(nn.Identity(), nn.ReLU(), conv(), nn.Identity(), nn.ReLU(), conv())
        self.skip_connection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.skip_connection(x)


def _upsampler(kind: str, c_in: int, c_out: int) -> nn.Sequential:
    """2x upsampling then a 3x3 conv: a 2x2 stride-2 transposed conv, or bilinear resize."""
    refine = nn.Conv2d(c_out if kind == "conv_transpose" else c_in, c_out, 3, padding=1, padding_mode="replicate")
    if kind == "conv_transpose":
        return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 2, stride=2), refine)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), refine)


class ConvStack(nn.Module):
    """A pyramid decoder: per level, add the level's input, run residual blocks, emit, upsample to the next."""

    def __init__(self, cfg: ConvStackConfig) -> None:
        super().__init__()
        self.input_blocks = nn.ModuleList(
            nn.Identity() if c_in is None else nn.Conv2d(c_in, c, 1) for c_in, c in zip(cfg.dim_in, cfg.dim_res_blocks)
        )
        self.resamplers = nn.ModuleList(
            _upsampler(kind, a, b) for kind, a, b in zip(cfg.resamplers, cfg.dim_res_blocks[:-1], cfg.dim_res_blocks[1:])
        )
        self.res_blocks = nn.ModuleList(
            nn.Sequential(*(ResidualConvBlock(c) for _ in range(n))) for c, n in zip(cfg.dim_res_blocks, cfg.num_res_blocks)
        )
        self.output_blocks = nn.ModuleList(
            nn.Identity() if c_out is None else nn.Conv2d(c, c_out, 1) for c_out, c in zip(cfg.dim_out, cfg.dim_res_blocks)
        )

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level outputs; ``inputs[i]`` is (B, dim_in[i], h 2^i, w 2^i)."""
        outputs = []
        x = None
        for i, (inp, blocks, out) in enumerate(zip(self.input_blocks, self.res_blocks, self.output_blocks)):
            feature = inp(inputs[i])
            x = feature if x is None else x + feature
            x = blocks(x)
            outputs.append(out(x))
            if i < len(self.resamplers):
                x = self.resamplers[i](x)
        return outputs


def _scale_mlp(dims: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-2], dims[-1]))


class MoGe2Model(nn.Module):
    """MoGe-2: affine-invariant point map, validity mask, metric scale (and normals) for each image."""

    def __init__(self, cfg: MoGe2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = MoGe2Encoder(cfg.encoder)
        self.neck = ConvStack(cfg.neck)
        self.points_head = ConvStack(cfg.points_head)
        self.mask_head = ConvStack(cfg.mask_head)
        if cfg.normal_head is not None:
            self.normal_head = ConvStack(cfg.normal_head)
        self.scale_head = _scale_mlp(cfg.scale_dims)

    def _remap(self, points: torch.Tensor) -> torch.Tensor:
        """Raw (..., 3) head output -> point map, per ``cfg.remap_output``."""
        kind = self.cfg.remap_output
        if kind == "linear":
            return points
        if kind == "sinh":
            return torch.sinh(points)
        xy, z = points.split([2, 1], dim=-1)
        if kind == "exp":
            z = torch.exp(z)
            return torch.cat([xy * z, z], dim=-1)
        return torch.cat([torch.sinh(xy), torch.exp(z)], dim=-1)  # sinh_exp

    def forward(self, image: torch.Tensor, num_tokens: int) -> dict[str, torch.Tensor]:
        """Raw network outputs for ``image`` (B, 3, H, W) RGB in [0, 1] with about ``num_tokens`` ViT tokens.

        Returns ``points`` (B, H, W, 3) affine point map (z up to an unknown
        shift, x/y over the view plane), ``mask`` (B, H, W) in [0, 1],
        ``metric_scale`` (B,) > 0 and, with a normal head, unit ``normal`` (B, H, W, 3).
        """
        B, _, H, W = image.shape
        rows, cols = base_grid(num_tokens, H, W)
        grid, cls_token = self.encoder(image, rows, cols)
        levels = []
        for level in range(NUM_LEVELS):
            uv = view_plane_uv(cols << level, rows << level, W / H, dtype=image.dtype, device=image.device)
            uv = uv.permute(2, 0, 1).expand(B, -1, -1, -1)
            levels.append(torch.cat([grid, uv], dim=1) if level == 0 else uv)
        features = self.neck(levels)
        resize = lambda t: F.interpolate(t, (H, W), mode="bilinear", align_corners=False)  # noqa: E731
        out = {
            "points": self._remap(resize(self.points_head(features)[-1]).permute(0, 2, 3, 1)),
            "mask": resize(self.mask_head(features)[-1]).squeeze(1).sigmoid(),
            "metric_scale": self.scale_head(cls_token).squeeze(1).exp(),
        }
        if self.cfg.normal_head is not None:
            out["normal"] = F.normalize(resize(self.normal_head(features)[-1]).permute(0, 2, 3, 1), dim=-1)
        return out
