"""Synthetic scenes with exact ground truth: depth and cameras agree, clips are reproducible, files are valid."""

import json

import numpy as np
import pytest

from wmkit.annotate.synthetic_scenes import render_scene_clip, write_synthetic_source
from wmkit.datasets.synthetic import write_ground_truth
from wmkit.datasets.cameras import Cameras
from wmkit.datasets.video import decode_clip
from wmkit.manifests.schema import validate

W, H = 96, 64


@pytest.fixture(scope="module")
def zoom_clip():
    return render_scene_clip(seed=3, num_frames=12, width=W, height=H, fps=8.0, zoom=0.3)


def _unproject(depth: np.ndarray, c2w: np.ndarray, K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """World points (N, 3) of integer pixels ``uv`` (N, 2) from z-depth (pixel centres at +0.5)."""
    z = depth[uv[:, 1], uv[:, 0]]
    pix = np.stack([uv[:, 0] + 0.5, uv[:, 1] + 0.5, np.ones(len(uv))], axis=1)
    cam = (pix @ np.linalg.inv(K).T) * z[:, None]
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def _project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Continuous pixel coordinates (N, 2) (pixel centres at +0.5) and z-depth (N,) of world points."""
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    pix = cam @ K.T
    return pix[:, :2] / pix[:, 2:], cam[:, 2]


def test_depth_and_cameras_reproject_between_frames(zoom_clip):
    cams, depth = zoom_clip.cameras, zoom_clip.depth
    rng = np.random.default_rng(0)
    uv = np.stack([rng.integers(0, W, 400), rng.integers(0, H, 400)], axis=1)
    points = _unproject(depth[0], cams.c2w[0], cams.K[0], uv)
    # Projecting back into frame 0 lands on the same pixel centres with the same depth.
    uv0, z0 = _project(points, cams.c2w[0], cams.K[0])
    np.testing.assert_allclose(uv0, uv + 0.5, atol=1e-3)
    # Into the last frame (moved, turned and zoomed): where a point lands inside, its depth agrees
    # with the rendered depth there except at occlusions and silhouette edges.
    uv_last, z_last = _project(points, cams.c2w[-1], cams.K[-1])
    inside = (z_last > 0) & (uv_last > 1).all(axis=1) & (uv_last[:, 0] < W - 1) & (uv_last[:, 1] < H - 1)
    assert inside.sum() > 100
    ui, vi = np.floor(uv_last[inside]).astype(int).T
    rel = np.abs(depth[-1][vi, ui] - z_last[inside]) / z_last[inside]
    assert np.median(rel) < 0.01
    assert np.mean(rel < 0.03) > 0.8


def test_camera_moves_turns_and_stays_clear_of_surfaces(zoom_clip):
    cams, depth = zoom_clip.cameras, zoom_clip.depth
    assert cams.metric and len(cams) == 12
    travelled = np.linalg.norm(np.diff(cams.c2w[:, :3, 3], axis=0), axis=1).sum()
    assert 0.3 * 11 / 8 < travelled < 0.8 * 11 / 8  # 0.3-0.7 m/s walk plus a small bob, over 11/8 s
    turn = np.einsum("ij,ij->", cams.c2w[0, :3, :3], cams.c2w[-1, :3, :3])  # trace(R0^T R1)
    assert np.degrees(np.arccos(np.clip((turn - 1) / 2, -1, 1))) > 1.0
    assert np.isfinite(depth).all() and depth.min() > 0.3 and depth.dtype == np.float32


def test_zoom_changes_K_and_clips_are_deterministic(zoom_clip):
    again = render_scene_clip(seed=3, num_frames=12, width=W, height=H, fps=8.0, zoom=0.3)
    assert np.array_equal(again.frames, zoom_clip.frames) and np.array_equal(again.depth, zoom_clip.depth)
    np.testing.assert_array_equal(again.cameras.c2w, zoom_clip.cameras.c2w)
    other = render_scene_clip(seed=4, num_frames=2, width=W, height=H, fps=8.0)
    assert not np.array_equal(other.frames[0], zoom_clip.frames[0])
    K = zoom_clip.cameras.K
    assert K[-1, 0, 0] == pytest.approx(1.3 * K[0, 0, 0]) and (np.diff(K[:, 0, 0]) > 0).all()
    np.testing.assert_array_equal(K[:, 0, 0], K[:, 1, 1])
    np.testing.assert_array_equal(K[:, :2, 2], np.tile([W / 2, H / 2], (12, 1)))
    assert np.ptp(other.cameras.K[:, 0, 0]) == 0.0  # no zoom: one focal length
    # The texture gives SIFT something to find: strong local contrast across the frame.
    grey = zoom_clip.frames[0].mean(axis=-1)
    assert np.abs(np.diff(grey, axis=1)).mean() > 4.0


def test_bad_arguments_name_the_seed():
    with pytest.raises(ValueError, match="seed=7"):
        render_scene_clip(seed=7, num_frames=0)
    with pytest.raises(ValueError, match="zoom"):
        render_scene_clip(seed=7, zoom=-1.5)


def test_write_ground_truth_round_trips(zoom_clip, tmp_path):
    write_ground_truth(zoom_clip, tmp_path / "gt")
    cams = Cameras.load(tmp_path / "gt" / "cameras.npz")
    np.testing.assert_array_equal(cams.c2w, zoom_clip.cameras.c2w)
    np.testing.assert_array_equal(cams.K, zoom_clip.cameras.K)
    assert cams.metric
    with np.load(tmp_path / "gt" / "depth.npz", allow_pickle=False) as z:
        assert z["depth"].dtype == np.float32 and z["valid"].dtype == bool
        np.testing.assert_array_equal(z["depth"], zoom_clip.depth)
        assert z["valid"].all()
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == ["cameras.npz", "depth.npz"]


def test_synthetic_source_writes_videos_ground_truth_and_a_valid_manifest(tmp_path):
    manifest = write_synthetic_source(tmp_path, 2, num_frames=6, width=64, height=48, fps=6.0, seed=10)
    validate(manifest)
    assert list(manifest["clip_id"]) == ["synth-00010", "synth-00011"]
    assert (manifest["source"] == "local").all() and (manifest["cameras_uri"] == "").all()
    assert (manifest["num_frames"] == 6).all() and (manifest["end_s"] == 1.0).all()
    extras = [json.loads(e) for e in manifest["extra"]]
    assert [e["zoom"] for e in extras] == [0.0, 0.4]  # every 2nd clip zooms
    for row, extra in zip(manifest.itertuples(), extras):
        frames = decode_clip(row.media_uri)
        assert frames.shape == (6, 48, 64, 3)
        truth = render_scene_clip(extra["seed"], 6, 64, 48, 6.0, zoom=extra["zoom"])
        assert np.abs(frames.astype(int) - truth.frames).mean() < 8  # H.264 at crf 18
        cams = Cameras.load(f"{extra['gt_dir']}/cameras.npz")
        np.testing.assert_array_equal(cams.K, truth.cameras.K)
        assert extra["gt_dir"] == str(tmp_path.resolve() / "gt" / row.clip_id)
