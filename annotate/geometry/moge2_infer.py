"""MoGe-2 inference: metric depth, intrinsics and validity per frame, over videos of any length.

Resolution handling. MoGe-2 takes frames of any size and aspect ratio: each
frame is resized (bilinear, antialiased) to a ViT grid of ``rows x cols``
patches of 14 px with ``rows * cols ~= num_tokens`` and ``cols / rows ~= W / H``
(so the encoder input is always a multiple of the patch size), decoded at
16 x that grid, and the outputs are resized back to H x W. Rounding the grid
changes the aspect ratio slightly; the decoder is given the view-plane
coordinates of the true aspect ratio, so the geometry stays undistorted.
``num_tokens`` trades detail for time: ``resolution_level`` 0..9 maps linearly
onto the config's ``num_tokens_range`` (1200..3600 tokens for the published
model; level 9 = 3600 tokens = ~ 60 x 60 patches = 840 x 840 px of ViT input).

Memory. :func:`iter_moge2` pulls ``batch_size`` frames at a time from any
iterable (a decoder generator), runs them and yields their results, so memory
is one batch whatever the video length. On CUDA the network runs under bf16
autocast; the geometry (focal/shift fit, depth, points) is always fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from wmkit.annotate.geometry.moge2_config import MoGe2Config
from wmkit.annotate.geometry.moge2_geometry import depth_to_points, intrinsics_px, recover_focal_shift
from wmkit.annotate.geometry.moge2_model import MoGe2Model

__all__ = ["MoGe2Frames", "num_tokens_for", "infer_moge2", "iter_moge2", "MASK_THRESHOLD"]

MASK_THRESHOLD = 0.5  # mask probability above which a pixel is valid geometry (upstream default)


@dataclass(frozen=True)
class MoGe2Frames:
    """MoGe-2 results for consecutive frames ``start .. start + B - 1`` of a video."""

    start: int  # index of the first frame in the video
    depth: np.ndarray  # (B, H, W) float32 metric z-depth in metres; 0 where not valid
    valid: np.ndarray  # (B, H, W) bool: mask > threshold and depth > 0
    mask: np.ndarray  # (B, H, W) float32 mask probability in [0, 1]
    points: np.ndarray  # (B, H, W, 3) float32 camera-space points in metres (OpenCV axes), 0 where not valid
    K: np.ndarray  # (B, 3, 3) float64 pinhole intrinsics in pixels of the input frames
    metric_scale: np.ndarray  # (B,) float32 > 0: metres per unit of the affine point map


def num_tokens_for(cfg: MoGe2Config, resolution_level: int) -> int:
    """ViT tokens per frame at ``resolution_level`` 0 (fewest) .. 9 (most) of ``cfg.num_tokens_range``."""
    if not 0 <= resolution_level <= 9:
        raise ValueError(f"resolution_level {resolution_level} outside 0..9")
    lo, hi = cfg.num_tokens_range
    return int(lo + resolution_level / 9 * (hi - lo))


@torch.inference_mode()
def infer_moge2(model: MoGe2Model, images: torch.Tensor, num_tokens: int,
                mask_threshold: float = MASK_THRESHOLD) -> dict[str, torch.Tensor]:
    """Metric geometry of a batch ``images`` (B, 3, H, W) RGB in [0, 1] on the model's device.

    Returns fp32 tensors ``depth`` (B, H, W) metres (0 where not valid),
    ``valid`` (B, H, W) bool, ``mask`` (B, H, W) in [0, 1], ``points``
    (B, H, W, 3) metres, ``K`` (B, 3, 3) pixels, ``metric_scale`` (B,).
    The network runs under bf16 autocast on CUDA, fp32 elsewhere.
    """
    device = next(model.parameters()).device
    images = images.to(device=device, dtype=torch.float32)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        raw = model(images, num_tokens=num_tokens)
    points, mask, scale = raw["points"].float(), raw["mask"].float(), raw["metric_scale"].float()
    B, H, W, _ = points.shape
    valid = mask > mask_threshold
    focal, shift = recover_focal_shift(points, valid)
    K = intrinsics_px(focal, H, W)
    depth = points[..., 2] + shift[:, None, None]
    valid &= depth > 0
    depth = torch.where(valid, depth * scale[:, None, None], 0.0)
    return {"depth": depth, "valid": valid, "mask": mask, "points": depth_to_points(depth, K), "K": K,
            "metric_scale": scale}


def _batches(frames: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index of the first frame, (b, H, W, 3) uint8 stack) for consecutive frames, b <= batch_size."""
    batch: list[np.ndarray] = []
    start = 0
    for i, frame in enumerate(frames):
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        if batch and frame.shape != batch[0].shape:
            raise ValueError(f"frame {i}: size {frame.shape[:2]} differs from frame {start}'s {batch[0].shape[:2]}")
        batch.append(frame)
        if len(batch) == batch_size:
            yield start, np.stack(batch)
            start, batch = i + 1, []
    if batch:
        yield start, np.stack(batch)


def iter_moge2(model: MoGe2Model, frames: Iterable[np.ndarray], batch_size: int = 8, resolution_level: int = 9,
               num_tokens: int | None = None, mask_threshold: float = MASK_THRESHOLD) -> Iterator[MoGe2Frames]:
    """Run MoGe-2 over ``frames`` (each (H, W, 3) uint8 RGB, all one size) ``batch_size`` at a time.

    ``num_tokens`` (when given) overrides ``resolution_level``. Yields one
    :class:`MoGe2Frames` per batch as soon as it is computed; nothing is kept
    between batches, so a generator of decoded frames runs in flat memory.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} < 1")
    tokens = num_tokens if num_tokens is not None else num_tokens_for(model.cfg, resolution_level)
    for start, stack in _batches(frames, batch_size):
        images = torch.from_numpy(stack).permute(0, 3, 1, 2).float().div_(255.0)
        out = infer_moge2(model, images, tokens, mask_threshold)
        host = {k: v.cpu().numpy() for k, v in out.items()}
        yield MoGe2Frames(start=start, depth=host["depth"], valid=host["valid"], mask=host["mask"],
                          points=host["points"], K=host["K"].astype(np.float64), metric_scale=host["metric_scale"])
