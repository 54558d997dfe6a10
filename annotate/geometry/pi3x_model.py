"""Pi3X: feed-forward multi-view points, confidences and camera poses (upstream ``yyfz/Pi3`` ``pi3/models/pi3x.py``).

Image-only inference path of Pi3X, written for wmkit with the upstream
parameter names. The network::

    images (B, N, 3, H, W) in [0, 1] ─ ImageNet normalise ─ DINOv2 ViT-L/14 (4 registers) ─► patch tokens
    + 5 learnt register tokens per frame
    decoder: ``dec_depth`` RoPE blocks alternating frame-wise (even index) and global over all N frames (odd index)
    features = concat(second-to-last, last decoder output)               (B*N, 5 + S, 2 * dec_dim)
      ├ point decoder → ConvHead → xy (2), log z (1)   local points  [xy·z, z] = z-depth camera-frame points
      ├ conf decoder  → ConvHead → conf logit (1)
      ├ camera decoder → CameraHead → c2w per frame (OpenCV axes, an arbitrary reference frame)
      └ metric decoder (one query token attending to every token of every frame) → exp → metric scale
    points = c2w · local, then points, local points and c2w translations scaled by metric.

Upstream Pi3X also carries a prior-conditioning branch (``depth_encoder``,
``depth_emb``, ``ray_embed``, ``pose_inject_blk``) that only acts when depth,
ray or pose priors are given; with images alone it adds exactly zero. wmkit
feeds images only, so that branch is not built; the loader
(:mod:`.pi3x_loader`) sets those keys aside by name and checks all others strictly.

Poses are returned as the network predicts them (reference frame arbitrary, as
upstream); :mod:`.pi3x_inference` re-expresses them relative to the first frame.
Resolution: H and W must be multiples of the patch size 14 (see
:func:`wmkit.annotate.geometry.pi3x_inference.pi3x_input_size`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from wmkit.annotate.geometry.dinov2 import DinoV2, DinoV2Config, vit_large_reg4
from wmkit.annotate.geometry.pi3x_layers import CameraHead, ContextDecoder, ConvHead, RopeBlock, TokenDecoder

__all__ = ["Pi3XConfig", "Pi3XOutput", "Pi3X"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Pi3XConfig:
    """Pi3X architecture; ``Pi3XConfig()`` is the official one, :meth:`tiny` a CPU test size."""

    encoder: DinoV2Config = field(default_factory=lambda: vit_large_reg4(with_mask_token=False))
    dec_dim: int = 1024  # width of the main decoder
    dec_heads: int = 16
    dec_depth: int = 36  # alternating frame/global blocks; even so the last one is global
    num_registers: int = 5  # learnt tokens prepended to each frame's patches in the decoder
    head_dim: int = 1024  # width of the point / conf / camera decoders
    head_heads: int = 16
    head_depth: int = 5
    dense_dim: int = 1024  # point and conf decoder output = ConvHead input channels
    camera_dim: int = 512  # camera decoder output = CameraHead width
    metric_dim: int = 512  # metric decoder width and output
    metric_heads: int = 8
    upsample_dims: tuple[int, ...] = (256, 128, 64)  # ConvHead x2 stages (each a multiple of 16)
    last_channels: int = 32  # ConvHead output-block width
    rope_base: float = 100.0

    def __post_init__(self) -> None:
        if self.encoder.embed_dim != self.dec_dim:
            raise ValueError(f"Pi3XConfig: encoder width {self.encoder.embed_dim} != dec_dim {self.dec_dim}")
        if self.dec_depth < 2 or self.dec_depth % 2:
            raise ValueError(f"Pi3XConfig: dec_depth {self.dec_depth} must be even and >= 2 (last block global)")
        for name, dim, heads in [("dec", self.dec_dim, self.dec_heads), ("head", self.head_dim, self.head_heads),
                                 ("metric", self.metric_dim, self.metric_heads)]:
            if dim % heads or (dim // heads) % 4:
                raise ValueError(f"Pi3XConfig: {name} width {dim} / heads {heads} must give a head size divisible by 4 (2-D RoPE)")

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @classmethod
    def tiny(cls) -> "Pi3XConfig":
        """A few-hundred-thousand-parameter Pi3X for CPU tests (same structure, small widths)."""
        encoder = DinoV2Config(embed_dim=32, depth=2, num_heads=2, img_size=56, num_register_tokens=2,
                               interpolate_antialias=True, interpolate_offset=0.0, with_mask_token=False)
        return cls(encoder=encoder, dec_dim=32, dec_heads=2, dec_depth=4, num_registers=5, head_dim=32,
                   head_heads=2, head_depth=1, dense_dim=32, camera_dim=32, metric_dim=32, metric_heads=2,
                   upsample_dims=(32, 16, 16), last_channels=8)


@dataclass
class Pi3XOutput:
    """Pi3X outputs for B sequences of N frames of H x W pixels (all float32, metric-scaled as upstream)."""

    points: Tensor  # (B, N, H, W, 3) world points (frame of the predicted poses)
    local_points: Tensor  # (B, N, H, W, 3) camera-frame points, z = depth
    conf: Tensor  # (B, N, H, W, 1) confidence logits (sigmoid gives [0, 1])
    camera_poses: Tensor  # (B, N, 4, 4) c2w, OpenCV axes
    metric: Tensor  # (B,) scale applied to points, local points and translations


class Pi3X(nn.Module):
    """Pi3X network (image-only path); ``forward(images)`` -> :class:`Pi3XOutput`."""

    def __init__(self, config: Pi3XConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or Pi3XConfig()
        C2 = 2 * config.dec_dim
        self.encoder = DinoV2(config.encoder)
        self.decoder = nn.ModuleList(
            RopeBlock(config.dec_dim, config.dec_heads, 4.0, True, 0.01, config.rope_base) for _ in range(config.dec_depth)
        )
        self.register_token = nn.Parameter(torch.randn(1, 1, config.num_registers, config.dec_dim) * 1e-6)
        heads = dict(num_heads=config.head_heads, depth=config.head_depth, rope_base=config.rope_base)
        self.point_decoder = TokenDecoder(C2, config.head_dim, config.dense_dim, **heads)
        self.point_head = ConvHead(config.dense_dim, list(config.upsample_dims), [2, 1], config.last_channels)
        self.camera_decoder = TokenDecoder(C2, config.head_dim, config.camera_dim, **heads)
        self.camera_head = CameraHead(config.camera_dim)
        self.metric_token = nn.Parameter(torch.randn(1, 1, C2) * 1e-6)
        self.metric_decoder = ContextDecoder(C2, config.metric_dim, config.metric_dim, config.metric_heads,
                                             config.head_depth, config.rope_base)
        self.metric_head = nn.Linear(config.metric_dim, 1)
        self.conf_decoder = TokenDecoder(C2, config.head_dim, config.dense_dim, **heads)
        self.conf_head = ConvHead(config.dense_dim, list(config.upsample_dims), [1], config.last_channels)
        self.register_buffer("image_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("image_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _positions(self, frames: int, h: int, w: int, device: torch.device) -> Tensor:
        """(frames, R + h*w, 2) token positions: 0 for registers, (row + 1, col + 1) for patches."""
        rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        patches = torch.stack([rows, cols], dim=-1).reshape(1, h * w, 2) + 1
        special = torch.zeros(1, self.config.num_registers, 2, dtype=patches.dtype, device=device)
        return torch.cat([special, patches], dim=1).expand(frames, -1, -1)

    def decode(self, tokens: Tensor, B: int, N: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Encoder tokens (B*N, S, C) -> features (B*N, R+S, 2C) and their positions (B*N, R+S, 2)."""
        C = self.config.dec_dim
        x = torch.cat([self.register_token.expand(B, N, -1, -1).reshape(B * N, -1, C), tokens], dim=1)
        L = x.shape[1]
        pos = self._positions(B * N, h, w, x.device)
        for i, block in enumerate(self.decoder):
            if i % 2 == 0:  # frame-wise attention
                x = block(x.reshape(B * N, L, C), pos)
            else:  # global attention over every token of the N frames
                x = block(x.reshape(B, N * L, C), pos.reshape(B, N * L, 2))
            if i == len(self.decoder) - 2:
                before_last = x.reshape(B * N, L, C)
        return torch.cat([before_last, x.reshape(B * N, L, C)], dim=-1), pos

    def forward(self, images: Tensor) -> Pi3XOutput:
        """images: (B, N, 3, H, W) RGB in [0, 1], H and W multiples of the patch size -> :class:`Pi3XOutput`."""
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"Pi3X: images must be (B, N, 3, H, W), got {tuple(images.shape)}")
        B, N, _, H, W = images.shape
        p, R = self.config.patch_size, self.config.num_registers
        if H % p or W % p:
            raise ValueError(f"Pi3X: image size {H}x{W} is not a multiple of the patch size {p}")
        h, w = H // p, W // p
        x = (images.reshape(B * N, 3, H, W) - self.image_mean) / self.image_std
        feats, pos = self.decode(self.encoder(x), B, N, h, w)
        L = feats.shape[1]

        point_tokens = self.point_decoder(feats, pos)
        camera_tokens = self.camera_decoder(feats, pos)
        pos_all = pos.reshape(B, N * L, 2)
        metric_tokens = self.metric_decoder(self.metric_token.expand(B, -1, -1), feats.reshape(B, N * L, -1),
                                            pos_all[:, :1], pos_all)
        conf_tokens = self.conf_decoder(feats, pos)

        with torch.autocast(images.device.type, enabled=False):  # dense heads and geometry in fp32, as upstream
            xy, log_z = self.point_head(point_tokens[:, R:].float(), h, w, p)
            z = torch.exp(log_z.clamp(max=15.0))
            local = torch.cat([xy * z, z], dim=1).permute(0, 2, 3, 1).reshape(B, N, H, W, 3)
            conf = self.conf_head(conf_tokens[:, R:].float(), h, w, p)[0].permute(0, 2, 3, 1).reshape(B, N, H, W, 1)
            c2w = self.camera_head(camera_tokens[:, R:].float()).reshape(B, N, 4, 4)
            metric = self.metric_head(metric_tokens.float()).reshape(B).exp()
            scale = metric.view(B, 1, 1, 1, 1)
            points = (torch.einsum("bnij,bnhwj->bnhwi", c2w[..., :3, :3], local) + c2w[:, :, None, None, :3, 3]) * scale
            top = torch.cat([c2w[..., :3, :3], c2w[..., :3, 3:] * metric.view(B, 1, 1, 1)], dim=-1)
            c2w = torch.cat([top, c2w[..., 3:, :]], dim=-2)
        return Pi3XOutput(points=points, local_points=local * scale, conf=conf, camera_poses=c2w, metric=metric)
