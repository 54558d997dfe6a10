"""Synthetic clips with exact cameras and depth: a camera moving inside a textured room.

Used by ``wmkit demo`` and by tests that need video whose cameras are known
exactly. Rendering is analytic ray casting against the inside of an
axis-aligned box (numpy, CPU), so a 160x96 frame takes about a millisecond.

Scene (world frame, metres; the camera starts near the origin looking along +z)::

        +y is down (OpenCV-style world, matching the first camera)
        room = [-W, W] x [-H, H] x [-D, D], each wall a distinct checker texture
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wmkit.datasets.cameras import Cameras

__all__ = ["SyntheticClip", "render_room_clip", "write_ground_truth"]

_ROOM_HALF_EXTENT_M = np.array([4.0, 1.5, 6.0])  # a 8 x 3 x 12 m room
# One base colour per wall, ordered (-x, +x, -y, +y, -z, +z).
_WALL_RGB = np.array(
    [[200, 80, 60], [60, 160, 200], [230, 230, 210], [120, 100, 80], [90, 190, 90], [210, 170, 60]], dtype=np.float64
)


@dataclass(frozen=True)
class SyntheticClip:
    """Frames, exact cameras and exact z-depth of one rendered clip."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    cameras: Cameras  # metric, OpenCV c2w, K in pixels
    depth: np.ndarray  # (T, H, W) float32 metres along the camera z axis


def _camera_path(num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth walk: forward drift with a swaying yaw and a little pitch -> c2w (T, 4, 4)."""
    t = np.arange(num_frames) / fps
    speed = rng.uniform(0.4, 0.9)  # m/s
    yaw_amp, yaw_hz = rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.3)
    phase = rng.uniform(0, 2 * np.pi)
    yaw = yaw_amp * np.sin(2 * np.pi * yaw_hz * t + phase)
    pitch = 0.08 * np.sin(2 * np.pi * 0.2 * t)
    start = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-0.3, 0.3), rng.uniform(-2.0, 0.0)])
    pos = start + np.stack([0.3 * np.sin(0.5 * t + phase), np.zeros_like(t), speed * t], axis=1)
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    ry = np.zeros((num_frames, 3, 3))  # yaw about the world y axis
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = cy, sy, 1.0, -sy, cy
    rx = np.zeros((num_frames, 3, 3))  # pitch about the camera x axis
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = 1.0, cp, -sp, sp, cp
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    c2w[:, :3, :3] = ry @ rx
    c2w[:, :3, 3] = pos
    return c2w


def _shade(points: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Checker texture with fine noise-free stripes so that motion is visible -> RGB float."""
    axes_uv = np.array([[1, 2], [1, 2], [0, 2], [0, 2], [0, 1], [0, 1]])[face]  # in-plane coordinates
    u = np.take_along_axis(points, axes_uv[..., :1], axis=-1)[..., 0]
    v = np.take_along_axis(points, axes_uv[..., 1:], axis=-1)[..., 0]
    checker = (np.floor(u * 2.0) + np.floor(v * 2.0)) % 2
    stripes = 0.5 + 0.5 * np.sin(7.0 * u) * np.cos(5.0 * v)
    light = (0.55 + 0.3 * checker + 0.15 * stripes)[..., None]
    return _WALL_RGB[face] * light


def _render(c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one frame inside the room -> (RGB uint8 (H, W, 3), z-depth float32 (H, W))."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    d_cam = pix @ np.linalg.inv(K).T  # z component is 1: ray length per unit z-depth
    d_world = d_cam @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    with np.errstate(divide="ignore"):
        bound = np.where(d_world > 0, _ROOM_HALF_EXTENT_M, -_ROOM_HALF_EXTENT_M)
        t_axis = np.where(d_world != 0, (bound - origin) / d_world, np.inf)
    axis = np.argmin(t_axis, axis=-1)
    t_hit = np.take_along_axis(t_axis, axis[..., None], axis=-1)[..., 0]
    points = origin + t_hit[..., None] * d_world
    positive = np.take_along_axis(d_world, axis[..., None], axis=-1)[..., 0] > 0
    face = 2 * axis + positive
    rgb = np.clip(_shade(points, face), 0, 255).astype(np.uint8)
    return rgb, t_hit.astype(np.float32)  # t is z-depth because d_cam has unit z


def render_room_clip(
    seed: int, num_frames: int = 24, width: int = 160, height: int = 96, fps: float = 8.0, zoom: float = 0.0
) -> SyntheticClip:
    """Render a clip with a random smooth camera path inside the textured room.

    ``zoom`` is the relative focal change over the clip (0.2 = focal grows by
    20 % from first to last frame), so per-frame intrinsics can be exercised.
    """
    if num_frames < 1 or width < 2 or height < 2 or fps <= 0:
        raise ValueError(f"render_room_clip: bad size {num_frames} frames {width}x{height} @ {fps} fps")
    rng = np.random.default_rng(seed)
    c2w = _camera_path(num_frames, fps, rng)
    focal = 0.9 * width * (1.0 + zoom * np.linspace(0.0, 1.0, num_frames))
    K = np.tile(np.eye(3), (num_frames, 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, 0, 2], K[:, 1, 2] = width / 2.0, height / 2.0
    rendered = [_render(c2w[i], K[i], width, height) for i in range(num_frames)]
    frames = np.stack([r[0] for r in rendered])
    depth = np.stack([r[1] for r in rendered])
    index = np.arange(num_frames)
    cameras = Cameras(c2w=c2w, K=K, t=index / fps, frame_index=index, metric=True, scale_confidence=1.0)
    return SyntheticClip(frames=frames, cameras=cameras.validate(f"synthetic clip seed={seed}"), depth=depth)


def write_ground_truth(clip: SyntheticClip, gt_dir: Path) -> None:
    """Write ``gt_dir/cameras.npz`` (wmkit Cameras) and ``gt_dir/depth.npz`` (depth float32 metres, valid bool).

    ``valid`` marks pixels whose ray hit a surface; their depth is 0 elsewhere.
    Each file is written to a temporary name and renamed, so a reader never
    sees half a file.
    """
    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    valid = np.isfinite(clip.depth) & (clip.depth > 0)
    partial = gt_dir / "depth.npz.partial"
    with open(partial, "wb") as f:
        np.savez_compressed(f, depth=np.where(valid, clip.depth, 0.0).astype(np.float32), valid=valid)
    partial.replace(gt_dir / "depth.npz")
    partial = gt_dir / "cameras.npz.partial"
    clip.cameras.save(str(partial))
    partial.replace(gt_dir / "cameras.npz")
