"""Camera inputs of the DiT (DESIGN §3, camera conditioning): Plücker rays and UCPE transforms.

Both branches see the camera at the latent token grid: token (i, j) of an H' × W' latent
frame is the ray through the centre of its pixel patch, u = (j + ½)·W/W', v = (i + ½)·H/H'
in pixels of the W × H frames (OpenCV camera axes, `wmkit.datasets.cameras`).

Frames to latent frames (VAE time stride 8; T = 8·(T' − 1) + 1 frames)::

    frames          0 | 1 … 8 | 9 … 16 | …
    latent frame    0 |   1   |   2    | …
    Plücker (fine)  frame 0 repeated 8× | its 8 frames | its 8 frames
    UCPE (coarse)   frame 0 | frame 8 | frame 16 …   (last frame of each stride, as the latent shards)

The first latent frame covers a single frame, so its 48 Plücker channels repeat that
frame's 6 channels 8 times (a constant camera over the stride), which is what the
other latent frames show for a static camera.

Before either branch, poses are made relative to the camera of frame 0 (c2w₀⁻¹·c2w):
UCPE attention only sees relative transforms P_i P_j⁻¹, so this changes no softmax
score, but it keeps the per-token transforms (and GDN keys) near the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import VAE_TIME_STRIDE


@dataclass(frozen=True)
class CameraInputs:
    """Camera tensors of one clip at the latent token grid, sliceable by latent frame.

    plucker: [B, T', H', W', 48] Plücker rays of the 8 frames of each latent frame.
    ucpe: [B, T', H', W', 4, 4] world → ray-local transform P of each token (coarse branch).
    """

    plucker: torch.Tensor
    ucpe: torch.Tensor

    def frames(self, start: int, stop: int) -> "CameraInputs":
        """The latent frames [start, stop) of the clip."""
        return CameraInputs(self.plucker[:, start:stop], self.ucpe[:, start:stop])

    def to(self, dtype: torch.dtype) -> "CameraInputs":
        """Both tensors cast to `dtype`."""
        return CameraInputs(self.plucker.to(dtype), self.ucpe.to(dtype))


def pixel_centres(latent_hw: tuple[int, int], image_hw: tuple[int, int], *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[H', W', 2] pixel coordinates (u, v) of the centres of the latent tokens' patches."""
    (Hl, Wl), (H, W) = latent_hw, image_hw
    v = (torch.arange(Hl, dtype=dtype) + 0.5) * (H / Hl)
    u = (torch.arange(Wl, dtype=dtype) + 0.5) * (W / Wl)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], -1)


def ray_directions(c2w: torch.Tensor, K: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space unit ray directions and camera centres.

    c2w: [..., 4, 4] camera-to-world (OpenCV); K: [..., 3, 3] intrinsics in pixels;
    uv: [h, w, 2] pixel coordinates. Returns (d [..., h, w, 3] unit, o [..., 3])."""
    pix = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)  # [h, w, 3]
    cam = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(K), pix)
    d = torch.einsum("...ij,...hwj->...hwi", c2w[..., :3, :3], cam)
    return d / d.norm(dim=-1, keepdim=True), c2w[..., :3, 3]


def plucker_rays(c2w: torch.Tensor, K: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Plücker coordinates [d, o × d] of the rays through pixels `uv`.

    c2w: [..., 4, 4]; K: [..., 3, 3] in pixels; uv: [h, w, 2]. Returns [..., h, w, 6]."""
    d, o = ray_directions(c2w, K, uv)
    m = torch.linalg.cross(o[..., None, None, :].expand_as(d), d, dim=-1)
    return torch.cat([d, m], -1)


def ucpe_transforms(c2w: torch.Tensor, K: torch.Tensor, uv: torch.Tensor, translation_scale: float = 1.0) -> torch.Tensor:
    """World → ray-local 4×4 transform P of each ray (UCPE).

    The ray-local frame has z along the ray, x the camera's x axis made orthogonal to
    the ray, y = z × x, and its origin at the camera centre (scaled by `translation_scale`).
    c2w: [..., 4, 4]; K: [..., 3, 3]; uv: [h, w, 2]. Returns P [..., h, w, 4, 4]."""
    d, o = ray_directions(c2w, K, uv)
    cam_x = c2w[..., None, None, :3, 0].expand_as(d)
    x = cam_x - (cam_x * d).sum(-1, keepdim=True) * d
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(d, x, dim=-1)
    R = torch.stack([x, y, d], -1)  # ray-local → world rotation, columns x, y, z
    P = torch.zeros(*d.shape[:-1], 4, 4, dtype=d.dtype, device=d.device)
    P[..., :3, :3] = R.transpose(-1, -2)
    t = o[..., None, None, :].expand_as(d) * translation_scale
    P[..., :3, 3] = -torch.einsum("...ji,...j->...i", R, t)
    P[..., 3, 3] = 1.0
    return P


def num_latent_frames(num_frames: int) -> int:
    """T' = (T − 1)/8 + 1 latent frames of T frames; T must be 8·k + 1."""
    if num_frames < 1 or (num_frames - 1) % VAE_TIME_STRIDE:
        raise ValueError(f"a clip of {num_frames} frames does not fill latent frames: need 8·k + 1 frames")
    return (num_frames - 1) // VAE_TIME_STRIDE + 1


def camera_inputs(
    c2w: torch.Tensor,
    K: torch.Tensor,
    latent_hw: tuple[int, int],
    image_hw: tuple[int, int],
    *,
    translation_scale: float = 1.0,
) -> CameraInputs:
    """Both camera branches' inputs from per-frame cameras.

    c2w: [B, T, 4, 4] camera-to-world (OpenCV, metres); K: [B, T, 3, 3] pixels of frames of
    size image_hw = (H, W); latent_hw = (H', W'). T = 8·(T' − 1) + 1. Returns float32
    `CameraInputs` with plucker [B, T', H', W', 48] and ucpe [B, T', H', W', 4, 4]."""
    if c2w.dim() != 4 or c2w.shape[-2:] != (4, 4) or K.shape[:2] != c2w.shape[:2] or K.shape[-2:] != (3, 3):
        raise ValueError(f"camera_inputs: need c2w [B, T, 4, 4] and K [B, T, 3, 3], got {tuple(c2w.shape)} and {tuple(K.shape)}")
    B, T = c2w.shape[:2]
    Tl = num_latent_frames(T)
    c2w, K = c2w.double(), K.double()
    c2w = torch.linalg.inv(c2w[:, :1]) @ c2w  # relative to frame 0 (see module docstring)
    uv = pixel_centres(latent_hw, image_hw).to(c2w.device)
    rays = plucker_rays(c2w, K, uv)  # [B, T, H', W', 6]
    first = rays[:, :1].expand(B, VAE_TIME_STRIDE, *rays.shape[2:])
    strided = torch.cat([first, rays[:, 1:]], 1).reshape(B, Tl, VAE_TIME_STRIDE, *rays.shape[2:])
    plucker = strided.permute(0, 1, 3, 4, 2, 5).reshape(B, Tl, *latent_hw, 6 * VAE_TIME_STRIDE)
    last = torch.arange(Tl, device=c2w.device) * VAE_TIME_STRIDE
    ucpe = ucpe_transforms(c2w[:, last], K[:, last], uv, translation_scale)
    return CameraInputs(plucker.float(), ucpe.float())
