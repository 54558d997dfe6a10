"""Backend protocol, registry, Prediction.validate, the perturbed test instruments and the colmap baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from wmkit.annotate.backends import BACKENDS, make_backend, register_backend
from wmkit.annotate.backends.perturbed import PerturbedBackend, load_ground_truth
from wmkit.annotate.evaluate import align_trajectories
from wmkit.annotate.synthetic_scenes import render_scene_clip
from wmkit.datasets.synthetic import write_ground_truth
from wmkit.annotate.types import AnnotateError, Backend, Prediction

T, H, W = 8, 24, 32
CLIP = "scene_0"
NO_NOISE = dict(
    depth_noise_rel=0.0, outlier_fraction=0.0, focal_bias_rel=0.0, focal_noise_rel=0.0
)  # options shared by both perturbed backends that switch every random error off


@pytest.fixture(scope="module")
def gt_clip():
    """A tiny rendered clip with exact cameras and depth."""
    return render_scene_clip(3, num_frames=T, width=W, height=H, fps=4.0)


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory, gt_clip) -> Path:
    """A ground-truth root holding ``CLIP`` in the layout of annotate.synthetic_scenes."""
    root = tmp_path_factory.mktemp("gt")
    write_ground_truth(gt_clip, root / CLIP)
    return root


def _prediction(**change) -> Prediction:
    """A valid up-to-scale prediction of T frames of H x W, with fields replaced by ``change``."""
    K = np.tile(np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]]), (T, 1, 1))
    fields = dict(
        depth=np.full((T, H, W), 2.0), conf=np.ones((T, H, W)), c2w=np.tile(np.eye(4), (T, 1, 1)),
        K=K, metric=False, backend="test",
    )
    return Prediction(**(fields | change))


def _ate(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> tuple[float, float]:
    """(RMSE of camera centres after Sim(3) alignment, the alignment's scale)."""
    aligned, scale = align_trajectories(pred_c2w, gt_c2w, "sim3")
    return float(np.sqrt(((aligned[:, :3, 3] - gt_c2w[:, :3, 3]) ** 2).sum(axis=1).mean())), scale


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_registry_builds_every_backend_by_name(gt_root):
    assert {"perturbed", "perturbed_metric", "colmap"} <= set(BACKENDS)
    for name, options in [("perturbed", {"gt_root": gt_root}), ("perturbed_metric", {"gt_root": gt_root}), ("colmap", {})]:
        backend = make_backend(name, **options)
        assert isinstance(backend, Backend) and backend.name == name
        backend.setup()
    assert make_backend("perturbed", gt_root=gt_root, seed=5).seed == 5


def test_registry_names_unknown_backends_and_options(gt_root):
    with pytest.raises(AnnotateError, match="unknown backend 'pi9'.*colmap"):
        make_backend("pi9")
    with pytest.raises(AnnotateError, match="'perturbed': bad options.*focal_bais"):
        make_backend("perturbed", gt_root=gt_root, focal_bais=0.1)


def test_register_backend_refuses_clashes():
    @dataclass(frozen=True)
    class Other:
        name: ClassVar[str] = "perturbed"

    with pytest.raises(ValueError, match="already registered"):
        register_backend("perturbed")(Other)
    with pytest.raises(ValueError, match="must have name = 'other_name'"):
        register_backend("other_name")(Other)
    assert "other_name" not in BACKENDS and BACKENDS["perturbed"] is PerturbedBackend


# ---------------------------------------------------------------------------
# Prediction.validate
# ---------------------------------------------------------------------------


def test_validate_accepts_a_good_prediction_and_casts_dtypes():
    pred = _prediction(c2w=None, metric=True)
    assert pred.validate("clip_a", T, (H, W)) is pred
    assert pred.depth.dtype == np.float32 and pred.K.dtype == np.float64


def _nan_depth() -> np.ndarray:
    depth = np.full((T, H, W), 2.0)
    depth[5, 1, 1] = np.nan
    return depth


def _skewed_c2w() -> np.ndarray:
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[2, 0, 1] = 0.3
    return c2w


@pytest.mark.parametrize(
    "change, num_frames, message",
    [
        ({}, T + 1, r"depth has shape \(8, 24, 32\), expected \(9, 24, 32\)"),
        ({"depth": _nan_depth()}, T, r"non-finite depth at frames \[5\]"),
        ({"conf": np.full((T, H, W), 1.5)}, T, r"conf outside \[0, 1\]"),
        ({"depth": np.zeros((T, H, W))}, T, r"non-positive depth with conf > 0"),
        ({"K": np.tile(np.diag([-1.0, 1.0, 1.0]), (T, 1, 1))}, T, "non-positive focal length at frame 0"),
        ({"K": np.tile(np.array([[3.0, 0, 1], [0, 3, 1], [1, 0, 1]]), (T, 1, 1))}, T, "K is not a pinhole"),
        ({"c2w": _skewed_c2w()}, T, r"c2w rotation not proper at frames \[2\]"),
    ],
    ids=["frames", "nan", "conf", "depth0", "focal", "pinhole", "rotation"],
)
def test_validate_names_the_clip_and_the_fault(change, num_frames, message):
    with pytest.raises(AnnotateError, match=r"clip 'bad_clip': backend 'test': " + message):
        _prediction(**change).validate("bad_clip", num_frames, (H, W))


def test_unknown_depth_is_allowed_where_conf_is_zero():
    depth, conf = np.full((T, H, W), 2.0), np.ones((T, H, W))
    depth[:, :4], conf[:, :4] = 0.0, 0.0
    _prediction(depth=depth, conf=conf).validate("sparse", T, (H, W))


# ---------------------------------------------------------------------------
# perturbed (geometry role)
# ---------------------------------------------------------------------------


def test_perturbed_without_noise_is_the_scaled_ground_truth(gt_root, gt_clip):
    backend = PerturbedBackend(
        gt_root=gt_root, scale_drift=0.0, rot_noise_deg=0.0, trans_noise_rel=0.0, rebase_to_first=False, **NO_NOISE
    )
    pred = backend.predict(gt_clip.frames, CLIP).validate(CLIP, T, (H, W))
    s = backend.scales(CLIP, T)
    assert np.allclose(s, s[0]) and 0.25 <= s[0] <= 4.0
    gt = gt_clip.cameras
    np.testing.assert_allclose(pred.c2w[:, :3, 3], s[0] * gt.c2w[:, :3, 3], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pred.c2w[:, :3, :3], gt.c2w[:, :3, :3], atol=1e-12)
    np.testing.assert_allclose(pred.depth, s[0] * gt_clip.depth, rtol=1e-5)
    np.testing.assert_allclose(pred.K, gt.K)
    assert not pred.metric and pred.backend == "perturbed" and (pred.conf >= 0.7).all()


def test_perturbed_drift_is_shared_by_depth_and_camera_motion(gt_root, gt_clip):
    backend = PerturbedBackend(gt_root=gt_root, scale_drift=0.05, rot_noise_deg=0.0, trans_noise_rel=0.0, **NO_NOISE)
    pred = backend.predict(gt_clip.frames, CLIP)
    s = backend.scales(CLIP, T)
    assert np.ptp(np.log(s)) > 0.02  # the scale really drifts
    np.testing.assert_allclose(pred.depth / gt_clip.depth, np.broadcast_to(s[:, None, None], (T, H, W)), rtol=1e-5)
    # rebased to the first camera; each step in the first camera's frame, scaled by that frame's s_t
    gt_rel = np.linalg.inv(gt_clip.cameras.c2w[0]) @ gt_clip.cameras.c2w
    np.testing.assert_allclose(pred.c2w[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(
        np.diff(pred.c2w[:, :3, 3], axis=0), np.diff(gt_rel[:, :3, 3], axis=0) * s[1:, None], atol=1e-9
    )


def test_perturbed_default_noise_has_the_stated_sizes(gt_root, gt_clip):
    backend = PerturbedBackend(gt_root=gt_root, outlier_fraction=0.1, focal_bias_rel=0.05, focal_noise_rel=0.0)
    pred = backend.predict(gt_clip.frames, CLIP).validate(CLIP, T, (H, W))
    s = backend.scales(CLIP, T)
    ate, scale = _ate(pred.c2w, gt_clip.cameras.c2w)
    assert abs(scale * s.mean() - 1.0) < 0.1  # Sim(3) alignment undoes the unknown scale (2-s path, noisy)
    assert ate < 0.05  # metres: trans noise 0.5 % of a few-metre scene depth
    ratio = pred.depth / (gt_clip.depth * s[:, None, None])
    outlier = pred.conf < 0.5
    assert 0.07 < outlier.mean() < 0.13
    assert np.abs(np.log(ratio[outlier])).mean() > 0.3 and pred.conf[outlier].max() <= 0.3
    assert abs(np.std(ratio[~outlier]) - backend.depth_noise_rel) < 0.005
    np.testing.assert_allclose(pred.K[:, 0, 0], 1.05 * gt_clip.cameras.K[:, 0, 0])


def test_perturbed_is_seeded_by_seed_and_clip(tmp_path, gt_root, gt_clip):
    write_ground_truth(gt_clip, tmp_path / "other_clip")
    first = make_backend("perturbed", gt_root=gt_root).predict(gt_clip.frames, CLIP)
    again = make_backend("perturbed", gt_root=gt_root).predict(gt_clip.frames, CLIP)
    reseeded = make_backend("perturbed", gt_root=gt_root, seed=1).predict(gt_clip.frames, CLIP)
    other = make_backend("perturbed", gt_root=tmp_path).predict(gt_clip.frames, "other_clip")
    np.testing.assert_array_equal(first.depth, again.depth)
    np.testing.assert_array_equal(first.c2w, again.c2w)
    assert not np.allclose(first.c2w, reseeded.c2w) and not np.allclose(first.depth, other.depth)


def test_perturbed_resamples_ground_truth_to_the_frame_size(gt_root, gt_clip):
    half = gt_clip.frames[:, ::2, ::2]
    backend = PerturbedBackend(gt_root=gt_root, scale_drift=0.0, **NO_NOISE)
    pred = backend.predict(half, CLIP).validate(CLIP, T, (H // 2, W // 2))
    np.testing.assert_allclose(pred.K[:, :2], gt_clip.cameras.K[:, :2] / 2)
    s = backend.scales(CLIP, T)[0]
    np.testing.assert_allclose(pred.depth, s * gt_clip.depth[:, 1::2, 1::2], rtol=1e-5)


# ---------------------------------------------------------------------------
# perturbed_metric (metric-depth role)
# ---------------------------------------------------------------------------


def test_perturbed_metric_gives_metric_depth_and_biased_per_frame_K(gt_root, gt_clip):
    backend = make_backend("perturbed_metric", gt_root=gt_root, scale_bias_rel=0.03, outlier_fraction=0.0)
    pred = backend.predict(gt_clip.frames, CLIP).validate(CLIP, T, (H, W))
    assert pred.metric and pred.c2w is None and pred.backend == "perturbed_metric"
    assert abs(np.median(pred.depth / gt_clip.depth) - 1.03) < 0.005
    focal_ratio = pred.K[:, 0, 0] / gt_clip.cameras.K[:, 0, 0]
    assert abs(focal_ratio.mean() - 0.97) < 0.03 and focal_ratio.std() > 0.001  # bias -3 %, noise 2 % per frame
    np.testing.assert_allclose(pred.K[:, :2, 2], gt_clip.cameras.K[:, :2, 2])


# ---------------------------------------------------------------------------
# failures of the perturbed backends
# ---------------------------------------------------------------------------


def test_missing_ground_truth_names_the_clip(gt_root, gt_clip):
    for name in ("perturbed", "perturbed_metric"):
        with pytest.raises(AnnotateError, match=r"clip 'no_such_clip': ground truth .*no_such_clip: folder missing"):
            make_backend(name, gt_root=gt_root).predict(gt_clip.frames, "no_such_clip")


def test_frame_count_mismatch_and_bad_frames_name_the_clip(gt_root, gt_clip):
    backend = make_backend("perturbed", gt_root=gt_root)
    with pytest.raises(AnnotateError, match=rf"clip '{CLIP}'.*8 ground-truth frames but 5 frames given"):
        backend.predict(gt_clip.frames[:5], CLIP)
    with pytest.raises(AnnotateError, match=rf"clip '{CLIP}'.*frames must be \(T, H, W, 3\)"):
        backend.predict(gt_clip.frames[..., 0], CLIP)
    with pytest.raises(AnnotateError, match="unreadable"):
        (gt_root / "broken").mkdir()
        (gt_root / "broken" / "cameras.npz").write_bytes(b"not a zip")
        load_ground_truth(gt_root, "broken", T, (H, W))


def test_nan_injection_is_caught_by_validate_for_the_listed_clips(tmp_path, gt_root, gt_clip):
    write_ground_truth(gt_clip, tmp_path / "healthy")
    write_ground_truth(gt_clip, tmp_path / "poisoned")
    backend = make_backend("perturbed_metric", gt_root=tmp_path, nan_fraction=0.01, nan_clip_ids=["poisoned"])
    backend.predict(gt_clip.frames, "healthy").validate("healthy", T, (H, W))
    pred = backend.predict(gt_clip.frames, "poisoned")
    assert np.isnan(pred.depth).any()
    with pytest.raises(AnnotateError, match="clip 'poisoned': backend 'perturbed_metric': non-finite depth"):
        pred.validate("poisoned", T, (H, W))


@pytest.mark.parametrize(
    "options, message",
    [({"outlier_fraction": 1.5}, "outlier_fraction"), ({"scale_range": (2.0, 1.0)}, "scale_range"),
     ({"rot_noise_deg": -1.0}, "rot_noise_deg")],
)
def test_perturbed_refuses_bad_options(gt_root, options, message):
    with pytest.raises(ValueError, match=message):
        PerturbedBackend(gt_root=gt_root, **options)


# ---------------------------------------------------------------------------
# colmap
# ---------------------------------------------------------------------------


def test_colmap_recovers_the_trajectory_shared_K_and_sparse_depth():
    # fps 4: 24 frames span 6 s of the scene loop, enough parallax for SfM on 160 x 96 frames
    clip = render_scene_clip(0, num_frames=24, width=160, height=96, fps=4.0)
    backend = make_backend("colmap", num_threads=2)
    backend.setup()
    pred = backend.predict(clip.frames, "room_0").validate("room_0", 24, (96, 160))
    gt = clip.cameras
    path_m = np.linalg.norm(np.diff(gt.c2w[:, :3, 3], axis=0), axis=1).sum()
    ate, scale = _ate(pred.c2w, gt.c2w)
    assert ate < 0.03 * path_m, (ate, path_m)
    np.testing.assert_allclose(pred.K, np.repeat(pred.K[:1], 24, axis=0))  # one shared K
    assert abs(pred.K[0, 0, 0] / gt.K[0, 0, 0] - 1.0) < 0.03
    known = pred.conf > 0
    assert (known.sum(axis=(1, 2)) >= 20).all() and set(np.unique(pred.conf)) == {0.0, 1.0}
    assert (pred.depth[~known] == 0).all()
    rel = np.abs(pred.depth[known] * scale - clip.depth[known]) / clip.depth[known]
    assert np.median(rel) < 0.05


def test_colmap_fails_on_textureless_frames_naming_the_clip():
    frames = np.full((12, 96, 160, 3), 40, dtype=np.uint8)
    with pytest.raises(AnnotateError, match="clip 'blank_clip': backend 'colmap': SfM"):
        make_backend("colmap", num_threads=2).predict(frames, "blank_clip")


def test_colmap_keyframes_cover_both_ends():
    np.testing.assert_array_equal(make_backend("colmap", keyframe_stride=3).keyframes(8), [0, 3, 6, 7])
    with pytest.raises(AnnotateError, match="clip 'short': .*2 keyframes, 3 needed"):
        make_backend("colmap").predict(np.zeros((3, 96, 160, 3), np.uint8), "short")
