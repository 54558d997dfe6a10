"""Depth fusion (DESIGN §4): put the up-to-scale geometry prediction into metres.

The geometry backend (Pi3X-like) gives multi-view consistent depth and poses
up to one unknown scale; the metric backend (MoGe-like) gives per-frame metric
depth that is noisier and not consistent across frames. Fusion estimates, per
frame t, the scale ``s_t`` with ``s_t * geometry_depth ~ metric_depth``:

1. *robust fit* -- confidence-weighted least squares on pixels where both
   confidences are >= ``min_conf`` and both depths finite and positive,
   ``s = sum(w g m) / sum(w g^2)``; then iteratively trimmed: the ``trim``
   fraction of pixels with the worst log residual ``|log(s g / m)|`` is
   dropped and the scale refit (dynamic objects, sky, depth-edge bleeding).
2. *smoothing* -- ``log s_t`` is smoothed with an EMA of momentum 0.99: the
   metric network's per-frame scale error is mostly independent noise, while a
   true scale change of the geometry backend is slow (window alignment drift),
   so a long memory (~100 frames) averages the noise away.
3. *metric geometry* -- depth_t * s_t, and the trajectory rescaled per frame by
   integrating the geometry backend's camera *steps* with the smoothed scale
   (see :func:`rescale_trajectory`).

``scale_confidence`` in [0, 1] summarises how well the frames agree on the
scale (see :func:`scale_confidence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from wmkit.annotate.types import AnnotateError, Prediction

__all__ = [
    "FusedGeometry",
    "FusionConfig",
    "fuse_depth",
    "frame_scale",
    "smooth_log_scale",
    "rescale_trajectory",
    "scale_confidence",
]

# Relative disagreement of frame scales at which scale_confidence falls to 1/e:
# 5 % is the metric-scale accuracy target of the annotation benchmark.
_SCALE_SPREAD_REF = 0.05


@dataclass(frozen=True)
class FusionConfig:
    """Knobs of :func:`fuse_depth`."""

    momentum: float = 0.99  # EMA momentum on log scale (memory ~ 1 / (1 - momentum) frames)
    trim: float = 0.1  # fraction of worst-residual pixels dropped per refit
    min_conf: float = 0.2  # both backends' confidence must reach this for a pixel to vote
    trim_iterations: int = 3  # refits after trimming; 3 settles for outlier shares up to ~30 %
    intrinsics: Literal["metric", "geometry"] = "metric"  # whose per-frame K the fused geometry keeps

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"FusionConfig.momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.trim < 0.5:
            raise ValueError(f"FusionConfig.trim must be in [0, 0.5), got {self.trim}")
        if not 0.0 <= self.min_conf <= 1.0:
            raise ValueError(f"FusionConfig.min_conf must be in [0, 1], got {self.min_conf}")
        if self.trim_iterations < 0:
            raise ValueError(f"FusionConfig.trim_iterations must be >= 0, got {self.trim_iterations}")
        if self.intrinsics not in ("metric", "geometry"):
            raise ValueError(f"FusionConfig.intrinsics must be 'metric' or 'geometry', got {self.intrinsics!r}")


@dataclass(frozen=True)
class FusedGeometry:
    """Metric geometry of one clip: the input of bundle adjustment."""

    c2w: np.ndarray  # (T, 4, 4) float64, OpenCV axes, metres
    depth: np.ndarray  # (T, H, W) float32 metres; 0 where unknown
    K: np.ndarray  # (T, 3, 3) float64 pixels
    conf: np.ndarray  # (T, H, W) float32 in [0, 1]; 0 where unknown
    scale: np.ndarray  # (T,) float64 smoothed metres per geometry unit
    scale_confidence: float  # in [0, 1]


def frame_scale(
    geometry_depth: np.ndarray, metric_depth: np.ndarray, weight: np.ndarray, trim: float, iterations: int
) -> tuple[float, float]:
    """Robust scale ``s`` with ``s * geometry_depth ~ metric_depth`` over one frame's valid pixels.

    Args:
        geometry_depth, metric_depth: (N,) positive depths of the valid pixels.
        weight: (N,) positive confidence weights.
        trim: fraction of pixels with the largest ``|log(s g / m)|`` dropped before each refit;
            the log residual is symmetric, so a far outlier (sky at 10x) and a near one
            (a hand at 0.1x) count alike, which a residual relative to ``m`` does not.
        iterations: number of trim-and-refit rounds.

    Returns:
        ``(s, spread)``: the scale and the weighted RMS log residual of the kept pixels.
    """
    g, m, w = (np.asarray(a, dtype=np.float64) for a in (geometry_depth, metric_depth, weight))
    keep = np.ones(len(g), dtype=bool)
    s = float(np.sum(w * g * m) / np.sum(w * g * g))
    for _ in range(iterations):
        rel = np.abs(np.log(s * g / m))
        # trim against the full pixel set each round so an early bad fit cannot lose inliers for good
        keep = rel <= np.quantile(rel, 1.0 - trim) if trim > 0 else np.ones(len(g), dtype=bool)
        s = float(np.sum(w[keep] * g[keep] * m[keep]) / np.sum(w[keep] * g[keep] ** 2))
    rel = np.log(s * g[keep] / m[keep])
    spread = float(np.sqrt(np.sum(w[keep] * rel**2) / np.sum(w[keep])))
    return s, spread


def smooth_log_scale(log_scale: np.ndarray, valid: np.ndarray, momentum: float) -> np.ndarray:
    """Causal EMA of per-frame log scales with Adam-style bias correction.

    ``ema_t = momentum * ema_{t-1} + (1 - momentum) * x_t`` from ``ema = 0``,
    divided by ``1 - momentum^n`` (n = frames seen). Why bias correction rather
    than starting the EMA at ``x_0``: seeded with ``x_0`` the first frame keeps
    weight ``0.99^t`` (still 0.6 after 50 frames), so one noisy metric frame
    would set the scale of a whole short clip; corrected, the estimate at the
    start is the plain mean of the frames seen so far and becomes an EMA as the
    clip grows. Frames with no valid pixels (``valid`` False) leave the EMA
    unchanged and take the current estimate.

    Args:
        log_scale: (T,) per-frame log scales (ignored where not valid).
        valid: (T,) bool, at least one True.
        momentum: in [0, 1).

    Returns:
        (T,) smoothed log scales; frames before the first valid one take its value.
    """
    out = np.empty(len(log_scale), dtype=np.float64)
    ema, norm = 0.0, 0.0
    for t, (x, ok) in enumerate(zip(log_scale, valid)):
        if ok:
            ema = momentum * ema + (1.0 - momentum) * float(x)
            norm = momentum * norm + (1.0 - momentum)
        out[t] = ema / norm if norm > 0 else np.nan
    first = int(np.flatnonzero(valid)[0])
    out[:first] = out[first]
    return out


def rescale_trajectory(c2w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Metric camera-to-world poses from up-to-scale ones and per-frame scales.

    Positions are rebuilt from the *steps* between consecutive cameras,
    ``p'_0 = s_0 p_0``, ``p'_t = p'_{t-1} + s_t (p_t - p_{t-1})``, rotations kept.
    Why not ``p'_t = s_t p_t``: when ``s_t`` varies, that moves every camera by
    ``(s_t - s_{t-1}) p_t``, a fake motion growing with the distance from the
    world origin; integrating the steps follows a geometry backend whose scale
    drifts along the clip (depth and the local step share the frame's scale).
    With a constant scale both forms agree.

    Args:
        c2w: (T, 4, 4) float64 up-to-scale camera-to-world poses.
        scale: (T,) float64 metres per geometry unit.

    Returns:
        (T, 4, 4) float64 metric camera-to-world poses.
    """
    out = np.array(c2w, dtype=np.float64, copy=True)
    p = c2w[:, :3, 3]
    steps = np.diff(p, axis=0) * scale[1:, None]
    out[:, :3, 3] = scale[0] * p[0] + np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)])
    return out


def scale_confidence(log_scale: np.ndarray, smoothed: np.ndarray, valid: np.ndarray, spreads: np.ndarray) -> float:
    """Confidence in [0, 1] that the clip's metric scale is right.

    ``spread`` combines how much the valid frames disagree with the smoothed
    scale (robust std of ``log s_t - smoothed_t``, 1.4826 * MAD) and the pixel
    residual spread of one frame's fit divided by sqrt(#valid frames) (what a
    single frame, or a clip too short to compare frames, still tells). The
    result ``valid_fraction * exp(-spread / 0.05)`` is 1/e when frames disagree
    by 5 %, and falls with the share of frames that had no usable pixels.

    Args:
        log_scale, smoothed: (T,) raw and smoothed per-frame log scales.
        valid: (T,) bool frames that had usable pixels.
        spreads: (T,) per-frame pixel residual spreads (ignored where not valid).
    """
    dev = (log_scale - smoothed)[valid]
    frame_spread = 1.4826 * float(np.median(np.abs(dev - np.median(dev)))) if len(dev) > 2 else 0.0
    pixel_spread = float(np.median(spreads[valid])) / np.sqrt(valid.sum())
    spread = float(np.hypot(frame_spread, pixel_spread))
    return float(valid.mean() * np.exp(-spread / _SCALE_SPREAD_REF))


def fuse_depth(
    geometry: Prediction, metric: Prediction, config: FusionConfig = FusionConfig(), *, clip_id: str = "clip"
) -> FusedGeometry:
    """Metric depth, poses and per-frame K from an up-to-scale geometry and a metric-depth prediction.

    Args:
        geometry: the geometry backend's prediction; needs ``c2w``. depth (T, H, W).
        metric: the metric backend's prediction (``metric`` True), same (T, H, W).
        config: fusion knobs.
        clip_id: names the clip in errors.

    Returns:
        :class:`FusedGeometry`: depth = s_t * geometry depth (0 where unknown),
        conf = geometry conf * metric conf (0 where either depth is unusable),
        K per frame from ``config.intrinsics``.

    Raises:
        AnnotateError: missing poses, non-metric metric input, shape mismatch,
        or no frame with usable pixels.
    """
    where = f"clip {clip_id!r}: fusion"
    if geometry.c2w is None:
        raise AnnotateError(f"{where}: geometry backend {geometry.backend!r} gave no camera poses")
    if not metric.metric:
        raise AnnotateError(f"{where}: metric backend {metric.backend!r} is not metric")
    if geometry.depth.shape != metric.depth.shape:
        raise AnnotateError(
            f"{where}: geometry depth {geometry.depth.shape} and metric depth {metric.depth.shape} differ in shape"
        )
    T = geometry.depth.shape[0]
    g, m = geometry.depth.astype(np.float64), metric.depth.astype(np.float64)
    usable = np.isfinite(g) & np.isfinite(m) & (g > 0) & (m > 0)
    votes = usable & (geometry.conf >= config.min_conf) & (metric.conf >= config.min_conf)

    log_scale, spreads = np.zeros(T), np.zeros(T)
    valid = votes.reshape(T, -1).sum(axis=1) >= 8  # fewer pixels cannot be trimmed meaningfully
    if not valid.any():
        raise AnnotateError(
            f"{where}: no frame has pixels where both depths are positive and both confidences >= {config.min_conf}"
        )
    for t in np.flatnonzero(valid):
        sel = votes[t]
        w = geometry.conf[t][sel].astype(np.float64) * metric.conf[t][sel]
        s, spreads[t] = frame_scale(g[t][sel], m[t][sel], w, config.trim, config.trim_iterations)
        log_scale[t] = np.log(s)

    smoothed = smooth_log_scale(log_scale, valid, config.momentum)
    scale = np.exp(smoothed)
    depth = np.where(usable, g * scale[:, None, None], 0.0).astype(np.float32)
    conf = np.where(usable, geometry.conf * metric.conf, 0.0).astype(np.float32)
    K = metric.K if config.intrinsics == "metric" else geometry.K
    return FusedGeometry(
        c2w=rescale_trajectory(geometry.c2w, scale),
        depth=depth,
        K=np.array(K, dtype=np.float64, copy=True),
        conf=conf,
        scale=scale,
        scale_confidence=scale_confidence(log_scale, smoothed, valid, spreads),
    )
