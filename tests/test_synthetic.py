"""The synthetic room clips: cameras and depth are exact, so reprojection closes."""

import numpy as np
import pytest

from wmkit.datasets.synthetic import render_room_clip


def _unproject(depth: np.ndarray, c2w: np.ndarray, K: np.ndarray, uv: np.ndarray) -> np.ndarray:
    z = depth[uv[:, 1], uv[:, 0]]
    pix = np.stack([uv[:, 0] + 0.5, uv[:, 1] + 0.5, np.ones(len(uv))], axis=1)
    cam = (pix @ np.linalg.inv(K).T) * z[:, None]
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def test_depth_and_cameras_reproject_between_frames():
    clip = render_room_clip(seed=3, num_frames=12, width=96, height=64, zoom=0.2)
    cams, depth = clip.cameras, clip.depth
    rng = np.random.default_rng(0)
    uv = np.stack([rng.integers(0, 96, 200), rng.integers(0, 64, 200)], axis=1)
    points = _unproject(depth[0], cams.c2w[0], cams.K[0], uv)
    # Every back-projected point lies on a wall of the room.
    assert np.isclose(np.abs(points), [4.0, 1.5, 6.0], atol=1e-6).any(axis=1).all()
    # Project into the last frame: where it lands inside the image, the depth there agrees.
    w2c = np.linalg.inv(cams.c2w[-1])
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    pix = cam @ cams.K[-1].T
    uv2 = pix[:, :2] / pix[:, 2:] - 0.5
    inside = (cam[:, 2] > 0) & (uv2[:, 0] > 1) & (uv2[:, 0] < 94) & (uv2[:, 1] > 1) & (uv2[:, 1] < 62)
    assert inside.sum() > 50
    ui, vi = np.round(uv2[inside]).astype(int).T
    rel = np.abs(depth[-1][vi, ui] - cam[inside, 2]) / cam[inside, 2]
    assert np.median(rel) < 0.02


def test_zoom_changes_focal_and_clip_is_deterministic():
    a = render_room_clip(seed=1, num_frames=5, width=32, height=24, zoom=0.5)
    b = render_room_clip(seed=1, num_frames=5, width=32, height=24, zoom=0.5)
    assert np.array_equal(a.frames, b.frames)
    assert a.cameras.K[-1, 0, 0] == pytest.approx(1.5 * a.cameras.K[0, 0, 0])
    assert a.frames.shape == (5, 24, 32, 3) and a.depth.shape == (5, 24, 32)


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="bad size"):
        render_room_clip(seed=0, num_frames=0)
