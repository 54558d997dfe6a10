"""Scene folders (DL3DV layout), the scene frame (up, bounds, scale) and generated rooms."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from _render_fixtures import write_training_images
from wmkit.datasets.cameras import Cameras
from wmkit.manifests.readers.dl3dv_gs import read_dl3dv_gs
from wmkit.render.scenes import (
    SceneError,
    TrainingImages,
    load_scene,
    load_scene_files,
    nearest_training_views,
    scene_frame,
    write_scene,
)
from wmkit.render.splats import Splats
from wmkit.render.synthetic_room import make_room_scene


@pytest.fixture(scope="module")
def room():
    return make_room_scene(seed=3, num_gaussians=1500)


def test_generated_room_is_deterministic_and_on_its_surfaces(room) -> None:
    scene, geometry = room
    again, _ = make_room_scene(seed=3, num_gaussians=1500)
    np.testing.assert_array_equal(scene.splats.means, again.splats.means)
    np.testing.assert_array_equal(scene.cameras.c2w, again.cameras.c2w)
    other, _ = make_room_scene(seed=4, num_gaussians=1500)
    assert not np.array_equal(other.splats.means[:10], scene.splats.means[:10])
    assert abs(len(scene.splats) - 1500) < 40
    np.testing.assert_allclose(geometry.distance_to_surfaces(scene.splats.means), 0.0, atol=1e-5)
    eyes = scene.cameras.c2w[:, :3, 3]
    assert geometry.inside_free_space(eyes).all() and (geometry.distance_to_surfaces(eyes) > 0.3).all()


def test_scene_frame_of_generated_room(room) -> None:
    scene, geometry = room
    frame = scene.frame
    assert np.degrees(np.arccos(frame.up @ [0, 0, 1])) < 3.0
    np.testing.assert_allclose(frame.align @ frame.align.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(frame.align[2], frame.up)
    # robust bounds: the room box, give or take the 2 % trimmed and the small tilt of the estimated up
    np.testing.assert_allclose(frame.lo, [0, 0, 0], atol=0.2)
    np.testing.assert_allclose(frame.hi, geometry.size, atol=0.2)
    assert frame.scale == pytest.approx(0.25 * min(geometry.size[:2]), rel=1e-6)
    p = np.array([[1.0, 2.0, 0.5]])
    np.testing.assert_allclose(frame.to_world(frame.to_aligned(p)), p, atol=1e-12)


def test_up_follows_a_rotated_world(room) -> None:
    """Rotate splats and cameras together: up rotates with them; height range and scale stay.

    (The horizontal axes of a camera ring fall back to a world axis, so only the
    vertical extent is rotation-invariant.)"""
    scene, _ = room
    R = Rotation.from_euler("xyz", [70, -20, 35], degrees=True).as_matrix()
    M = np.eye(4)
    M[:3, :3] = R
    splats = replace(scene.splats, means=scene.splats.means @ R.T)
    cameras = replace(scene.cameras, c2w=M @ scene.cameras.c2w)
    frame = scene_frame(splats, cameras)
    np.testing.assert_allclose(frame.up, R @ scene.frame.up, atol=1e-6)
    np.testing.assert_allclose(frame.hi[2] - frame.lo[2], scene.frame.hi[2] - scene.frame.lo[2], atol=1e-4)
    assert frame.scale == pytest.approx(scene.frame.scale)


def test_bounds_ignore_faint_floaters(room) -> None:
    scene, _ = room
    s = scene.splats
    far = 100.0 + np.arange(20, dtype=np.float32)[:, None] * np.ones(3, np.float32)
    splats = Splats(
        np.concatenate([s.means, far]),
        np.concatenate([s.quats, s.quats[:20]]),
        np.concatenate([s.log_scales, s.log_scales[:20]]),
        np.concatenate([s.opacity_logits, np.full(20, -8.0, np.float32)]),
        np.concatenate([s.sh, s.sh[:20]]),
    )
    frame = scene_frame(splats, scene.cameras)
    np.testing.assert_allclose(frame.hi, scene.frame.hi, atol=0.05)


def test_scene_folder_round_trip_and_manifest_row(tmp_path: Path, room) -> None:
    scene, _ = room
    ply = write_scene(scene, tmp_path / "scenes" / "abc123")
    back = load_scene(tmp_path / "scenes" / "abc123")
    assert back.name == "abc123" and (back.width, back.height) == (scene.width, scene.height)
    np.testing.assert_array_equal(back.splats.means, scene.splats.means)
    np.testing.assert_allclose(back.cameras.c2w, scene.cameras.c2w, atol=1e-12)
    np.testing.assert_allclose(back.cameras.K, scene.cameras.K)
    np.testing.assert_allclose(back.frame.up, scene.frame.up, atol=1e-9)
    assert not back.metric  # DL3DV scenes are COLMAP units
    # the manifest reader finds the same PLY; its row loads to the same scene
    row = read_dl3dv_gs(tmp_path / "scenes").iloc[0]
    assert Path(row["media_uri"]) == ply.resolve()
    from_row = load_scene_files(row["media_uri"], row["cameras_uri"], name=row["clip_id"])
    np.testing.assert_array_equal(from_row.splats.sh, scene.splats.sh)


def test_scene_errors_name_the_scene(tmp_path: Path, room) -> None:
    scene, _ = room
    folder = tmp_path / "s1"
    write_scene(scene, folder)
    (folder / "transforms.json").unlink()
    with pytest.raises(SceneError, match="s1: no transforms.json"):
        load_scene(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SceneError, match="empty: no splat PLY"):
        load_scene(tmp_path / "empty")
    write_scene(scene, folder)
    (folder / "transforms.json").write_text(json.dumps({"w": 4, "h": 3, "frames": []}))
    with pytest.raises(SceneError, match="s1: .*no 'frames' list"):
        load_scene(folder)


def test_degenerate_scenes_are_refused(room) -> None:
    scene, _ = room
    s = scene.splats
    flat = replace(s, means=np.zeros_like(s.means))
    with pytest.raises(SceneError, match="room-x: degenerate scene"):
        scene_frame(flat, scene.cameras, "room-x")
    clear = replace(s, opacity_logits=np.full_like(s.opacity_logits, -40.0))
    with pytest.raises(SceneError, match="room-x: every Gaussian is transparent"):
        scene_frame(clear, scene.cameras, "room-x")
    c2w = np.repeat(scene.cameras.c2w[:1], 2, axis=0)
    c2w[1, :3, :3] = c2w[0, :3, :3] @ np.diag([-1.0, -1.0, 1.0])  # rolled upside down: up axes cancel
    cams = Cameras(c2w=c2w, K=scene.cameras.K[:2], t=[0.0, 1.0], frame_index=[0, 1])
    with pytest.raises(SceneError, match="room-x: training cameras' up axes cancel"):
        scene_frame(s, cams, "room-x")


# --- training images and reference views ---------------------------------------------------------


def _cams(centres: list[list[float]], forwards: list[list[float]]) -> Cameras:
    """Cameras at ``centres`` whose optical axes (OpenCV +z) point along ``forwards``."""
    c2w = np.repeat(np.eye(4)[None], len(centres), axis=0)
    for i, (c, f) in enumerate(zip(centres, forwards)):
        z = np.asarray(f, float) / np.linalg.norm(f)
        x = np.cross([0.0, 0.0, 1.0], z) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x /= np.linalg.norm(x)
        c2w[i, :3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
        c2w[i, :3, 3] = c
    return Cameras(c2w=c2w, K=np.repeat(np.eye(3)[None], len(centres), 0), t=np.arange(len(centres)) * 1.0,
                   frame_index=np.arange(len(centres)))  # fmt: skip


def test_nearest_training_view_weighs_distance_in_capture_radii_against_turning() -> None:
    ahead = [1.0, 0.0, 0.0]
    training = _cams([[0, 0, 0], [1, 0, 0], [0.4, 0, 0], [2, 0, 0]], [ahead, ahead, [-1, 0, 0], ahead])
    query = _cams([[0.1, 0, 0], [0.45, 0, 0], [0.5, 0, 0], [1.9, 0, 0]], [ahead] * 4).c2w
    # 0.45: training 2 is 0.05 away but faces backwards (π rad); training 0 is 0.45 away, same heading
    np.testing.assert_array_equal(nearest_training_views(training, query, scale=1.0), [0, 0, 0, 3])
    # 0.5 is equidistant from training 0 and 1: the tie goes to the lower index
    assert nearest_training_views(training, query[2:3], scale=1.0)[0] == 0
    # with turning free, the backwards camera 0.05 away wins
    assert nearest_training_views(training, query[1:2], scale=1.0, turn_weight=0.0)[0] == 2
    # the same capture ten times larger (scale too) picks the same views
    big_training, big_query = replace(training, c2w=training.c2w.copy()), query.copy()
    big_training.c2w[:, :3, 3] *= 10
    big_query[:, :3, 3] *= 10
    np.testing.assert_array_equal(nearest_training_views(big_training, big_query, scale=10.0), [0, 0, 0, 3])
    # 30° of turn costs 0.52 radii: a camera 0.3 radii off but aligned beats one in place but turned
    turned = _cams([[0, 0, 0], [0.3, 0, 0]], [[np.cos(np.pi / 6), np.sin(np.pi / 6), 0], ahead])
    assert nearest_training_views(turned, _cams([[0, 0, 0]], [ahead]).c2w, scale=1.0)[0] == 1


def test_training_images_are_kept_in_camera_order_fitted_and_read_once(tmp_path: Path, room) -> None:
    from PIL import Image

    scene, _ = room
    write_scene(scene, tmp_path / "plain")
    assert load_scene(tmp_path / "plain").images == ()  # generated room: file paths listed, none on disk
    folder = tmp_path / "captured"
    write_scene(scene, folder)
    colours = np.arange(len(scene.cameras))[:, None] * [10, 5, 1]
    paths = write_training_images(folder, colours)
    loaded = load_scene(folder)
    assert loaded.images == tuple(paths) and len(paths) == len(scene.cameras)
    # a 40x20 image (2:1) into 12x8 (3:2): the centre 30x20 scaled by 0.4, 5 columns cut on each side, no padding
    ramp = np.broadcast_to((6 * np.arange(40))[None, :, None], (20, 40, 3)).astype(np.uint8)
    Image.fromarray(ramp).save(paths[3])
    images = TrainingImages(loaded, (12, 8))
    fitted = images.get(3)
    assert fitted.shape == (8, 12, 3) and fitted.dtype == np.uint8
    source_x = 5 + (np.arange(12) + 0.5) * 30 / 12 - 0.5  # output column centres in source pixels
    np.testing.assert_allclose(fitted[4, :, 0], 6 * source_x, atol=1.5)
    np.testing.assert_array_equal(images.stack([5, 3])[0], np.broadcast_to(colours[5], (8, 12, 3)))
    paths[3].unlink()  # read once: the cached image no longer needs the file
    np.testing.assert_array_equal(images.get(3), fitted)


def test_missing_or_corrupt_training_images_name_the_scene_and_file(tmp_path: Path, room) -> None:
    scene, _ = room
    folder = tmp_path / "s2"
    write_scene(scene, folder)
    paths = write_training_images(folder, np.zeros((len(scene.cameras), 3)))
    paths[7].write_bytes(b"not a png")
    images = TrainingImages(load_scene(folder), (8, 6))
    with pytest.raises(SceneError, match=rf"s2: training image {paths[7]} unreadable"):
        images.get(7)
    paths[7].unlink()
    partial = load_scene(folder)  # rendering needs no images: the scene loads
    assert partial.images == tuple(paths)
    with pytest.raises(SceneError, match=rf"s2: training image {paths[7]} is missing \(1 of 24 listed images absent\)"):
        TrainingImages(partial, (8, 6)).get(0)  # no reference is picked from a partial set
