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

Every source convention converts to this class here and nowhere else. The
conventions met at the edge::

    source        pose file                        camera axes   quaternion   K
    ----------    -----------------------------    -----------   ----------   ----------------
    SpatialVID    w2c [tx,ty,tz,qx,qy,qz,qw]      OpenCV        xyzw         normalized fx,fy,cx,cy
    Sekai game    c2w (N,4,4) or (N,3,4)          OpenCV        -            normalized fx,fy,cx,cy
    OmniWorld     w2c quats + trans               OpenCV        wxyz         pixels
    COLMAP        w2c qvec + tvec                 OpenCV        wxyz         pixels
    nerfstudio    c2w transform_matrix            OpenGL        -            pixels (fl_x, fl_y, cx, cy)

OpenGL camera axes (x right, y up, z backward) differ from OpenCV by a flip of
the camera y and z axes: ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``.

Sparse sources (poses only at some frames) are resampled to every video frame
with :func:`interpolate_cameras` (slerp for rotations, linear for translation
and K, ends held constant).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.interpolate import make_interp_spline
from scipy.spatial.transform import Rotation, Slerp

__all__ = [
    "Cameras",
    "CameraError",
    "quat_to_matrix",
    "matrix_to_quat",
    "invert_rigid",
    "opengl_to_opencv",
    "opencv_to_opengl",
    "intrinsics_from_normalized",
    "intrinsics_to_normalized",
    "scale_intrinsics",
    "interpolate_cameras",
    "from_spatialvid",
    "to_spatialvid",
    "from_sekai_game",
    "to_sekai_game",
    "from_omniworld",
    "to_omniworld",
    "from_nerfstudio",
    "to_nerfstudio",
    "nerfstudio_distortion",
    "from_colmap",
    "to_colmap",
]


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
        increasing ``t`` and ``frame_index``. Frames are named by their
        ``frame_index``. Returns ``self`` so calls chain.
        """
        if len(self) == 0:
            raise CameraError(f"{name}: no frames")
        for field in ("c2w", "K", "t"):
            bad = ~np.isfinite(getattr(self, field)).reshape(len(self), -1).all(axis=1)
            if bad.any():
                raise CameraError(f"{name}: non-finite {field} at frames {self.frame_index[bad][:8].tolist()}")
        R = self.c2w[:, :3, :3]
        ortho_err = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
        det = np.linalg.det(R)
        bad = (ortho_err > atol) | (np.abs(det - 1.0) > atol)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CameraError(
                f"{name}: rotation of frame {self.frame_index[i]} is not a proper rotation "
                f"(|RR^T-I|={ortho_err[i]:.2e}, det={det[i]:.4f})"
            )
        if not np.allclose(self.c2w[:, 3, :], [0.0, 0.0, 0.0, 1.0], atol=atol):
            raise CameraError(f"{name}: c2w last row is not [0, 0, 0, 1]")
        fx, fy = self.K[:, 0, 0], self.K[:, 1, 1]
        bad = (fx <= 0) | (fy <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CameraError(
                f"{name}: non-positive focal length at frame {self.frame_index[i]} (fx={fx[i]}, fy={fy[i]})"
            )
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
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
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


# ---------------------------------------------------------------------------
# Elementwise conversions (any leading batch dims, float64)
# ---------------------------------------------------------------------------

QuatOrder = Literal["wxyz", "xyzw"]


def _check_order(order: str) -> bool:
    """Return ``scalar_first`` for a quaternion order name, raising on anything else."""
    if order not in ("wxyz", "xyzw"):
        raise CameraError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")
    return order == "wxyz"


def _check_last_dims(arr: np.ndarray, dims: tuple[int, ...], what: str) -> np.ndarray:
    """Return ``arr`` as float64 after checking that its trailing dims equal ``dims``."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim < len(dims) or arr.shape[arr.ndim - len(dims) :] != dims:
        raise CameraError(f"{what} has shape {arr.shape}, expected (..., {', '.join(map(str, dims))})")
    return arr


def quat_to_matrix(q: np.ndarray, order: QuatOrder, name: str = "quaternion") -> np.ndarray:
    """Rotation matrices from quaternions, normalising them first.

    Args:
        q: (..., 4) quaternions, scalar first (``"wxyz"``, COLMAP/OmniWorld) or
            last (``"xyzw"``, SpatialVID/scipy).
        order: component order of ``q``.
        name: item named in errors.

    Returns:
        (..., 3, 3) float64 rotation matrices.

    Raises:
        CameraError: a quaternion is non-finite or has zero norm.
    """
    scalar_first = _check_order(order)
    q = _check_last_dims(q, (4,), f"{name} ({order})")
    norm = np.linalg.norm(q, axis=-1)
    bad = ~np.isfinite(norm) | (norm < 1e-12)
    if bad.any():
        where = np.argwhere(np.atleast_1d(bad))[0].tolist()
        raise CameraError(f"{name}: quaternion at index {where} is non-finite or has zero norm")
    return Rotation.from_quat(q / norm[..., None], scalar_first=scalar_first).as_matrix()


def matrix_to_quat(R: np.ndarray, order: QuatOrder, name: str = "rotation") -> np.ndarray:
    """Unit quaternions of rotation matrices, sign fixed so that w >= 0.

    Args:
        R: (..., 3, 3) rotation matrices (projected to the nearest rotation).
        order: component order of the result, ``"wxyz"`` or ``"xyzw"``.
        name: item named in errors.

    Returns:
        (..., 4) float64 quaternions; q and -q are the same rotation, so the
        canonical one (w >= 0) is returned to make outputs comparable.
    """
    scalar_first = _check_order(order)
    R = _check_last_dims(R, (3, 3), name)
    if not np.isfinite(R).all():
        raise CameraError(f"{name}: non-finite rotation matrix")
    return Rotation.from_matrix(R).as_quat(canonical=True, scalar_first=scalar_first)


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms without a general matrix inverse.

    Args:
        T: (..., 4, 4) rigid transforms [R | t; 0 0 0 1].

    Returns:
        (..., 4, 4) float64 [R^T | -R^T t; 0 0 0 1] (c2w <-> w2c).
    """
    T = _check_last_dims(T, (4, 4), "rigid transform")
    R_inv = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = R_inv
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", R_inv, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def opengl_to_opencv(c2w_gl: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenGL camera axes (x right, y up, z back) to OpenCV axes.

    Right-multiplies ``diag(1, -1, -1, 1)``: flips the camera y and z axes and
    leaves the camera centre and the world frame alone. The map is its own
    inverse (see :func:`opencv_to_opengl`).

    Args:
        c2w_gl: (..., 4, 4) or (..., 3, 4) camera-to-world matrices.

    Returns:
        float64 array of the same shape.
    """
    c2w = np.array(c2w_gl, dtype=np.float64)
    if c2w.ndim < 2 or c2w.shape[-1] != 4 or c2w.shape[-2] not in (3, 4):
        raise CameraError(f"camera-to-world has shape {c2w.shape}, expected (..., 4, 4) or (..., 3, 4)")
    c2w[..., :, 1:3] *= -1.0
    return c2w


def opencv_to_opengl(c2w_cv: np.ndarray) -> np.ndarray:
    """Camera-to-world with OpenCV camera axes to OpenGL axes (inverse of :func:`opengl_to_opencv`, the same flip)."""
    return opengl_to_opencv(c2w_cv)


def intrinsics_from_normalized(fxfycxcy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pinhole K in pixels from intrinsics normalized by the image size.

    Args:
        fxfycxcy: (..., 4) ``[fx/W, fy/H, cx/W, cy/H]``.
        width, height: image size W, H in pixels of the frames K applies to.

    Returns:
        (..., 3, 3) float64 K in pixels.
    """
    f = _check_last_dims(fxfycxcy, (4,), "normalized intrinsics")
    _check_size(width, height)
    K = np.zeros(f.shape[:-1] + (3, 3))
    K[..., 0, 0] = f[..., 0] * width
    K[..., 1, 1] = f[..., 1] * height
    K[..., 0, 2] = f[..., 2] * width
    K[..., 1, 2] = f[..., 3] * height
    K[..., 2, 2] = 1.0
    return K


def intrinsics_to_normalized(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Intrinsics normalized by the image size (inverse of :func:`intrinsics_from_normalized`).

    Args:
        K: (..., 3, 3) pinhole K in pixels (skew is dropped).
        width, height: image size W, H in pixels.

    Returns:
        (..., 4) float64 ``[fx/W, fy/H, cx/W, cy/H]``.
    """
    K = _check_last_dims(K, (3, 3), "K")
    _check_size(width, height)
    return np.stack([K[..., 0, 0] / width, K[..., 1, 1] / height, K[..., 0, 2] / width, K[..., 1, 2] / height], -1)


def scale_intrinsics(K: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """K (..., 3, 3) in pixels of a ``from_size`` (W, H) image, for the same view at ``to_size`` (W, H).

    Pixel-corner convention (pixel i covers [i, i+1)): rows 0 and 1 scale by the width and height ratios.
    """
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return np.asarray(K, dtype=np.float64) * np.array([[sx], [sy], [1.0]])


def _check_size(width: int, height: int) -> None:
    if not (width > 0 and height > 0):
        raise CameraError(f"image size must be positive, got {width}x{height}")


# ---------------------------------------------------------------------------
# Interpolation of sparse poses to every frame
# ---------------------------------------------------------------------------


def interpolate_cameras(
    c2w: np.ndarray, K: np.ndarray, index: np.ndarray, dense_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Resample cameras known at some frames to other frames.

    Rotations are interpolated by slerp (constant angular speed between two
    keys), camera centres and every K entry linearly. Frames before
    ``index[0]`` or after ``index[-1]`` hold the nearest end camera: a source
    that stops annotating before the clip ends gets a still camera rather than
    an extrapolated one that may fly off. With one key every frame gets it.

    Args:
        c2w: (N, 4, 4) camera-to-world at the key frames.
        K: (N, 3, 3) intrinsics at the key frames.
        index: (N,) strictly increasing frame indexes of the keys.
        dense_index: (M,) frame indexes wanted (any order, may be fractional).

    Returns:
        ``(c2w, K)``: (M, 4, 4) and (M, 3, 3) float64; exact at the keys.

    Raises:
        CameraError: mismatched shapes, no keys, or ``index`` not strictly increasing.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    index = np.asarray(index, dtype=np.float64)
    dense = np.asarray(dense_index, dtype=np.float64)
    N = len(index)
    if index.ndim != 1 or N == 0 or c2w.shape != (N, 4, 4) or K.shape != (N, 3, 3) or dense.ndim != 1:
        raise CameraError(
            f"interpolate_cameras: expected c2w (N,4,4), K (N,3,3), index (N,), dense_index (M,) with N >= 1; "
            f"got {c2w.shape}, {K.shape}, {index.shape}, {dense.shape}"
        )
    if not (np.isfinite(index).all() and np.isfinite(dense).all()):
        raise CameraError("interpolate_cameras: non-finite frame index")
    if N > 1 and (np.diff(index) <= 0).any():
        i = int(np.flatnonzero(np.diff(index) <= 0)[0])
        raise CameraError(
            f"interpolate_cameras: index is not strictly increasing ({index[i]:g} then {index[i + 1]:g} at key {i + 1})"
        )
    if N == 1:
        return np.repeat(c2w, len(dense), axis=0), np.repeat(K, len(dense), axis=0)
    x = np.clip(dense, index[0], index[-1])  # hold the end cameras outside the keys
    out = np.zeros((len(dense), 4, 4))
    out[:, :3, :3] = Slerp(index, Rotation.from_matrix(c2w[:, :3, :3]))(x).as_matrix()
    out[:, :3, 3] = make_interp_spline(index, c2w[:, :3, 3], k=1, axis=0)(x)
    out[:, 3, 3] = 1.0
    K_out = make_interp_spline(index, K, k=1, axis=0)(x)
    # Slerp re-projects the key rotations; put the keys back bit-exact where a
    # dense frame lands on one so converters round-trip exactly.
    hit = np.searchsorted(index, x).clip(0, N - 1)
    exact = index[hit] == x
    out[exact] = c2w[hit[exact]]
    K_out[exact] = K[hit[exact]]
    return out, K_out


# ---------------------------------------------------------------------------
# Shared plumbing for source converters
# ---------------------------------------------------------------------------


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, 4, 4) transforms from (N, 3, 3) rotations and (N, 3) translations."""
    T = np.zeros((len(R), 4, 4))
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


def _homogeneous(M: np.ndarray, what: str) -> np.ndarray:
    """(..., 4, 4) from (..., 3, 4) or (..., 4, 4) by appending the row [0, 0, 0, 1]."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim < 2 or M.shape[-1] != 4 or M.shape[-2] not in (3, 4):
        raise CameraError(f"{what} has shape {M.shape}, expected (..., 3, 4) or (..., 4, 4)")
    if M.shape[-2] == 4:
        return M
    bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], M.shape[:-2] + (1, 4))
    return np.concatenate([M, bottom], axis=-2)


def _check_shapes(name: str, **arrays: tuple[np.ndarray, tuple[int, ...]]) -> None:
    """Raise naming the item unless every ``field=(array, expected_shape)`` matches (one row per listed frame)."""
    for field, (arr, shape) in arrays.items():
        if np.shape(arr) != shape:
            raise CameraError(f"{name}: {field} has shape {np.shape(arr)}, expected {shape} (one row per listed frame)")


def _broadcast_K(K: np.ndarray, n: int, name: str) -> np.ndarray:
    """(n, 3, 3) intrinsics from (3, 3) or (n, 3, 3)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (3, 3):
        return np.repeat(K[None], n, axis=0)
    if K.shape != (n, 3, 3):
        raise CameraError(f"{name}: K has shape {K.shape}, expected (3, 3) or ({n}, 3, 3)")
    return K


def _dense_cameras(
    c2w: np.ndarray,
    K: np.ndarray,
    indexes: np.ndarray,
    fps: float,
    num_frames: int,
    metric: bool,
    name: str,
) -> Cameras:
    """Validated cameras at every frame 0..num_frames-1 from cameras at the listed frames.

    The key cameras are validated first so a bad source pose is reported with
    its own frame index instead of surfacing as an interpolation error.
    """
    indexes = np.asarray(indexes)
    if indexes.ndim != 1 or not np.issubdtype(indexes.dtype, np.integer):
        raise CameraError(f"{name}: frame indexes must be a 1-D integer array, got {indexes.dtype} {indexes.shape}")
    if not (np.isfinite(fps) and fps > 0):
        raise CameraError(f"{name}: fps must be positive, got {fps}")
    if num_frames < 1:
        raise CameraError(f"{name}: num_frames must be >= 1, got {num_frames}")
    if len(indexes) and (indexes.min() < 0 or indexes.max() >= num_frames):
        raise CameraError(
            f"{name}: frame indexes span [{indexes.min()}, {indexes.max()}], outside the video's {num_frames} frames"
        )
    keys = Cameras(c2w=c2w, K=K, t=indexes / fps, frame_index=indexes, metric=metric)
    keys.validate(f"{name} (source frames)")
    frame_index = np.arange(num_frames)
    c2w_dense, K_dense = interpolate_cameras(keys.c2w, keys.K, keys.frame_index, frame_index)
    return Cameras(c2w=c2w_dense, K=K_dense, t=frame_index / fps, frame_index=frame_index, metric=metric).validate(name)


def _at_frames(cams: Cameras, indexes: np.ndarray, name: str) -> Cameras:
    """The cameras of the frames whose ``frame_index`` is listed, in the listed order."""
    indexes = np.asarray(indexes, dtype=np.int64).reshape(-1)
    pos = np.searchsorted(cams.frame_index, indexes).clip(0, max(len(cams) - 1, 0))
    missing = indexes[cams.frame_index[pos] != indexes] if len(cams) else indexes
    if len(missing):
        raise CameraError(f"{name}: cameras have no frames {missing[:8].tolist()}")
    return Cameras(c2w=cams.c2w[pos], K=cams.K[pos], t=cams.t[pos], frame_index=indexes, metric=cams.metric)


# ---------------------------------------------------------------------------
# SpatialVID
# ---------------------------------------------------------------------------


def from_spatialvid(
    poses: np.ndarray,
    intrinsics: np.ndarray,
    indexes: np.ndarray,
    width: int,
    height: int,
    fps: float,
    num_frames: int,
    name: str = "spatialvid",
) -> Cameras:
    """Cameras of one SpatialVID clip, at every video frame.

    SpatialVID stores MegaSaM/DROID-SLAM trajectories: ``poses.npy`` rows are
    lietorch SE3 vectors ``[tx, ty, tz, qx, qy, qz, qw]`` of the
    **world-to-camera** transform (OpenCV axes). Upstream confirms both facts:
    SpatialVID ``utils/c2w.py`` reads the rows as w2c with the quaternion in
    (i, j, k, r) order and inverts them to get c2w, and
    ``camera_tracking.py`` computes ``cam_c2w = SE3(poses).inv()``.
    ``intrinsics.npy`` rows are ``[fx/W, fy/H, cx/W, cy/H]``
    (``utils/normalize_intrinsics.py``).

    Args:
        poses: (N, 7) w2c ``[tx, ty, tz, qx, qy, qz, qw]``.
        intrinsics: (N, 4) normalized ``fx, fy, cx, cy``.
        indexes: (N,) int frame indexes the rows belong to (``indexes.txt``).
        width, height: size in pixels of the video frames.
        fps: frame rate of the video; ``t = frame_index / fps``.
        num_frames: frame count of the video; poses between listed frames are
            interpolated, frames outside them hold the end pose.
        name: item named in errors (e.g. the clip id).

    Returns:
        Validated, non-metric :class:`Cameras` with ``num_frames`` frames.
    """
    poses = np.asarray(poses, dtype=np.float64)
    n = len(np.atleast_1d(indexes))
    _check_shapes(name, poses=(poses, (n, 7)), intrinsics=(intrinsics, (n, 4)))
    w2c = _rigid(quat_to_matrix(poses[:, 3:], "xyzw", name=f"{name} poses"), poses[:, :3])
    K = intrinsics_from_normalized(intrinsics, width, height)
    return _dense_cameras(invert_rigid(w2c), K, indexes, fps, num_frames, metric=False, name=name)


def to_spatialvid(
    cams: Cameras, indexes: np.ndarray, width: int, height: int, name: str = "spatialvid"
) -> tuple[np.ndarray, np.ndarray]:
    """SpatialVID ``poses`` (N, 7) w2c ``[t, qxyzw]`` and normalized ``intrinsics`` (N, 4) at the listed frames."""
    sel = _at_frames(cams, indexes, name)
    w2c = invert_rigid(sel.c2w)
    poses = np.concatenate([w2c[:, :3, 3], matrix_to_quat(w2c[:, :3, :3], "xyzw")], axis=1)
    return poses, intrinsics_to_normalized(sel.K, width, height)


# ---------------------------------------------------------------------------
# Sekai (game clips)
# ---------------------------------------------------------------------------


def from_sekai_game(
    c2w: np.ndarray,
    intrinsics: np.ndarray,
    indexes: np.ndarray,
    width: int,
    height: int,
    fps: float,
    num_frames: int,
    name: str = "sekai_game",
) -> Cameras:
    """Cameras of one Sekai game clip, at every video frame.

    Args:
        c2w: (N, 4, 4) or (N, 3, 4) camera-to-world, OpenCV axes, game units
            (not metric).
        intrinsics: (N, 4) normalized ``[fx/W, fy/H, cx/W, cy/H]``.
        indexes: (N,) int frame indexes the rows belong to.
        width, height: size in pixels of the video frames.
        fps, num_frames: frame rate and frame count of the video.
        name: item named in errors.

    Returns:
        Validated, non-metric :class:`Cameras` with ``num_frames`` frames.
    """
    n = len(np.atleast_1d(indexes))
    c2w = _homogeneous(c2w, f"{name}: c2w")
    _check_shapes(name, c2w=(c2w, (n, 4, 4)), intrinsics=(intrinsics, (n, 4)))
    K = intrinsics_from_normalized(intrinsics, width, height)
    return _dense_cameras(c2w, K, indexes, fps, num_frames, metric=False, name=name)


def to_sekai_game(
    cams: Cameras, indexes: np.ndarray, width: int, height: int, name: str = "sekai_game"
) -> tuple[np.ndarray, np.ndarray]:
    """Sekai game ``c2w`` (N, 4, 4) OpenCV and normalized ``intrinsics`` (N, 4) at the listed frames."""
    sel = _at_frames(cams, indexes, name)
    return sel.c2w.copy(), intrinsics_to_normalized(sel.K, width, height)


# ---------------------------------------------------------------------------
# OmniWorld
# ---------------------------------------------------------------------------


def from_omniworld(
    quat_wxyz: np.ndarray,
    trans: np.ndarray,
    K: np.ndarray,
    indexes: np.ndarray,
    fps: float,
    num_frames: int,
    metric: bool = True,
    name: str = "omniworld",
) -> Cameras:
    """Cameras of one OmniWorld split, at every video frame.

    OmniWorld's ``camera/split_{i}.json`` holds ``quats`` (w, x, y, z),
    ``trans``, ``focals``, ``cx``, ``cy``; upstream ``scripts/utils.py::
    load_camera_poses`` builds from them "OpenCV world-to-camera matrices"
    ``[R(q) | trans]`` and pixel K ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]``,
    for the frames ``split_info.json["split"][i]``.

    Args:
        quat_wxyz: (N, 4) w2c rotation quaternions, scalar first.
        trans: (N, 3) w2c translations.
        K: (N, 3, 3) or (3, 3) intrinsics in pixels of the video frames.
        indexes: (N,) int frame indexes into the clip's video (subtract the
            clip's first frame when the split counts from the scene start).
        fps, num_frames: frame rate and frame count of the video.
        metric: whether translations are metres.
        name: item named in errors.

    Returns:
        Validated :class:`Cameras` with ``num_frames`` frames.
    """
    n = len(np.atleast_1d(indexes))
    _check_shapes(name, quat_wxyz=(quat_wxyz, (n, 4)), trans=(trans, (n, 3)))
    w2c = _rigid(quat_to_matrix(quat_wxyz, "wxyz", name=f"{name} quats"), np.asarray(trans, dtype=np.float64))
    return _dense_cameras(invert_rigid(w2c), _broadcast_K(K, n, name), indexes, fps, num_frames, metric, name)


def to_omniworld(
    cams: Cameras, indexes: np.ndarray, name: str = "omniworld"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OmniWorld w2c ``quat_wxyz`` (N, 4), ``trans`` (N, 3) and pixel ``K`` (N, 3, 3) at the listed frames."""
    sel = _at_frames(cams, indexes, name)
    w2c = invert_rigid(sel.c2w)
    return matrix_to_quat(w2c[:, :3, :3], "wxyz"), w2c[:, :3, 3].copy(), sel.K.copy()


# ---------------------------------------------------------------------------
# COLMAP
# ---------------------------------------------------------------------------


def from_colmap(
    qvec_wxyz: np.ndarray, tvec: np.ndarray, K: np.ndarray, fps: float = 30.0, name: str = "colmap"
) -> Cameras:
    """Cameras from COLMAP image poses, one frame per row in the given order.

    COLMAP ``images.txt`` stores world-to-camera ``QW QX QY QZ TX TY TZ`` with
    OpenCV camera axes (https://colmap.github.io/format.html).

    Args:
        qvec_wxyz: (N, 4) w2c rotation quaternions, scalar first.
        tvec: (N, 3) w2c translations.
        K: (N, 3, 3) or (3, 3) intrinsics in pixels.
        fps: frame rate; ``frame_index = arange(N)``, ``t = frame_index / fps``.
        name: item named in errors.

    Returns:
        Validated, non-metric :class:`Cameras` with N frames.
    """
    n = len(np.atleast_2d(qvec_wxyz))
    _check_shapes(name, qvec_wxyz=(qvec_wxyz, (n, 4)), tvec=(tvec, (n, 3)))
    w2c = _rigid(quat_to_matrix(qvec_wxyz, "wxyz", name=f"{name} qvec"), np.asarray(tvec, dtype=np.float64))
    return _dense_cameras(invert_rigid(w2c), _broadcast_K(K, n, name), np.arange(n), fps, n, False, name)


def to_colmap(cams: Cameras) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COLMAP w2c ``qvec`` (N, 4) wxyz, ``tvec`` (N, 3) and pixel ``K`` (N, 3, 3), one row per frame."""
    w2c = invert_rigid(cams.c2w)
    return matrix_to_quat(w2c[:, :3, :3], "wxyz"), w2c[:, :3, 3].copy(), cams.K.copy()


# ---------------------------------------------------------------------------
# nerfstudio transforms.json (DL3DV)
# ---------------------------------------------------------------------------

_NERFSTUDIO_DISTORTION = ("k1", "k2", "p1", "p2")


def _nerfstudio_frames(transforms: dict, name: str) -> list[dict]:
    """The frames of a transforms.json dict sorted by ``file_path``, as nerfstudio's dataparser orders them."""
    frames = transforms.get("frames") if isinstance(transforms, dict) else None
    if not frames:
        raise CameraError(f"{name}: no 'frames' list")
    for i, frame in enumerate(frames):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise CameraError(f"{name}: frame {i} lacks 'file_path' or 'transform_matrix'")
    return sorted(frames, key=lambda f: str(f["file_path"]))


def _nerfstudio_value(frame: dict, transforms: dict, key: str, name: str, default: float | None = None) -> float:
    """A camera field from the frame, else from the top level (per-frame wins), else ``default``."""
    value = frame.get(key, transforms.get(key, default))
    if value is None:
        raise CameraError(f"{name}: frame {frame['file_path']!r} has no '{key}' (neither per frame nor top level)")
    return float(value)


def _nerfstudio_applied(transforms: dict, name: str) -> np.ndarray:
    """(4, 4) ``applied_transform`` (identity when absent)."""
    if "applied_transform" not in transforms:
        return np.eye(4)
    A = np.asarray(transforms["applied_transform"], dtype=np.float64)
    if A.shape != (3, 4):
        raise CameraError(f"{name}: applied_transform has shape {A.shape}, expected (3, 4)")
    return _homogeneous(A, f"{name}: applied_transform")


def from_nerfstudio(transforms: dict, fps: float = 30.0, name: str = "transforms.json") -> Cameras:
    """Cameras from a nerfstudio ``transforms.json`` dict (DL3DV), one frame per entry.

    - Frames are sorted by ``file_path`` (nerfstudio's dataparser does the
      same), then ``frame_index = arange(T)``, ``t = frame_index / fps``.
    - ``transform_matrix`` is camera-to-world with OpenGL camera axes.
    - ``applied_transform`` (3, 4), when present, was applied by nerfstudio's
      ``colmap_to_json`` to every pose: ``c2w_file = A @ c2w_colmap`` (A made
      4x4; by default it swaps world y/z and negates the new z). It is undone
      here so the poses are in the original COLMAP world.
    - Intrinsics ``fl_x, fl_y, cx, cy`` come per frame or from the top level
      (per frame wins); ``k1, k2, p1, p2`` (OPENCV distortion) are not part of
      the pinhole K: read them with :func:`nerfstudio_distortion`.

    Returns:
        Validated, non-metric :class:`Cameras`.
    """
    frames = _nerfstudio_frames(transforms, name)
    c2w_file = np.stack([_homogeneous(f["transform_matrix"], f"{name}: {f['file_path']}") for f in frames])
    A = _nerfstudio_applied(transforms, name)
    try:
        A_inv = np.linalg.inv(A)
    except np.linalg.LinAlgError as err:
        raise CameraError(f"{name}: applied_transform is singular") from err
    K = np.zeros((len(frames), 3, 3))
    for i, frame in enumerate(frames):
        K[i, 0, 0] = _nerfstudio_value(frame, transforms, "fl_x", name)
        K[i, 1, 1] = _nerfstudio_value(frame, transforms, "fl_y", name)
        K[i, 0, 2] = _nerfstudio_value(frame, transforms, "cx", name)
        K[i, 1, 2] = _nerfstudio_value(frame, transforms, "cy", name)
        K[i, 2, 2] = 1.0
    c2w = opengl_to_opencv(A_inv @ c2w_file)
    n = len(frames)
    return _dense_cameras(c2w, K, np.arange(n), fps, n, False, name)


def nerfstudio_distortion(transforms: dict, name: str = "transforms.json") -> np.ndarray:
    """(T, 4) OPENCV distortion ``[k1, k2, p1, p2]`` per frame, in :func:`from_nerfstudio` order (absent = 0)."""
    frames = _nerfstudio_frames(transforms, name)
    return np.array(
        [[_nerfstudio_value(f, transforms, k, name, default=0.0) for k in _NERFSTUDIO_DISTORTION] for f in frames]
    )


def to_nerfstudio(
    cams: Cameras,
    width: int,
    height: int,
    applied_transform: np.ndarray | None = None,
    file_paths: list[str] | None = None,
    distortion: np.ndarray | None = None,
) -> dict:
    """A nerfstudio ``transforms.json`` dict for ``cams`` (inverse of :func:`from_nerfstudio`).

    Args:
        cams: cameras, one frame per written entry.
        width, height: image size ``w``, ``h`` in pixels (top level).
        applied_transform: optional (3, 4) transform applied to the poses
            (``c2w_file = A @ c2w``) and recorded, as ``colmap_to_json`` does.
        file_paths: image paths, one per frame; they must sort in frame order
            because readers sort frames by path. Default ``images/frame_{i+1:05d}.png``.
        distortion: optional (T, 4) ``[k1, k2, p1, p2]``; written per frame with
            ``camera_model`` OPENCV (PINHOLE without it).

    Returns:
        A JSON-serialisable dict; intrinsics are written per frame.
    """
    T = len(cams)
    _check_size(width, height)
    paths = list(file_paths) if file_paths is not None else [f"images/frame_{i + 1:05d}.png" for i in range(T)]
    if len(paths) != T or any(a >= b for a, b in zip(paths, paths[1:])):
        raise CameraError(f"to_nerfstudio: file_paths must be {T} strictly increasing paths (readers sort by path)")
    if distortion is not None:
        distortion = np.asarray(distortion, dtype=np.float64)
        if distortion.shape != (T, 4):
            raise CameraError(f"to_nerfstudio: distortion has shape {distortion.shape}, expected ({T}, 4)")
    out: dict = {"w": int(width), "h": int(height), "camera_model": "PINHOLE" if distortion is None else "OPENCV"}
    A = np.eye(4)
    if applied_transform is not None:
        A = _nerfstudio_applied({"applied_transform": applied_transform}, "to_nerfstudio")
        out["applied_transform"] = A[:3].tolist()
    c2w_file = A @ opencv_to_opengl(cams.c2w)
    frames = []
    for i in range(T):
        frame = {
            "file_path": paths[i],
            "transform_matrix": c2w_file[i].tolist(),
            "fl_x": float(cams.K[i, 0, 0]),
            "fl_y": float(cams.K[i, 1, 1]),
            "cx": float(cams.K[i, 0, 2]),
            "cy": float(cams.K[i, 1, 2]),
        }
        if distortion is not None:
            frame.update(zip(_NERFSTUDIO_DISTORTION, distortion[i].tolist()))
        frames.append(frame)
    out["frames"] = frames
    return out
