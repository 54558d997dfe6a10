"""annotate.quality: measures on a known scene, and each threshold's failure reason."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wmkit.annotate.quality import QualityThresholds, quality_failures, quality_metrics, reprojection_residuals

T, P = 6, 40


def _scene(step_m: float = 0.1, yaw_deg_per_frame: float = 1.0):
    """Cameras walking along +x and turning about y, points in front of them, exact observations."""
    rng = np.random.default_rng(0)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, :3] = Rotation.from_euler("y", np.arange(T)[:, None] * yaw_deg_per_frame, degrees=True).as_matrix()
    c2w[:, 0, 3] = np.arange(T) * step_m
    K = np.tile(np.array([[100.0, 0, 80], [0, 100.0, 48], [0, 0, 1]]), (T, 1, 1))
    points = np.column_stack([rng.uniform(-1, 1, P), rng.uniform(-0.5, 0.5, P), rng.uniform(4, 6, P)])
    frame = np.repeat(np.arange(T), P)
    point = np.tile(np.arange(P), T)
    w2c = np.linalg.inv(c2w[frame])
    cam = np.einsum("nij,nj->ni", w2c[:, :3, :3], points[point]) + w2c[:, :3, 3]
    pix = np.einsum("nij,nj->ni", K[frame], cam)
    tracks = SimpleNamespace(frame=frame, point=point, uv=pix[:, :2] / pix[:, 2:], num_points=P, num_frames=T)
    result = SimpleNamespace(c2w=c2w, K=K, points=points, reproj_error_px=0.4, stats={})
    depth = np.full((T, 8, 10), 5.0, dtype=np.float32)
    conf = np.full((T, 8, 10), 0.9, dtype=np.float32)
    fused = SimpleNamespace(depth=depth, conf=conf, scale_confidence=0.8)
    return result, fused, tracks


def test_residuals_are_zero_for_exact_observations_and_measure_a_shift():
    result, _, tracks = _scene()
    res = reprojection_residuals(result.c2w, result.K, result.points, tracks)
    assert res.shape == (T * P,)
    np.testing.assert_allclose(res, 0.0, atol=1e-9)
    tracks.uv = tracks.uv + np.array([3.0, 4.0])
    np.testing.assert_allclose(reprojection_residuals(result.c2w, result.K, result.points, tracks), 5.0, atol=1e-9)


def test_point_behind_camera_has_infinite_residual():
    result, _, tracks = _scene()
    result.points[0, 2] = -5.0
    res = reprojection_residuals(result.c2w, result.K, result.points, tracks)
    assert np.isinf(res[tracks.point == 0]).all() and np.isfinite(res[tracks.point != 0]).all()


def test_metrics_measure_motion_invalid_pixels_and_dynamic_observations():
    result, fused, tracks = _scene(step_m=0.1, yaw_deg_per_frame=1.0)
    fused.depth[0, :2] = 0.0  # 2 of 8 rows of one frame: no depth
    fused.conf[1, :4] = 0.1  # 4 rows of another frame: below min_conf
    moved = tracks.point < 4  # 4 points move 20 px in every frame (a walking person)
    tracks.uv[moved] += 20.0
    m = quality_metrics(result, fused, tracks, min_conf=0.2)
    assert m["motion_translation_m"] == pytest.approx(0.5) and m["motion_path_m"] == pytest.approx(0.5)  # 5 x 0.1 m
    assert m["motion_rotation_deg"] == pytest.approx(5.0)
    assert m["invalid_pixel_fraction"] == pytest.approx((2 + 4) / (8 * T))
    assert m["dynamic_fraction"] == pytest.approx(4 / P)
    assert m["residual_median_px"] == pytest.approx(0.0, abs=1e-9)
    assert m["reproj_error_px"] == 0.4 and m["scale_confidence"] == 0.8
    assert (m["num_tracks"], m["num_observations"]) == (P, T * P)


def test_a_good_clip_passes():
    m = quality_metrics(*_scene())
    assert quality_failures(m, QualityThresholds(min_motion_m=0.05, min_motion_deg=2.0)) == []


@pytest.mark.parametrize(
    "change, thresholds, words",
    [
        ({"reproj_error_px": 4.5}, QualityThresholds(), "reprojection error 4.50 px > 3.0"),
        ({"reproj_error_px": float("nan")}, QualityThresholds(), "reprojection error nan"),
        ({"scale_confidence": 0.1}, QualityThresholds(), "scale confidence 0.10 < 0.3"),
        ({"invalid_pixel_fraction": 0.7}, QualityThresholds(), "invalid depth pixels 0.70 > 0.5"),
        ({"dynamic_fraction": 0.4}, QualityThresholds(max_dynamic_fraction=0.3), "dynamic observations 0.40 > 0.3"),
        (
            {"motion_translation_m": 0.01, "motion_rotation_deg": 0.5},
            QualityThresholds(min_motion_m=0.05, min_motion_deg=2.0),
            "static camera: moved 0.010 m",
        ),
    ],
)
def test_each_threshold_names_its_reason(change, thresholds, words):
    m = {**quality_metrics(*_scene()), **change}
    reasons = quality_failures(m, thresholds)
    assert len(reasons) == 1 and reasons[0].startswith(words), reasons


def test_pose_noise_on_a_tripod_adds_path_length_but_not_translation():
    result, fused, tracks = _scene(step_m=0.0, yaw_deg_per_frame=0.0)
    result.c2w[1::2, 0, 3] = 0.03  # the centre jitters by 3 cm every other frame
    m = quality_metrics(result, fused, tracks)
    assert m["motion_path_m"] == pytest.approx(0.15) and m["motion_translation_m"] == pytest.approx(0.03)
    assert quality_failures(m, QualityThresholds(min_motion_m=0.1, min_motion_deg=2.0))[0].startswith("static camera")


def test_a_pan_without_translation_is_not_static():
    m = quality_metrics(*_scene(step_m=0.0, yaw_deg_per_frame=2.0))
    assert m["motion_translation_m"] == 0.0 and m["motion_rotation_deg"] == pytest.approx(10.0)
    assert quality_failures(m, QualityThresholds(min_motion_m=0.05, min_motion_deg=2.0)) == []


@pytest.mark.parametrize("bad", [{"max_reproj_error_px": -1.0}, {"min_scale_confidence": 1.5}, {"max_invalid_fraction": -0.1}])
def test_thresholds_reject_impossible_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        QualityThresholds(**bad)


def test_unreconstructed_points_are_left_out_of_the_measures():
    result, fused, tracks = _scene()
    result.points[:10] = np.nan  # the BA dropped 10 of 40 tracks
    res = reprojection_residuals(result.c2w, result.K, result.points, tracks)
    assert np.isnan(res[tracks.point < 10]).all()
    m = quality_metrics(result, fused, tracks)
    assert m["num_observations"] == T * 30 and m["dynamic_fraction"] == 0.0
