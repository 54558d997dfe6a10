"""wmkit cameras: the one camera format inside wmkit (DESIGN §2).

Vocabulary, used as defined everywhere in wmkit:

- ``c2w`` (T, 4, 4) float64: camera-to-world, **OpenCV** camera axes::

          z (forward, into the scene)
         /
        o ---- x (right)
        |
        y (down)

  world units are metres when ``metric`` is True.
- ``K`` (T, 3, 3) float64: pinhole intrinsics **in pixels** of the stored frames,
  one per frame (``K[:, 0, 0] = fx``, ``K[:, 1, 1] = fy``, ``K[:, :2, 2] = cx, cy``).
- ``t`` (T,) float64: seconds from clip start; ``frame_index`` (T,) int64.
- frame vs latent frame: a *frame* is one decoded video frame; a *latent frame*
  is one VAE time step (stride 8) and is sampled from frames downstream.

Every source convention converts to this class here and nowhere else.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

__all__ = ["Cameras", "CameraError"]


class CameraError(ValueError):
    """Invalid or inconsistent camera data; the message names the item."""


@dataclass(frozen=True)
class Cameras:
    """Per-frame cameras of one clip (see the module docstring for axes and units)."""

    c2w: np.ndarray  # (T, 4, 4) float64, OpenCV camera-to-world
    K: np.ndarray  # (T, 3, 3) float64, pixels
    t: np.ndarray  # (T,) float64, seconds from clip start
    frame_index: np.ndarray  # (T,) int64
    metric: bool = False
    scale_confidence: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "c2w", np.asarray(self.c2w, dtype=np.float64))
        object.__setattr__(self, "K", np.asarray(self.K, dtype=np.float64))
        object.__setattr__(self, "t", np.asarray(self.t, dtype=np.float64))
        object.__setattr__(self, "frame_index", np.asarray(self.frame_index, dtype=np.int64))
        object.__setattr__(self, "metric", bool(self.metric))
        object.__setattr__(self, "scale_confidence", float(self.scale_confidence))
        T = len(self.c2w)
        shapes = {
            "c2w": (self.c2w.shape, (T, 4, 4)),
            "K": (self.K.shape, (T, 3, 3)),
            "t": (self.t.shape, (T,)),
            "frame_index": (self.frame_index.shape, (T,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise CameraError(f"cameras.{name} has shape {got}, expected {want}")

    def __len__(self) -> int:
        return len(self.c2w)

    def validate(self, name: str = "cameras", atol: float = 1e-4) -> "Cameras":
        """Raise :class:`CameraError` naming ``name`` unless every frame is usable.

        Checks: finite values, orthonormal rotations with det +1, last row of
        ``c2w`` = [0, 0, 0, 1], positive focal lengths, zero skew row, strictly
        increasing ``t`` and ``frame_index``. Returns ``self`` so calls chain.
        """
        if len(self) == 0:
            raise CameraError(f"{name}: no frames")
        for field in ("c2w", "K", "t"):
            bad = ~np.isfinite(getattr(self, field)).reshape(len(self), -1).all(axis=1)
            if bad.any():
                raise CameraError(f"{name}: non-finite {field} at frames {np.flatnonzero(bad)[:8].tolist()}")
        R = self.c2w[:, :3, :3]
        ortho_err = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
        det = np.linalg.det(R)
        bad = (ortho_err > atol) | (np.abs(det - 1.0) > atol)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CameraError(
                f"{name}: rotation of frame {i} is not a proper rotation "
                f"(|RR^T-I|={ortho_err[i]:.2e}, det={det[i]:.4f})"
            )
        if not np.allclose(self.c2w[:, 3, :], [0.0, 0.0, 0.0, 1.0], atol=atol):
            raise CameraError(f"{name}: c2w last row is not [0, 0, 0, 1]")
        fx, fy = self.K[:, 0, 0], self.K[:, 1, 1]
        bad = (fx <= 0) | (fy <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CameraError(f"{name}: non-positive focal length at frame {i} (fx={fx[i]}, fy={fy[i]})")
        if not np.allclose(self.K[:, 2, :], [0.0, 0.0, 1.0], atol=atol) or np.abs(self.K[:, 1, 0]).max() > atol:
            raise CameraError(f"{name}: K is not a pinhole matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]")
        if len(self) > 1 and (np.diff(self.frame_index) <= 0).any():
            raise CameraError(f"{name}: frame_index is not strictly increasing")
        if len(self) > 1 and (np.diff(self.t) <= 0).any():
            raise CameraError(f"{name}: t is not strictly increasing")
        return self

    def to_npz_bytes(self) -> bytes:
        """Serialise as the shard member ``cameras.npz`` (uncompressed, no pickle)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            c2w=self.c2w,
            K=self.K,
            t=self.t,
            frame_index=self.frame_index,
            metric=np.bool_(self.metric),
            scale_confidence=np.float64(self.scale_confidence),
        )
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes, name: str = "cameras.npz") -> "Cameras":
        """Parse a ``cameras.npz`` member; raise :class:`CameraError` naming ``name`` if malformed."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return cls(
                    c2w=z["c2w"],
                    K=z["K"],
                    t=z["t"],
                    frame_index=z["frame_index"],
                    metric=bool(z["metric"]),
                    scale_confidence=float(z["scale_confidence"]),
                )
        except (KeyError, ValueError, OSError) as err:
            raise CameraError(f"{name}: unreadable cameras.npz ({err})") from err

    def save(self, path: str) -> None:
        """Write ``cameras.npz`` to ``path``."""
        with open(path, "wb") as f:
            f.write(self.to_npz_bytes())

    @classmethod
    def load(cls, path: str) -> "Cameras":
        """Read a ``cameras.npz`` file."""
        with open(path, "rb") as f:
            return cls.from_npz_bytes(f.read(), name=str(path))

    def select(self, index: np.ndarray | slice) -> "Cameras":
        """Return the cameras of a subset of frames (``t`` re-based to the first kept frame)."""
        t = self.t[index]
        return Cameras(
            c2w=self.c2w[index],
            K=self.K[index],
            t=t - t[0] if len(t) else t,
            frame_index=self.frame_index[index],
            metric=self.metric,
            scale_confidence=self.scale_confidence,
        )
