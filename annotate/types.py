"""Types shared by every annotation stage (DESIGN §4): the backend protocol and its output.

A geometry backend maps the decoded frames of one clip to a :class:`Prediction`;
fusion, bundle adjustment and quality consume it. Stages raise
:class:`AnnotateError` naming the clip and the stage so the pipeline can record
the failure as a status row and go on.

Shapes: T frames, H x W pixels of the frames handed to ``predict``. Cameras use
the wmkit conventions of :mod:`wmkit.datasets.cameras` (OpenCV axes, K in pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["AnnotateError", "Prediction", "Backend"]

_ATOL = 1e-4  # rotation orthonormality and K pinhole-row tolerance, as Cameras.validate


class AnnotateError(ValueError):
    """Bad input or a failed stage; the message names the clip and the stage."""


@dataclass(frozen=True)
class Prediction:
    """What a geometry backend returns for one clip.

    ``depth`` is z-depth along the camera axis, up to one unknown scale unless
    ``metric``; where a backend knows nothing (e.g. sparse SfM depth) it writes
    depth 0 with conf 0. ``c2w`` shares that scale (``None`` for monocular
    depth backends that estimate no poses).
    """

    depth: np.ndarray  # (T, H, W) float32, up to scale unless metric; 0 = unknown
    conf: np.ndarray  # (T, H, W) float32 in [0, 1]
    c2w: np.ndarray | None  # (T, 4, 4) float64, OpenCV axes, up to scale; None for monocular-depth backends
    K: np.ndarray  # (T, 3, 3) float64, pixels of the frames given to predict
    metric: bool  # depth (and c2w translation) in metres
    backend: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", np.asarray(self.depth, dtype=np.float32))
        object.__setattr__(self, "conf", np.asarray(self.conf, dtype=np.float32))
        object.__setattr__(self, "K", np.asarray(self.K, dtype=np.float64))
        if self.c2w is not None:
            object.__setattr__(self, "c2w", np.asarray(self.c2w, dtype=np.float64))
        object.__setattr__(self, "metric", bool(self.metric))

    def validate(self, clip_id: str, num_frames: int, hw: tuple[int, int]) -> "Prediction":
        """Raise :class:`AnnotateError` naming ``clip_id`` and the backend unless the prediction is usable.

        Checks: shapes against ``num_frames`` and ``hw = (H, W)``; every array
        finite; depth >= 0 and > 0 wherever conf > 0; conf in [0, 1]; K a
        pinhole matrix with positive focal lengths; c2w (when given) proper
        rotations with last row [0, 0, 0, 1]. Returns ``self`` so calls chain.
        """
        where = f"clip {clip_id!r}: backend {self.backend!r}"
        T, (H, W) = int(num_frames), hw
        shapes = {"depth": (self.depth, (T, H, W)), "conf": (self.conf, (T, H, W)), "K": (self.K, (T, 3, 3))}
        if self.c2w is not None:
            shapes["c2w"] = (self.c2w, (T, 4, 4))
        for field, (arr, want) in shapes.items():
            if arr.shape != want:
                raise AnnotateError(f"{where}: {field} has shape {arr.shape}, expected {want}")
        for field, (arr, _) in shapes.items():
            bad = ~np.isfinite(arr).reshape(T, -1).all(axis=1)
            if bad.any():
                raise AnnotateError(
                    f"{where}: non-finite {field} at frames {np.flatnonzero(bad)[:8].tolist()} "
                    f"({int((~np.isfinite(arr)).sum())} values)"
                )
        if (self.conf < 0).any() or (self.conf > 1).any():
            raise AnnotateError(f"{where}: conf outside [0, 1] (min {self.conf.min():g}, max {self.conf.max():g})")
        bad_depth = (self.depth < 0) | ((self.conf > 0) & (self.depth <= 0))
        if bad_depth.any():
            frames = np.flatnonzero(bad_depth.reshape(T, -1).any(axis=1))
            raise AnnotateError(f"{where}: non-positive depth with conf > 0 at frames {frames[:8].tolist()}")
        fx, fy = self.K[:, 0, 0], self.K[:, 1, 1]
        if (fx <= 0).any() or (fy <= 0).any():
            i = int(np.flatnonzero((fx <= 0) | (fy <= 0))[0])
            raise AnnotateError(f"{where}: non-positive focal length at frame {i} (fx={fx[i]:g}, fy={fy[i]:g})")
        if not np.allclose(self.K[:, 2, :], [0.0, 0.0, 1.0], atol=_ATOL) or np.abs(self.K[:, 1, 0]).max() > _ATOL:
            raise AnnotateError(f"{where}: K is not a pinhole matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]")
        if self.c2w is not None:
            R = self.c2w[:, :3, :3]
            ortho_err = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
            bad = (ortho_err > _ATOL) | (np.abs(np.linalg.det(R) - 1.0) > _ATOL)
            if bad.any():
                raise AnnotateError(f"{where}: c2w rotation not proper at frames {np.flatnonzero(bad)[:8].tolist()}")
            if not np.allclose(self.c2w[:, 3, :], [0.0, 0.0, 0.0, 1.0], atol=_ATOL):
                raise AnnotateError(f"{where}: c2w last row is not [0, 0, 0, 1]")
        return self


@runtime_checkable
class Backend(Protocol):
    """A geometry backend: set up once per worker (actor), then predict clip after clip.

    Backends are built by name with :func:`wmkit.annotate.backends.make_backend`.
    """

    name: str

    def setup(self) -> None:
        """Load weights once per actor (a no-op for weight-free backends)."""
        ...

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        """Geometry of one clip from ``frames`` uint8 (T, H, W, 3) RGB; raise AnnotateError naming ``clip_id``."""
        ...
