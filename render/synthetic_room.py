"""Generated test scenes: Gaussians on the surfaces of a box room with a few boxes, geometry known.

World frame (metres, ``metric=True``)::

         z (up)
         |   y
         |  /
         | /
         o------ x         room = [0, W] x [0, D] x [0, H]

Floor, ceiling and the four walls face inwards; each box on the floor shows
its four sides and its top. Every face carries Gaussians drawn uniformly over
its area (count proportional to area), flat along the face normal (a thin
disc, as trained 3DGS surfaces are), with a per-face colour plus per-Gaussian
noise as texture and small random higher-order SH for view dependence. The
training cameras stand at eye height on a ring round the room centre and look
outwards at the walls, like a capture walking round a room. Everything is a
function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wmkit.datasets.cameras import Cameras
from wmkit.render.poses import look_at_c2w, pinhole_K
from wmkit.render.scenes import Scene, scene_frame
from wmkit.render.splats import Splats, rgb_to_sh_dc

__all__ = ["RoomGeometry", "make_room_scene"]

_THIN_M = 0.004  # disc thickness along the face normal
_OPACITY_LOGIT = 4.0  # sigmoid(4) ~ 0.98: surfaces are close to opaque


@dataclass(frozen=True)
class RoomGeometry:
    """The known geometry of a generated room.

    Attributes:
        size: (3,) room extent W, D, H in metres (x, y, z).
        boxes: (B, 2, 3) axis-aligned boxes standing on the floor, [lo, hi] corners.
    """

    size: np.ndarray
    boxes: np.ndarray

    def distance_to_surfaces(self, points: np.ndarray) -> np.ndarray:
        """(M,) distance of points (M, 3) inside the room to the nearest wall, floor, ceiling or box."""
        p = np.asarray(points, dtype=np.float64)
        d = np.minimum(p, self.size - p).min(axis=1)
        for lo, hi in self.boxes:
            outside = np.maximum(np.maximum(lo - p, p - hi), 0.0)
            d = np.minimum(d, np.linalg.norm(outside, axis=1))
        return d

    def inside_free_space(self, points: np.ndarray) -> np.ndarray:
        """(M,) bool: points (M, 3) inside the room and outside every box."""
        p = np.asarray(points, dtype=np.float64)
        inside = ((p > 0) & (p < self.size)).all(axis=1)
        for lo, hi in self.boxes:
            inside &= ~((p > lo) & (p < hi)).all(axis=1)
        return inside


def _faces(size: np.ndarray, boxes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(corner lo (3,), corner hi (3,) with one axis flat, that axis) for every visible face."""
    faces = []
    for axis in range(3):
        for at in (0.0, size[axis]):
            lo, hi = np.zeros(3), size.copy()
            lo[axis] = hi[axis] = at
            faces.append((lo, hi, axis))
    for b_lo, b_hi in boxes:
        for axis in range(3):
            for at in (b_lo[axis], b_hi[axis]):
                if axis == 2 and at == b_lo[2]:
                    continue  # the bottom rests on the floor
                lo, hi = b_lo.copy(), b_hi.copy()
                lo[axis] = hi[axis] = at
                faces.append((lo, hi, axis))
    return faces


def _random_boxes(rng: np.random.Generator, size: np.ndarray, num_boxes: int) -> np.ndarray:
    """(B, 2, 3) boxes on the floor, 0.4-1.0 m wide, kept 0.8 m from the walls so the room stays walkable."""
    boxes = np.zeros((num_boxes, 2, 3))
    for i in range(num_boxes):
        extent = rng.uniform([0.4, 0.4, 0.4], [1.0, 1.0, 1.2])
        lo = rng.uniform([0.8, 0.8, 0.0], [size[0] - 0.8 - extent[0], size[1] - 0.8 - extent[1], 0.0])
        boxes[i] = [lo, lo + extent]
    return boxes


def make_room_scene(
    seed: int = 0,
    size: tuple[float, float, float] = (6.0, 4.0, 2.6),
    num_boxes: int = 3,
    num_gaussians: int = 4000,
    sh_degree: int = 1,
    num_cameras: int = 24,
    width: int = 160,
    height: int = 120,
) -> tuple[Scene, RoomGeometry]:
    """A generated room scene (layout: module docstring) and its known geometry.

    Args:
        seed: every random choice derives from it.
        size: room extent (W, D, H) in metres.
        num_boxes: boxes standing on the floor.
        num_gaussians: about this many Gaussians over all faces (by area).
        sh_degree: SH degree 0-3 of the colours.
        num_cameras: training cameras on the ring.
        width, height: image size in pixels of the training cameras.
    """
    rng = np.random.default_rng(seed)
    size_m = np.asarray(size, dtype=np.float64)
    boxes = _random_boxes(rng, size_m, num_boxes)
    faces = _faces(size_m, boxes)
    areas = np.array([np.prod(np.delete(hi - lo, axis)) for lo, hi, axis in faces])
    counts = np.maximum(1, np.round(num_gaussians * areas / areas.sum()).astype(int))
    spacing = np.sqrt(areas.sum() / num_gaussians)
    means, log_scales, dc = [], [], []
    for (lo, hi, axis), n in zip(faces, counts):
        means.append(rng.uniform(lo, hi, size=(n, 3)))
        scales = np.full((n, 3), 0.8 * spacing)
        scales[:, axis] = _THIN_M
        log_scales.append(np.log(scales))
        base = rng.uniform(0.15, 0.85, size=3)
        dc.append(np.clip(base + rng.normal(0.0, 0.08, size=(n, 3)), 0.0, 1.0))
    n_total = int(counts.sum())
    k = (sh_degree + 1) ** 2
    sh = np.zeros((n_total, k, 3))
    sh[:, 0, :] = rgb_to_sh_dc(np.concatenate(dc))
    sh[:, 1:, :] = rng.normal(0.0, 0.05, size=(n_total, k - 1, 3))
    splats = Splats(
        means=np.concatenate(means),
        quats=np.tile([1.0, 0.0, 0.0, 0.0], (n_total, 1)),
        log_scales=np.concatenate(log_scales),
        opacity_logits=np.full(n_total, _OPACITY_LOGIT),
        sh=sh,
    )
    angles = np.linspace(0.0, 2 * np.pi, num_cameras, endpoint=False) + rng.uniform(0, 2 * np.pi)
    centre = np.array([size_m[0] / 2, size_m[1] / 2, 1.5])
    ring = 0.25 * min(size_m[0], size_m[1])
    eyes = centre + ring * np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    targets = eyes + np.stack([np.cos(angles), np.sin(angles), rng.uniform(-0.15, 0.15, num_cameras)], axis=1)
    frames = np.arange(num_cameras)
    cameras = Cameras(
        c2w=look_at_c2w(eyes, targets),
        K=np.broadcast_to(pinhole_K(width, height), (num_cameras, 3, 3)),
        t=frames / 30.0,
        frame_index=frames,
        metric=True,
        scale_confidence=1.0,
    ).validate(f"room-{seed}")
    name = f"room-{seed}"
    scene = Scene(name, splats, cameras, width, height, scene_frame(splats, cameras, name), metric=True)
    return scene, RoomGeometry(size=size_m, boxes=boxes)
