"""Clearance from the splats: an occupancy grid of Gaussian centres and its Euclidean distance transform.

The grid lives in the scene's aligned frame (z = up, :class:`~wmkit.render.scenes.SceneFrame`)
over the robust bounds plus a margin, so it is tight around the captured
region. A voxel is occupied when it holds the centre of a Gaussian with
opacity >= 0.1 (faint Gaussians are fog or floaters, not walls). The distance
of a free point is the distance to the nearest occupied voxel centre
(``scipy.ndimage.distance_transform_edt``), trilinearly interpolated. Points
outside the grid get distance 0: outside the captured region no view is safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from wmkit.render.scenes import Scene, SceneError

__all__ = ["ClearanceField"]

_MIN_OPACITY = 0.1
_MAX_VOXELS = 256**3  # keeps the grid < 130 MB of float64 on DL3DV-sized bounds


@dataclass(frozen=True)
class ClearanceField:
    """Distance (scene units) from any point to the nearest Gaussian centre, on a voxel grid.

    Attributes:
        align: (3, 3) world -> aligned rotation of the scene frame.
        origin: (3,) aligned coordinates of voxel (0, 0, 0)'s centre.
        voxel: voxel edge in scene units.
        distance: (X, Y, Z) float64 distance at voxel centres.
    """

    align: np.ndarray
    origin: np.ndarray
    voxel: float
    distance: np.ndarray

    @classmethod
    def from_scene(cls, scene: Scene, voxel: float, margin: float) -> "ClearanceField":
        """Build the field of ``scene`` with voxels of ``voxel`` and ``margin`` beyond the robust bounds (scene units)."""
        frame = scene.frame
        lo, hi = frame.lo - margin, frame.hi + margin
        shape = np.ceil((hi - lo) / voxel).astype(int) + 1
        if np.prod(shape.astype(float)) > _MAX_VOXELS:
            voxel = float(np.cbrt(np.prod(hi - lo) / _MAX_VOXELS)) * 1.01
            shape = np.ceil((hi - lo) / voxel).astype(int) + 1
        keep = scene.splats.opacities >= _MIN_OPACITY
        if not keep.any():
            raise SceneError(f"{scene.name}: no Gaussian with opacity >= {_MIN_OPACITY} to measure clearance from")
        idx = np.round((frame.to_aligned(scene.splats.means[keep]) - lo) / voxel).astype(int)
        idx = idx[((idx >= 0) & (idx < shape)).all(axis=1)]
        free = np.ones(shape, dtype=bool)
        free[tuple(idx.T)] = False
        return cls(frame.align, lo, float(voxel), distance_transform_edt(free) * voxel)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(M,) clearance of world points (M, 3); 0 outside the grid."""
        coords = ((np.asarray(points, np.float64) @ self.align.T - self.origin) / self.voxel).T
        return map_coordinates(self.distance, coords, order=1, mode="constant", cval=0.0)

    def gradient(self, points: np.ndarray) -> np.ndarray:
        """(M, 3) world-frame gradient of the clearance at world points (M, 3) by central differences."""
        points = np.asarray(points, np.float64)
        h = self.voxel
        grad = np.stack(
            [(self(points + h * e) - self(points - h * e)) / (2 * h) for e in self.align], axis=1
        )  # along the aligned axes, expressed in world coordinates below
        return grad @ self.align
