"""Per-clip quality measures of an annotation and the thresholds that accept or reject it (DESIGN §4).

Measures and policy are kept apart: :func:`quality_metrics` only measures;
:func:`quality_failures` compares the measures with :class:`QualityThresholds`
and returns the reasons a clip fails (empty when it passes). Every measure
lands in the sample's json (``quality``), whether the clip passed or not.

Measures (units in the names):

- ``reproj_error_px``: the bundle adjustment's robust reprojection error.
- ``residual_median_px``: median reprojection residual of every track
  observation, recomputed here from the BA cameras and points.
- ``dynamic_fraction``: share of reconstructed track observations whose residual exceeds
  ``dynamic_px`` (8 px: several times the Huber width, so it counts features
  that move against the static scene — people, cars, bad matches — rather
  than noise).
- ``scale_confidence``: the fusion's confidence in the metric scale, [0, 1].
- ``motion_translation_m``: farthest camera centre from the first one (metres).
- ``motion_path_m``: path length of the camera centres (metres; includes pose noise).
- ``motion_rotation_deg``: largest rotation of any frame from the first one.
- ``invalid_pixel_fraction``: share of depth pixels that are non-finite,
  non-positive or below ``min_conf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

if TYPE_CHECKING:
    from wmkit.annotate.bundle_adjust import BAResult
    from wmkit.annotate.fusion import FusedGeometry
    from wmkit.annotate.tracks import Tracks

__all__ = ["QualityThresholds", "quality_metrics", "quality_failures", "reprojection_residuals"]

_DYNAMIC_PX = 8.0  # residual above which an observation counts as off the static scene


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a clip's annotation must meet to be published (see :func:`quality_failures`)."""

    max_reproj_error_px: float = 3.0  # BA robust reprojection error
    min_scale_confidence: float = 0.3  # fusion's metric-scale confidence
    min_motion_m: float = 0.0  # a clip is static if it moves less than this ...
    max_invalid_fraction: float = 0.5  # share of depth pixels without a usable value
    min_motion_deg: float = 0.0  # ... and turns less than this
    max_dynamic_fraction: float = 1.0  # share of track observations off the static scene (1.0 = off)

    def __post_init__(self) -> None:
        for name in ("max_reproj_error_px", "min_motion_m", "min_motion_deg"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"QualityThresholds.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_scale_confidence", "max_invalid_fraction", "max_dynamic_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"QualityThresholds.{name} must be in [0, 1], got {getattr(self, name)}")


def reprojection_residuals(c2w: np.ndarray, K: np.ndarray, points: np.ndarray, tracks: "Tracks") -> np.ndarray:
    """Pixel distance between each track observation and its point projected by its frame's camera.

    Args:
        c2w: (T, 4, 4) camera-to-world, OpenCV axes.
        K: (T, 3, 3) intrinsics in pixels.
        points: (P, 3) world points, indexed by ``tracks.point``; NaN rows for points the BA did not reconstruct.
        tracks: observations ``frame`` (N,), ``point`` (N,), ``uv`` (N, 2) pixels.

    Returns:
        (N,) float64 residuals in pixels; NaN for unreconstructed points, ``inf`` behind the camera.
    """
    w2c = np.linalg.inv(c2w)[tracks.frame]  # (N, 4, 4)
    cam = np.einsum("nij,nj->ni", w2c[:, :3, :3], points[tracks.point]) + w2c[:, :3, 3]
    pix = np.einsum("nij,nj->ni", K[tracks.frame], cam)
    with np.errstate(divide="ignore", invalid="ignore"):
        res = np.linalg.norm(pix[:, :2] / pix[:, 2:3] - tracks.uv, axis=1)
    return np.where(cam[:, 2] > 1e-9, res, np.where(np.isnan(cam[:, 2]), np.nan, np.inf))


def _motion(c2w: np.ndarray) -> tuple[float, float, float]:
    """(farthest camera centre from frame 0, path length of the centres, largest rotation from frame 0 in degrees).

    The farthest distance, not the path length, decides whether a clip is
    static: the path length sums per-frame pose noise and grows on a tripod.
    """
    centres = c2w[:, :3, 3]
    extent = float(np.linalg.norm(centres - centres[0], axis=1).max())
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    relative = np.swapaxes(c2w[:1, :3, :3], 1, 2) @ c2w[:, :3, :3]
    angle = float(np.degrees(Rotation.from_matrix(relative).magnitude()).max())
    return extent, path, angle


def quality_metrics(
    result: "BAResult", fused: "FusedGeometry", tracks: "Tracks", *, min_conf: float = 0.2, dynamic_px: float = _DYNAMIC_PX
) -> dict[str, float]:
    """Measure one clip's annotation (module docstring for each key); plain floats, JSON-ready.

    Args:
        result: the bundle adjustment of the clip (metric ``c2w`` (T, 4, 4), ``K`` (T, 3, 3), ``points`` (P, 3)).
        fused: the fused geometry (``depth``/``conf`` (T, H, W), ``scale_confidence``).
        tracks: the keypoint tracks the BA used.
        min_conf: depth confidence below which a pixel counts as invalid (the fusion's ``min_conf``).
        dynamic_px: residual in pixels above which an observation counts as dynamic.
    """
    residuals = reprojection_residuals(result.c2w, result.K, result.points, tracks)
    translation_m, path_m, rotation_deg = _motion(result.c2w)
    depth, conf = fused.depth, fused.conf
    invalid = ~np.isfinite(depth) | (depth <= 0) | (conf < min_conf)
    reconstructed = residuals[~np.isnan(residuals)]
    finite = reconstructed[np.isfinite(reconstructed)]
    return {
        "reproj_error_px": float(result.reproj_error_px),
        "residual_median_px": float(np.median(finite)) if finite.size else float("nan"),
        "dynamic_fraction": float((reconstructed > dynamic_px).mean()) if reconstructed.size else 0.0,
        "scale_confidence": float(fused.scale_confidence),
        "motion_translation_m": translation_m,
        "motion_path_m": path_m,
        "motion_rotation_deg": rotation_deg,
        "invalid_pixel_fraction": float(invalid.mean()),
        "num_tracks": int(tracks.num_points),
        "num_observations": int(reconstructed.size),
    }


def quality_failures(metrics: dict[str, float], thresholds: QualityThresholds) -> list[str]:
    """Reasons ``metrics`` break ``thresholds`` (empty list: the clip passes).

    A clip is static only when it neither moves ``min_motion_m`` nor turns
    ``min_motion_deg``: a pan on a tripod teaches camera rotation and is kept.
    """
    t = thresholds
    reasons = []
    if not metrics["reproj_error_px"] <= t.max_reproj_error_px:  # NaN fails too
        reasons.append(f"reprojection error {metrics['reproj_error_px']:.2f} px > {t.max_reproj_error_px} px")
    if not metrics["scale_confidence"] >= t.min_scale_confidence:
        reasons.append(f"scale confidence {metrics['scale_confidence']:.2f} < {t.min_scale_confidence}")
    if metrics["motion_translation_m"] < t.min_motion_m and metrics["motion_rotation_deg"] < t.min_motion_deg:
        reasons.append(
            f"static camera: moved {metrics['motion_translation_m']:.3f} m < {t.min_motion_m} m and "
            f"turned {metrics['motion_rotation_deg']:.2f} deg < {t.min_motion_deg} deg"
        )
    if not metrics["invalid_pixel_fraction"] <= t.max_invalid_fraction:
        reasons.append(f"invalid depth pixels {metrics['invalid_pixel_fraction']:.2f} > {t.max_invalid_fraction}")
    if not metrics["dynamic_fraction"] <= t.max_dynamic_fraction:
        reasons.append(f"dynamic observations {metrics['dynamic_fraction']:.2f} > {t.max_dynamic_fraction}")
    return reasons
