"""Test instruments: backends that derive predictions from ground truth with controlled errors.

They let fusion and bundle adjustment be tested against known truth: every
error a real network makes is injected on purpose, seeded and sized by an
option. They read the ground truth of a clip from ``gt_root/<clip_id>/``::

    cameras.npz   wmkit Cameras (metric, OpenCV c2w, K in pixels), one row per frame
    depth.npz     depth (T, H, W) float32 metres along camera z, valid (T, H, W) bool

(the layout ``annotate/synthetic_scenes.py`` writes). The frames handed to
``predict`` only set the shape: T must equal the ground truth's frame count; a
different H x W rescales K and resamples depth (nearest) to the frames' size.

``perturbed`` plays the geometry network (Pi3X role), up to scale::

    s_0          ~ log-uniform(scale_range)               unknown global scale
    log s_t      = log s_{t-1} + N(0, scale_drift)         per-frame scale drift (random walk)
    centre_t     = centre_{t-1} + s_t (gt_centre_t - gt_centre_{t-1}),  centre_0 = s_0 gt_centre_0
    c2w_t        = [R_noise_t gt_R_t | centre_t + N(0, trans_noise_rel * median GT depth * s_t)]
    depth_t      = s_t * gt_depth_t * (1 + N(0, depth_noise_rel)), outliers replaced (see below)
    fx_t, fy_t   = gt * (1 + focal_bias_rel) * (1 + N(0, focal_noise_rel))   (cx, cy exact)

so depth and camera motion share the scale s_t at each frame (as a windowed
network's local reconstruction does), and with ``scale_drift = 0`` the c2w is
exactly ``s_0`` times the ground-truth trajectory plus noise.

``perturbed_metric`` plays the monocular metric-depth network (MoGe-2 role):
depth in metres (times ``1 + scale_bias_rel``) with the same depth noise and
outliers, per-frame K with bias and noise, and ``c2w = None``.

Outliers: a ``outlier_fraction`` of the valid pixels get their depth multiplied
by a log-uniform factor in [1/3, 3] and a confidence in [0, 0.3]; other valid
pixels get a confidence in [0.7, 1]; invalid ground-truth pixels get depth 0
and confidence 0. ``nan_fraction`` writes NaN into that share of depth pixels
(for the clips in ``nan_clip_ids``, or every clip when it is empty) so pipeline
tests can exercise a backend that returns NaN; ``Prediction.validate`` rejects it.

Randomness is seeded by (``seed``, backend name, clip id), so a clip gets the
same prediction in every run and on every worker.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.spatial.transform import Rotation

from wmkit.annotate.backends.registry import register_backend
from wmkit.annotate.types import AnnotateError, Prediction
from wmkit.datasets.cameras import CameraError, Cameras

__all__ = ["GroundTruth", "load_ground_truth", "PerturbedBackend", "PerturbedMetricBackend"]

_OUTLIER_FACTOR_RANGE = (1.0 / 3.0, 3.0)  # multiplicative depth error of an outlier pixel
_OUTLIER_CONF_RANGE = (0.0, 0.3)
_INLIER_CONF_RANGE = (0.7, 1.0)


@dataclass(frozen=True)
class GroundTruth:
    """Exact geometry of one clip at the size of the frames handed to ``predict``."""

    c2w: np.ndarray  # (T, 4, 4) float64, metres, OpenCV axes
    K: np.ndarray  # (T, 3, 3) float64, pixels
    depth: np.ndarray  # (T, H, W) float32 metres, 0 where invalid
    valid: np.ndarray  # (T, H, W) bool


def load_ground_truth(gt_root: Path, clip_id: str, num_frames: int, hw: tuple[int, int]) -> GroundTruth:
    """Read ``gt_root/<clip_id>/{cameras,depth}.npz`` and bring it to ``hw = (H, W)``.

    Raises AnnotateError naming the clip when the folder or a file is missing or
    malformed, or when the frame count differs from ``num_frames``.
    """
    gt_dir = Path(gt_root) / clip_id
    where = f"clip {clip_id!r}: ground truth {gt_dir}"
    if not gt_dir.is_dir():
        raise AnnotateError(f"{where}: folder missing")
    try:
        cams = Cameras.load(str(gt_dir / "cameras.npz")).validate(f"{where}/cameras.npz")
        with np.load(gt_dir / "depth.npz", allow_pickle=False) as z:
            depth, valid = z["depth"].astype(np.float32), z["valid"].astype(bool)
    except (OSError, KeyError, ValueError, CameraError) as err:
        raise AnnotateError(f"{where}: unreadable ({err})") from err
    T = len(cams)
    if depth.ndim != 3 or len(depth) != T or valid.shape != depth.shape:
        raise AnnotateError(f"{where}: depth {depth.shape} / valid {valid.shape} do not match {T} cameras")
    if T != num_frames:
        raise AnnotateError(f"{where}: {T} ground-truth frames but {num_frames} frames given")
    valid = valid & np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    H, W = hw
    K = cams.K.copy()
    if depth.shape[1:] != (H, W):
        # K is in pixel units whose origin is the image corner, so it scales with the size.
        sy, sx = H / depth.shape[1], W / depth.shape[2]
        K[:, 0] *= sx
        K[:, 1] *= sy
        rows = np.floor((np.arange(H) + 0.5) / sy).astype(np.int64)  # nearest source pixel centre
        cols = np.floor((np.arange(W) + 0.5) / sx).astype(np.int64)
        depth, valid = depth[:, rows][:, :, cols], valid[:, rows][:, :, cols]
    return GroundTruth(c2w=cams.c2w, K=K, depth=depth, valid=valid)


@dataclass(frozen=True)
class _PerturbedBase:
    """Options shared by both perturbed backends (relative sizes are fractions, 0.01 = 1 %)."""

    gt_root: Path  # folder holding one ground-truth folder per clip id
    seed: int = 0  # combined with the backend name and clip id
    depth_noise_rel: float = 0.02  # std of the per-pixel multiplicative depth noise
    outlier_fraction: float = 0.02  # share of valid pixels whose depth is off by x1/3..x3, low conf
    focal_bias_rel: float = 0.05  # systematic relative error of fx and fy
    focal_noise_rel: float = 0.01  # std of the per-frame relative error of fx and fy
    nan_fraction: float = 0.0  # share of depth pixels set to NaN (failure injection)
    nan_clip_ids: tuple[str, ...] = ()  # clips that get NaN; empty = every clip

    def __post_init__(self) -> None:
        object.__setattr__(self, "gt_root", Path(self.gt_root))
        object.__setattr__(self, "nan_clip_ids", tuple(self.nan_clip_ids))
        for field in ("depth_noise_rel", "focal_noise_rel"):
            if getattr(self, field) < 0:
                raise ValueError(f"{type(self).__name__}: {field} must be >= 0, got {getattr(self, field)}")
        for field in ("outlier_fraction", "nan_fraction"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{type(self).__name__}: {field} must be in [0, 1], got {getattr(self, field)}")
        if self.focal_bias_rel <= -1.0:
            raise ValueError(f"{type(self).__name__}: focal_bias_rel must be > -1, got {self.focal_bias_rel}")

    def setup(self) -> None:
        """Nothing to load: the ground truth is read per clip."""

    def _rng(self, clip_id: str) -> np.random.Generator:
        """Generator seeded by (seed, backend name, clip id): stable across runs and workers."""
        name = getattr(self, "name")
        return np.random.default_rng([self.seed, zlib.crc32(name.encode()), zlib.crc32(clip_id.encode())])

    def _perturb_K(self, K: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(T, 3, 3) K with fx, fy scaled by the bias and a per-frame factor (cx, cy exact)."""
        factor = (1.0 + self.focal_bias_rel) * (1.0 + rng.normal(0.0, self.focal_noise_rel, len(K)))
        out = K.copy()
        out[:, 0, 0] *= factor
        out[:, 1, 1] *= factor
        return out

    def _perturb_depth(
        self, depth: np.ndarray, valid: np.ndarray, rng: np.random.Generator, clip_id: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Noisy depth and conf (T, H, W) float32 from true depth (already scaled) and its valid mask."""
        noise = np.clip(1.0 + rng.normal(0.0, self.depth_noise_rel, depth.shape), 0.05, None)
        outlier = valid & (rng.random(depth.shape) < self.outlier_fraction)
        log_lo, log_hi = np.log(_OUTLIER_FACTOR_RANGE)
        noise[outlier] = np.exp(rng.uniform(log_lo, log_hi, int(outlier.sum())))
        conf = rng.uniform(*_INLIER_CONF_RANGE, depth.shape)
        conf[outlier] = rng.uniform(*_OUTLIER_CONF_RANGE, int(outlier.sum()))
        out = np.where(valid, depth * noise, 0.0).astype(np.float32)
        conf = np.where(valid, conf, 0.0).astype(np.float32)
        if self.nan_fraction > 0 and (not self.nan_clip_ids or clip_id in self.nan_clip_ids):
            out[rng.random(depth.shape) < self.nan_fraction] = np.nan
        return out, conf


@register_backend("perturbed")
@dataclass(frozen=True)
class PerturbedBackend(_PerturbedBase):
    """Geometry-role test instrument: up-to-scale c2w and depth from ground truth (module docstring)."""

    name: ClassVar[str] = "perturbed"
    scale_range: tuple[float, float] = (0.25, 4.0)  # the unknown global scale s_0 is log-uniform in it
    scale_drift: float = 0.005  # std of the per-frame step of log-scale (random walk)
    rot_noise_deg: float = 0.3  # std in degrees of each rotation-vector component of the pose noise
    trans_noise_rel: float = 0.005  # std of the centre noise as a fraction of the clip's median GT depth
    rebase_to_first: bool = True  # express poses relative to the first camera, as feed-forward networks do

    def __post_init__(self) -> None:
        super().__post_init__()
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"PerturbedBackend: scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        for field in ("scale_drift", "rot_noise_deg", "trans_noise_rel"):
            if getattr(self, field) < 0:
                raise ValueError(f"PerturbedBackend: {field} must be >= 0, got {getattr(self, field)}")

    def scales(self, clip_id: str, num_frames: int) -> np.ndarray:
        """(T,) the per-frame scale s_t this backend applies to ``clip_id`` (metres -> its units)."""
        return self._scales(self._rng(clip_id), num_frames)

    def _scales(self, rng: np.random.Generator, num_frames: int) -> np.ndarray:
        """(T,) s_t: the first draws of the clip's generator, so :meth:`scales` reproduces them."""
        log_lo, log_hi = np.log(self.scale_range)
        steps = rng.normal(0.0, self.scale_drift, num_frames)
        steps[0] = rng.uniform(log_lo, log_hi)
        return np.exp(np.cumsum(steps))

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        """Up-to-scale prediction for ``frames`` uint8 (T, H, W, 3) from the clip's ground truth."""
        T, H, W = _frame_shape(frames, clip_id, self.name)
        gt = load_ground_truth(self.gt_root, clip_id, T, (H, W))
        rng = self._rng(clip_id)
        s = self._scales(rng, T)
        c2w = gt.c2w
        if self.rebase_to_first:
            c2w = np.linalg.inv(c2w[0]) @ c2w
        centres = np.cumsum(np.concatenate([c2w[:1, :3, 3], np.diff(c2w[:, :3, 3], axis=0)]) * s[:, None], axis=0)
        scene_m = float(np.median(gt.depth[gt.valid])) if gt.valid.any() else 1.0
        centres += rng.normal(0.0, self.trans_noise_rel * scene_m, (T, 3)) * s[:, None]
        R_noise = Rotation.from_rotvec(np.deg2rad(rng.normal(0.0, self.rot_noise_deg, (T, 3)))).as_matrix()
        out = np.tile(np.eye(4), (T, 1, 1))
        out[:, :3, :3] = R_noise @ c2w[:, :3, :3]
        out[:, :3, 3] = centres
        depth, conf = self._perturb_depth(gt.depth * s[:, None, None].astype(np.float32), gt.valid, rng, clip_id)
        K = self._perturb_K(gt.K, rng)
        return Prediction(depth=depth, conf=conf, c2w=out, K=K, metric=False, backend=self.name)


@register_backend("perturbed_metric")
@dataclass(frozen=True)
class PerturbedMetricBackend(_PerturbedBase):
    """Metric-depth-role test instrument: metric depth and per-frame K, no poses (module docstring)."""

    name: ClassVar[str] = "perturbed_metric"
    scale_bias_rel: float = 0.0  # systematic relative error of the metric depth (0.03 = 3 % too far)
    focal_bias_rel: float = -0.03  # a different default bias than the geometry role
    focal_noise_rel: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_bias_rel <= -1.0:
            raise ValueError(f"PerturbedMetricBackend: scale_bias_rel must be > -1, got {self.scale_bias_rel}")

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        """Metric depth and per-frame K for ``frames`` uint8 (T, H, W, 3) from the clip's ground truth."""
        T, H, W = _frame_shape(frames, clip_id, self.name)
        gt = load_ground_truth(self.gt_root, clip_id, T, (H, W))
        rng = self._rng(clip_id)
        depth, conf = self._perturb_depth(gt.depth * np.float32(1.0 + self.scale_bias_rel), gt.valid, rng, clip_id)
        K = self._perturb_K(gt.K, rng)
        return Prediction(depth=depth, conf=conf, c2w=None, K=K, metric=True, backend=self.name)


def _frame_shape(frames: np.ndarray, clip_id: str, backend: str) -> tuple[int, int, int]:
    """(T, H, W) of uint8 RGB frames (T, H, W, 3); AnnotateError naming the clip otherwise."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise AnnotateError(f"clip {clip_id!r}: backend {backend!r}: frames must be (T, H, W, 3), got {frames.shape}")
    return frames.shape[0], frames.shape[1], frames.shape[2]
