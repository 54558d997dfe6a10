"""Synthetic bundle-adjustment problems with exact ground truth (points, cameras, depth)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from wmkit.annotate.fusion import FusedGeometry
from wmkit.annotate.tracks import Tracks

WIDTH, HEIGHT = 160, 96


@dataclass
class Problem:
    c2w: np.ndarray  # (T, 4, 4) ground truth
    K: np.ndarray  # (T, 3, 3) ground truth
    points: np.ndarray  # (M, 3) ground truth
    tracks: Tracks  # observations with pixel noise
    depth: np.ndarray  # (T, H, W) GT depth at the pixel of each observation; 0 elsewhere


def make_problem(
    num_frames: int = 24,
    points_per_frame: int = 12,
    zoom: float = 0.0,
    pixel_noise: float = 0.0,
    seed: int = 0,
    steady: bool = False,
) -> Problem:
    """A camera gliding sideways and forward while panning; points seeded in each frame's frustum.

    ``zoom``: the focal length grows linearly by this fraction over the clip. ``steady``: no pan or
    tilt, so every stretch of the clip looks alike (track lengths and points per window do not
    depend on where in the clip one looks).
    """
    rng = np.random.default_rng(seed)
    T = num_frames
    s = np.arange(T, dtype=np.float64)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    angles = np.zeros((T, 2)) if steady else np.stack([20 * np.sin(s / 6), 8 * np.sin(s / 4)], 1)
    c2w[:, :3, :3] = Rotation.from_euler("yx", angles, degrees=True).as_matrix()
    c2w[:, :3, 3] = np.stack([0.15 * s, 0.03 * np.sin(s / 3), 0.05 * s], 1)
    f = 110.0 * (1.0 + zoom * s / max(T - 1, 1))
    K = np.zeros((T, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f * 1.02, WIDTH / 2 + 1.5, HEIGHT / 2 - 1.0, 1.0

    # seed points in each frame's view so the density is constant along the path
    u = rng.uniform(8, WIDTH - 8, (T, points_per_frame))
    v = rng.uniform(8, HEIGHT - 8, (T, points_per_frame))
    z = rng.uniform(3.0, 8.0, (T, points_per_frame))
    cam = np.stack([(u - K[:, 0, 2, None]) / K[:, 0, 0, None] * z, (v - K[:, 1, 2, None]) / K[:, 1, 1, None] * z, z], -1)
    points = (np.einsum("tij,tnj->tni", c2w[:, :3, :3], cam) + c2w[:, None, :3, 3]).reshape(-1, 3)

    w2c = np.linalg.inv(c2w)
    x = np.einsum("tij,nj->tni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    uv = np.einsum("tij,tnj->tni", K, x / x[..., 2:3])[..., :2]
    visible = (x[..., 2] > 0.5) & (uv[..., 0] > 2) & (uv[..., 0] < WIDTH - 2) & (uv[..., 1] > 2) & (uv[..., 1] < HEIGHT - 2)
    frame, point = np.nonzero(visible)
    obs_uv = uv[frame, point] + pixel_noise * rng.standard_normal((len(frame), 2))
    # the depth map holds each point's exact depth at the pixel of its (noisy) observation, z-buffered
    depth = np.full((T, HEIGHT, WIDTH), np.inf)
    row, col = np.floor(obs_uv[:, 1]).astype(int), np.floor(obs_uv[:, 0]).astype(int)
    np.minimum.at(depth, (frame, row, col), x[frame, point, 2])
    seen = depth[frame, row, col] == x[frame, point, 2]  # a nearer point at the same pixel hides it
    depth[~np.isfinite(depth)] = 0.0
    order = np.lexsort((frame[seen], point[seen]))
    frame, point, obs_uv = frame[seen][order], point[seen][order], obs_uv[seen][order]
    tracks = Tracks(frame=frame, point=point, uv=obs_uv, num_points=len(points), num_frames=T)
    return Problem(c2w=c2w, K=K, points=points, tracks=tracks, depth=depth.astype(np.float32))


def fused(problem: Problem, c2w: np.ndarray | None = None, K: np.ndarray | None = None) -> FusedGeometry:
    """Fused geometry with the GT depth and the given (or GT) cameras."""
    T = len(problem.c2w)
    return FusedGeometry(
        c2w=problem.c2w if c2w is None else c2w,
        depth=problem.depth,
        K=problem.K if K is None else K,
        conf=(problem.depth > 0).astype(np.float32),
        scale=np.ones(T),
        scale_confidence=1.0,
    )


def perturb_poses(c2w: np.ndarray, rot_deg: float, trans_m: float, seed: int) -> np.ndarray:
    """Poses with random rotation and translation errors; frame 0 (the gauge) kept exact."""
    rng = np.random.default_rng(seed)
    out = c2w.copy()
    T = len(c2w)
    out[1:, :3, :3] = Rotation.from_rotvec(np.deg2rad(rot_deg) * rng.standard_normal((T - 1, 3))).as_matrix() @ c2w[1:, :3, :3]
    out[1:, :3, 3] += trans_m * rng.standard_normal((T - 1, 3))
    return out


def ate(c2w: np.ndarray, gt: np.ndarray) -> float:
    """RMS camera-centre error in metres (no alignment: the gauge is fixed at frame 0, the scale by depth)."""
    return float(np.sqrt(np.mean(np.sum((c2w[:, :3, 3] - gt[:, :3, 3]) ** 2, axis=1))))
