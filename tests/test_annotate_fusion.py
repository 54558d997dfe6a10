"""Depth fusion: robust per-frame scale, EMA smoothing, metric trajectory, scale confidence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wmkit.annotate.fusion import (
    FusionConfig,
    frame_scale,
    fuse_depth,
    rescale_trajectory,
    smooth_log_scale,
)
from wmkit.annotate.types import AnnotateError, Prediction

T, H, W = 24, 24, 32


def _gt(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Metric GT: depth (T, H, W) metres, c2w (T, 4, 4) on a curve, K (T, 3, 3)."""
    rng = np.random.default_rng(seed)
    depth = (2.0 + 3.0 * rng.random((T, H, W))).astype(np.float32)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, :3] = Rotation.from_euler("y", np.linspace(0, 30, T)[:, None], degrees=True).as_matrix()
    c2w[:, :3, 3] = np.stack([np.linspace(0, 2, T), 0.1 * np.sin(np.linspace(0, 3, T)), np.linspace(0, 1, T)], 1)
    K = np.tile(np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]]), (T, 1, 1))
    return depth, c2w, K


def _predictions(
    true_scale: float = 2.5, metric_noise: float = 0.05, frame_bias: float = 0.0, outliers: float = 0.0, seed: int = 0
) -> tuple[Prediction, Prediction, np.ndarray, np.ndarray]:
    """Geometry prediction in units of 1/true_scale metres and a noisy metric one."""
    depth, c2w, K = _gt(seed)
    rng = np.random.default_rng(seed + 1)
    geo_c2w = c2w.copy()
    geo_c2w[:, :3, 3] /= true_scale
    geometry = Prediction(
        depth=depth / true_scale, conf=np.ones_like(depth), c2w=geo_c2w, K=K * 1.1, metric=False, backend="geo"
    )
    bias = 1.0 + frame_bias * rng.standard_normal((T, 1, 1))
    noisy = depth * bias * (1.0 + metric_noise * rng.standard_normal(depth.shape))
    bad = rng.random(depth.shape) < outliers
    noisy[bad] *= rng.uniform(0.2, 5.0, bad.sum())
    metric = Prediction(
        depth=np.abs(noisy), conf=np.full_like(depth, 0.9), c2w=None, K=K, metric=True, backend="metric"
    )
    return geometry, metric, depth, c2w


def test_scale_recovered_and_trajectory_metric():
    geometry, metric, depth, c2w = _predictions(true_scale=2.5)
    fused = fuse_depth(geometry, metric)
    np.testing.assert_allclose(fused.scale, 2.5, rtol=0.01)
    np.testing.assert_allclose(fused.c2w[:, :3, 3], c2w[:, :3, 3], atol=0.03)
    np.testing.assert_allclose(fused.c2w[:, :3, :3], c2w[:, :3, :3], atol=1e-12)
    assert np.median(np.abs(fused.depth / depth - 1)) < 0.01
    np.testing.assert_array_equal(fused.K, metric.K)
    assert fused.scale_confidence > 0.8


def test_trimming_rejects_outliers():
    g = np.full(1000, 1.0)
    m = np.full(1000, 3.0)
    m[:150] = 30.0  # 15 % wild pixels (a moving object, the sky)
    w = np.ones(1000)
    s_plain, _ = frame_scale(g, m, w, trim=0.0, iterations=0)
    s_trim, spread = frame_scale(g, m, w, trim=0.2, iterations=3)
    assert abs(s_plain - 3.0) > 1.0
    assert s_trim == pytest.approx(3.0, rel=1e-9)
    assert spread == pytest.approx(0.0, abs=1e-9)

    geometry, metric, _, _ = _predictions(true_scale=2.0, outliers=0.08)
    assert np.all(np.abs(fuse_depth(geometry, metric, FusionConfig(trim=0.15)).scale / 2.0 - 1) < 0.02)


def test_ema_smooths_per_frame_scale_noise():
    geometry, metric, _, _ = _predictions(true_scale=2.0, frame_bias=0.05, seed=3)
    raw = fuse_depth(geometry, metric, FusionConfig(momentum=0.0))
    smooth = fuse_depth(geometry, metric, FusionConfig(momentum=0.99))
    assert np.std(np.log(smooth.scale)) < 0.5 * np.std(np.log(raw.scale))
    # bias-corrected EMA: after the first frame the estimate is the running mean, not frame 0 alone
    assert abs(np.log(smooth.scale[-1] / 2.0)) < abs(np.log(raw.scale[0] / 2.0)) + 0.02
    consistent = fuse_depth(*_predictions(true_scale=2.0, seed=3)[:2])
    assert consistent.scale_confidence > smooth.scale_confidence


def test_bias_corrected_ema_is_running_mean_at_start():
    x = np.array([1.0, 3.0, 2.0, 5.0])
    out = smooth_log_scale(x, np.ones(4, bool), momentum=0.99)
    w = 0.99 ** np.arange(4)[::-1]
    assert out[1] == pytest.approx((0.99 * 1 + 3) / 1.99)
    assert out[3] == pytest.approx(np.sum(w * x) / np.sum(w))
    skipped = smooth_log_scale(x, np.array([False, True, False, True]), momentum=0.5)
    assert skipped[0] == skipped[1] == 3.0 and skipped[2] == 3.0
    assert skipped[3] == pytest.approx((0.5 * 3 + 5) / 1.5)


def test_rescale_trajectory_integrates_steps():
    c2w = np.tile(np.eye(4), (4, 1, 1))
    c2w[:, 0, 3] = [10.0, 11.0, 12.0, 13.0]  # far from the origin, one unit per step
    out = rescale_trajectory(c2w, np.array([2.0, 2.0, 3.0, 3.0]))
    np.testing.assert_allclose(out[:, 0, 3], [20.0, 22.0, 25.0, 28.0])
    const = rescale_trajectory(c2w, np.full(4, 2.0))
    np.testing.assert_allclose(const[:, 0, 3], 2.0 * c2w[:, 0, 3])


def test_low_confidence_pixels_do_not_vote_and_conf_is_product():
    geometry, metric, _, _ = _predictions(true_scale=2.0, metric_noise=0.0)
    bad = metric.depth.copy()
    bad[:, : H // 2] *= 4.0  # wrong half, but flagged unreliable
    conf = metric.conf.copy()
    conf[:, : H // 2] = 0.1
    metric = Prediction(depth=bad, conf=conf, c2w=None, K=metric.K, metric=True, backend="metric")
    fused = fuse_depth(geometry, metric, FusionConfig(trim=0.0, min_conf=0.2))
    np.testing.assert_allclose(fused.scale, 2.0, rtol=1e-5)
    np.testing.assert_allclose(fused.conf, geometry.conf * conf, rtol=1e-6)


def test_geometry_intrinsics_option():
    geometry, metric, _, _ = _predictions()
    np.testing.assert_array_equal(fuse_depth(geometry, metric, FusionConfig(intrinsics="geometry")).K, geometry.K)


def test_frames_without_pixels_take_the_smoothed_scale():
    geometry, metric, _, _ = _predictions(true_scale=2.0, metric_noise=0.0)
    conf = metric.conf.copy()
    conf[5] = 0.0  # an all-black frame: the metric backend knows nothing
    metric = Prediction(depth=metric.depth, conf=conf, c2w=None, K=metric.K, metric=True, backend="metric")
    fused = fuse_depth(geometry, metric)
    assert fused.scale[5] == pytest.approx(2.0, rel=1e-5)
    assert fused.scale_confidence == pytest.approx((T - 1) / T, rel=1e-3)


def test_bad_input_names_the_clip():
    geometry, metric, _, _ = _predictions()
    no_pose = Prediction(geometry.depth, geometry.conf, None, geometry.K, False, "mono")
    with pytest.raises(AnnotateError, match=r"clip 'c7'.*no camera poses"):
        fuse_depth(no_pose, metric, clip_id="c7")
    with pytest.raises(AnnotateError, match=r"clip 'c7'.*not metric"):
        fuse_depth(geometry, geometry, clip_id="c7")
    small = Prediction(metric.depth[:, :8], metric.conf[:, :8], None, metric.K, True, "metric")
    with pytest.raises(AnnotateError, match=r"clip 'c7'.*shape"):
        fuse_depth(geometry, small, clip_id="c7")
    dark = Prediction(metric.depth, np.zeros_like(metric.conf), None, metric.K, True, "metric")
    with pytest.raises(AnnotateError, match=r"clip 'c7'.*no frame has pixels"):
        fuse_depth(geometry, dark, clip_id="c7")
    with pytest.raises(ValueError, match="trim"):
        FusionConfig(trim=0.7)
