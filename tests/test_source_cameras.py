"""load_source_cameras returns the ground truth each fixture wrote, and names the clip on bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import _source_fixtures as fx
from wmkit.datasets.cameras import CameraError
from wmkit.datasets.source_cameras import CAMERA_SOURCES, has_source_cameras, load_source_cameras
from wmkit.manifests.readers import build_manifest

WRITERS = {
    "spatialvid": fx.write_spatialvid,
    "sekai_game": fx.write_sekai_game,
    "omniworld": fx.write_omniworld,
    "dl3dv": fx.write_dl3dv,
    "dl3dv_gs": fx.write_dl3dv_gs,
}
# SpatialVID stores float32 poses; every other fixture round-trips float64.
ATOL = {"spatialvid": 1e-4}


def _manifest(source: str, tmp_path: Path) -> pd.DataFrame:
    df = build_manifest(source, WRITERS[source](tmp_path / source))
    return df[df["cameras_uri"] != ""].reset_index(drop=True)


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_source_cameras_equal_ground_truth(source: str, tmp_path: Path) -> None:
    assert set(WRITERS) == set(CAMERA_SOURCES)
    df = _manifest(source, tmp_path)
    assert len(df) >= 1
    for _, row in df.iterrows():
        assert has_source_cameras(row)
        cams = load_source_cameras(row)
        fps = row.fps or 30.0  # 3DGS scenes have no time base; nerfstudio's default rate applies
        truth = fx.truth_cameras(row.source_id, fps=fps, metric=source == "omniworld")
        atol = ATOL.get(source, 1e-9)
        assert len(cams) == row.num_frames
        np.testing.assert_allclose(cams.c2w, truth.c2w, atol=atol, err_msg=f"{source} {row.clip_id} c2w")
        np.testing.assert_allclose(cams.K, truth.K, atol=atol * 100, err_msg=f"{source} {row.clip_id} K (pixels)")
        np.testing.assert_allclose(cams.t, truth.t, atol=1e-9)
        np.testing.assert_array_equal(cams.frame_index, np.arange(row.num_frames))
        assert cams.metric == (source == "omniworld")


def test_sources_without_cameras_are_refused(tmp_path: Path) -> None:
    row = build_manifest("sekai_walk", fx.write_sekai_walk(tmp_path / "walk", n_clips=1)).iloc[0]
    assert not has_source_cameras(row)
    with pytest.raises(CameraError, match=rf"{row.clip_id}: source 'sekai_walk' has no source cameras"):
        load_source_cameras(row)


def test_missing_camera_file_names_the_clip(tmp_path: Path) -> None:
    row = _manifest("spatialvid", tmp_path).iloc[0]
    (Path(row.cameras_uri) / "indexes.txt").unlink()
    with pytest.raises(CameraError, match=r"svid-clip-0: missing camera file .*indexes\.txt"):
        load_source_cameras(row)


def test_nan_pose_names_the_clip(tmp_path: Path) -> None:
    row = _manifest("sekai_game", tmp_path).iloc[0]
    with np.load(row.cameras_uri) as z:
        c2w, intrinsic = z["extrinsic"].copy(), z["intrinsic"]
    c2w[4, 0, 3] = np.nan
    np.savez(row.cameras_uri, extrinsic=c2w, intrinsic=intrinsic)
    with pytest.raises(CameraError, match=rf"{row.clip_id}.*non-finite c2w"):
        load_source_cameras(row)


def test_nan_quaternion_names_the_clip(tmp_path: Path) -> None:
    row = _manifest("spatialvid", tmp_path).iloc[1]
    poses_path = Path(row.cameras_uri) / "poses.npy"
    poses = np.load(poses_path)
    poses[2, 3:] = np.nan
    np.save(poses_path, poses)
    with pytest.raises(CameraError, match=r"svid-clip-1.*non-finite"):
        load_source_cameras(row)


def test_zero_focal_names_the_clip(tmp_path: Path) -> None:
    row = _manifest("omniworld", tmp_path).iloc[0]
    camera = json.loads(Path(row.cameras_uri).read_text())
    camera["focals"][3] = 0.0
    Path(row.cameras_uri).write_text(json.dumps(camera))
    with pytest.raises(CameraError, match=rf"{row.clip_id}.*non-positive focal length"):
        load_source_cameras(row)


def test_too_few_sparse_poses_cannot_cover_the_clip(tmp_path: Path) -> None:
    row = _manifest("spatialvid", tmp_path).iloc[0]
    folder = Path(row.cameras_uri)
    for name in ("poses.npy", "intrinsics.npy"):
        np.save(folder / name, np.load(folder / name)[:2])
    (folder / "indexes.txt").write_text("0 0\n1 3\n")
    with pytest.raises(CameraError, match=r"svid-clip-0: poses at frames 0\.\.3 cannot cover the clip's 13 frames"):
        load_source_cameras(row)


def test_pose_count_must_match_frame_count(tmp_path: Path) -> None:
    row = _manifest("dl3dv", tmp_path).iloc[0]
    transforms = json.loads(Path(row.cameras_uri).read_text())
    transforms["frames"] = transforms["frames"][:-1]
    Path(row.cameras_uri).write_text(json.dumps(transforms))
    with pytest.raises(CameraError, match=rf"{row.clip_id}: 12 cameras for a clip of 13 frames"):
        load_source_cameras(row)
    game = _manifest("sekai_game", tmp_path).iloc[0]
    with np.load(game.cameras_uri) as z:
        np.savez(game.cameras_uri, extrinsic=z["extrinsic"][:5], intrinsic=z["intrinsic"])
    with pytest.raises(CameraError, match=rf"{game.clip_id}: .* has 5 poses for a clip of 13 frames"):
        load_source_cameras(game)


def test_omniworld_split_shorter_than_its_frames_is_rejected(tmp_path: Path) -> None:
    row = _manifest("omniworld", tmp_path).iloc[1]
    camera = json.loads(Path(row.cameras_uri).read_text())
    camera["quats"], camera["trans"] = camera["quats"][:-3], camera["trans"][:-3]
    Path(row.cameras_uri).write_text(json.dumps(camera))
    with pytest.raises(CameraError, match=rf"{row.clip_id}: quat_wxyz has shape \(10, 4\), expected \(13, 4\)"):
        load_source_cameras(row)
