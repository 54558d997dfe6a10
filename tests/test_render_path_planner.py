"""Path planning through a generated room: caps, clearance against the known geometry, coverage, retries, plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wmkit.render.clearance import ClearanceField
from wmkit.render.path_planner import PathConfig, PathError, plan_path, plot_path_topdown, view_coverage
from wmkit.render.reference_rasterizer import rasterization
from wmkit.render.poses import look_at_c2w, pinhole_K
from wmkit.render.synthetic_room import make_room_scene


@pytest.fixture(scope="module")
def room():
    return make_room_scene(seed=0, num_gaussians=3000)


def _speeds(path) -> tuple[np.ndarray, np.ndarray]:
    c2w, fps = path.cameras.c2w, 1.0 / np.diff(path.cameras.t).mean()
    speed = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1) * fps
    R = Rotation.from_matrix(c2w[:, :3, :3])
    turn = np.degrees((R[:-1].inv() * R[1:]).magnitude()) * fps
    return speed, turn


@pytest.mark.parametrize("keys", ["training", "random_walk"])
def test_path_is_961_frames_capped_clear_and_level(room, keys: str) -> None:
    scene, geometry = room
    cfg = PathConfig(keys=keys, max_speed=0.5, max_turn_rate_deg=30.0)
    path = plan_path(scene, seed=7, cfg=cfg)
    cams = path.cameras
    assert len(cams) == 961 and cams.t[-1] == pytest.approx(60.0) and cams.metric
    np.testing.assert_allclose(np.diff(cams.t), 1 / 16)
    np.testing.assert_allclose(cams.K, np.broadcast_to(pinhole_K(1280, 720, 70.0), (961, 3, 3)))
    speed, turn = _speeds(path)
    assert speed.max() <= 0.5 * 1.02 and turn.max() <= 30.0 * 1.02
    eyes = cams.c2w[:, :3, 3]
    assert geometry.inside_free_space(eyes).all()
    assert geometry.distance_to_surfaces(eyes).min() >= cfg.min_clearance - 0.05  # grid of centres vs exact faces
    assert np.abs(cams.c2w[:, :3, 0] @ scene.frame.up).max() < 1e-9  # no roll: camera x stays level
    assert path.coverage.min() >= cfg.min_coverage and path.clearance.min() >= cfg.min_clearance
    again = plan_path(scene, seed=7, cfg=cfg)
    np.testing.assert_array_equal(again.cameras.c2w, cams.c2w)
    other = plan_path(scene, seed=8, cfg=cfg)
    assert not np.allclose(other.cameras.c2w, cams.c2w)


def test_speed_cap_binds_on_a_long_path(room) -> None:
    """A path longer than 60 s at the cap is walked at (not above) the cap and stops at the clip's end."""
    scene, _ = room
    cfg = PathConfig(keys="random_walk", num_keys=10, max_speed=0.05, max_turn_rate_deg=5.0)
    speed, turn = _speeds(plan_path(scene, seed=2, cfg=cfg))
    assert speed.max() <= 0.05 * 1.02 and turn.max() <= 5.0 * 1.02
    assert np.median(speed) > 0.5 * 0.05  # it does move


def test_clearance_field_matches_geometry(room) -> None:
    scene, geometry = room
    field = ClearanceField.from_scene(scene, voxel=0.05, margin=0.25)
    rng = np.random.default_rng(0)
    pts = rng.uniform([0.6, 0.6, 0.6], geometry.size - 0.6, size=(300, 3))
    pts = pts[geometry.inside_free_space(pts)]
    # centres sit on the faces, about one spacing (~0.18 m) apart: the field is within that of the truth
    np.testing.assert_allclose(field(pts), geometry.distance_to_surfaces(pts), atol=0.2)
    assert field(np.array([[50.0, 50.0, 50.0]]))[0] == 0.0  # outside the captured region


def test_coverage_tells_empty_space(room) -> None:
    scene, _ = room
    K = pinhole_K(1280, 720)[None]
    inside = look_at_c2w(np.array([[3.0, 2.0, 1.5]]), np.array([[5.0, 2.0, 1.5]]))
    outside = look_at_c2w(np.array([[-2.0, 2.0, 1.5]]), np.array([[-5.0, 2.0, 1.5]]))  # behind a wall, facing away
    assert view_coverage(scene, inside, K, 1280, 720, (32, 18))[0] > 0.95
    assert view_coverage(scene, outside, K, 1280, 720, (32, 18))[0] == 0.0


def test_coverage_is_the_same_whatever_the_frame_batch(room) -> None:
    scene, _ = room
    rng = np.random.default_rng(0)
    lo, hi = scene.splats.means.min(0), scene.splats.means.max(0)
    c2w = look_at_c2w(rng.uniform(lo - 3, hi + 3, (9, 3)), rng.uniform(lo, hi, (9, 3)), scene.frame.up)
    K = np.stack([pinhole_K(320, 180, fov) for fov in rng.uniform(30, 120, 9)])
    one = view_coverage(scene, c2w, K, 320, 180, (16, 9), frames_per_batch=1)
    assert 0.0 < one.mean() < 1.0  # a mix of views into the room and into empty space
    for batch in (4, 9, 64):
        np.testing.assert_array_equal(view_coverage(scene, c2w, K, 320, 180, (16, 9), frames_per_batch=batch), one)
    assert view_coverage(scene, c2w[:0], K[:0], 320, 180, (16, 9)).shape == (0,)


def test_failures_are_recorded_and_named(room) -> None:
    scene, _ = room
    impossible = PathConfig(min_clearance=5.0, max_attempts=3)
    with pytest.raises(PathError, match="room-0: no acceptable path for seed 1 in 3 attempts") as err:
        plan_path(scene, seed=1, cfg=impossible)
    assert str(err.value).count("attempt ") == 3 and "clearance" in str(err.value)
    # an empty-looking room: strip the walls the training cameras face, coverage rejects every attempt
    floor_only = replace(scene, splats=scene.splats.select(scene.splats.means[:, 2] < 0.01))
    with pytest.raises(PathError, match="sees mostly empty space"):
        plan_path(floor_only, seed=1, cfg=PathConfig(max_attempts=2, min_clearance=0.0))


def test_alpha_check_with_reference_rasterizer_and_topdown_plot(room, tmp_path: Path) -> None:
    scene, _ = room
    cfg = PathConfig(num_frames=33, alpha_stride=8, coverage_grid=(16, 9), min_alpha=0.9)
    path = plan_path(scene, seed=3, cfg=cfg, rasterize=rasterization)
    assert len(path.cameras) == 33 and path.failures == []
    strict = replace(cfg, min_alpha=1.01, max_attempts=1)
    with pytest.raises(PathError, match="renders mostly empty"):
        plan_path(scene, seed=3, cfg=strict, rasterize=rasterization)
    png = tmp_path / "path.png"
    plot_path_topdown(scene, path, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
