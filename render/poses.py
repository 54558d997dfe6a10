"""Pose helpers shared by the scene generator and the path planner (OpenCV c2w, K in pixels)."""

from __future__ import annotations

import numpy as np

__all__ = ["look_at_c2w", "pinhole_K"]


def look_at_c2w(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """(..., 4, 4) OpenCV camera-to-world at ``eye`` (..., 3) looking at ``target`` (..., 3), level with ``up``."""
    eye, target = np.broadcast_arrays(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, up)  # right = forward x up (OpenCV: y points down)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)
    c2w = np.zeros(eye.shape[:-1] + (4, 4))
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def pinhole_K(width: int, height: int, hfov_deg: float = 70.0) -> np.ndarray:
    """(3, 3) K in pixels with horizontal field of view ``hfov_deg``, square pixels, centred."""
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
