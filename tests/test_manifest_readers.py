"""Catalogue readers on tiny catalogues in each source's real layout (tests/_source_fixtures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import _source_fixtures as fx
from wmkit.manifests.readers import READERS, build_manifest
from wmkit.manifests.schema import COLUMNS, SOURCES, ManifestError, validate


def _extra(df: pd.DataFrame, i: int = 0) -> dict:
    return json.loads(df["extra"].iloc[i])


def _assert_video_row(row: pd.Series) -> None:
    assert (row.fps, row.width, row.height, row.num_frames) == (fx.FPS, fx.WIDTH, fx.HEIGHT, fx.FRAMES)
    assert row.start_s == 0.0
    assert row.end_s == pytest.approx(fx.FRAMES / fx.FPS, abs=1e-3)
    assert Path(row.media_uri).is_absolute() and Path(row.media_uri).exists()


def test_registry_covers_every_source_and_rejects_unknown(tmp_path: Path) -> None:
    assert set(READERS) == set(SOURCES)
    with pytest.raises(ManifestError, match=r"unknown source 'youtube'.*spatialvid.*local"):
        build_manifest("youtube", tmp_path)


def test_spatialvid_maps_spaced_columns_and_keeps_the_rest(tmp_path: Path) -> None:
    root = fx.write_spatialvid(tmp_path / "svid")
    df = build_manifest("spatialvid", root)
    validate(df)
    assert list(df.columns) == list(COLUMNS)
    assert df["source_id"].tolist() == ["svid-clip-0", "svid-clip-1"]
    row = df.iloc[0]
    _assert_video_row(row)
    assert row.clip_id == "svid-clip-0"
    assert row.caption == "a street, clip 0"  # caption.json SceneDescription
    assert row.license == "CC-BY-NC-SA-4.0"
    assert row.cameras_uri == str(root.resolve() / "annotations/group_0001/svid-clip-0")
    assert row.depth_uri.endswith("depths/group_0001/svid-clip-0.zip") and df["depth_uri"].iloc[1] == ""
    extra = _extra(df)
    kept = ("aesthetic score", "luminance score", "motion score", "ocr score", "moveDist", "group id", "weather")
    assert set(kept) <= set(extra)
    assert extra["aesthetic score"] == "5.1"
    assert not {"id", "video path", "num frames", "fps", "resolution"} & set(extra)


def test_spatialvid_bad_rows_are_named_and_collected(tmp_path: Path) -> None:
    root = fx.write_spatialvid(tmp_path / "svid", n_clips=3)
    (root / "videos/group_0001/svid-clip-1.mp4").unlink()
    fx.set_csv_cell(root / "data/train/SpatialVID_HQ_metadata.csv", 2, "num frames", "thirteen")
    with pytest.raises(ManifestError, match=r"spatialvid row 'svid-clip-1': missing video file .*svid-clip-1\.mp4"):
        build_manifest("spatialvid", root)
    bad: list[tuple[str, str]] = []
    df = build_manifest("spatialvid", root, errors=bad)
    assert df["source_id"].tolist() == ["svid-clip-0"]
    assert [b[0] for b in bad] == ["svid-clip-1", "svid-clip-2"]
    assert "missing video file" in bad[0][1]
    assert "'num frames'" in bad[1][1] and "'thirteen' is not a number" in bad[1][1]


def test_malformed_catalogue_file_raises_naming_file_and_line(tmp_path: Path) -> None:
    root = fx.write_spatialvid(tmp_path / "svid")
    catalogue = root / "data/train/SpatialVID_HQ_metadata.csv"
    catalogue.write_text(catalogue.read_text() + "extra-clip,1,a.mp4,a,13,24,64x48" + ",x" * 40 + "\n")
    with pytest.raises(ManifestError, match=r"SpatialVID_HQ_metadata\.csv line 4: .*fields, header has 22"):
        build_manifest("spatialvid", root, errors=[])
    catalogue.write_text("id,video path\nx,y\n")
    with pytest.raises(ManifestError, match=r"missing columns \['annotation path'"):
        build_manifest("spatialvid", root, errors=[])


def test_sekai_walk_reads_a_caption_over_200kb(tmp_path: Path) -> None:
    root = fx.write_sekai_walk(tmp_path / "sekai")
    df = build_manifest("sekai_walk", root)
    row = df.iloc[0]
    _assert_video_row(row)
    assert len(row.caption.encode()) > 200_000
    assert row.source_id == "sekai-real-walking-hq/yt000000000_0000000_0000013.mp4"
    assert row.clip_id == "sekai-real-walking-hq_yt000000000_0000000_0000013_mp4"
    assert row.cameras_uri == "" and row.license.startswith("LicenseRef-Sekai")
    extra = _extra(df)
    assert {"cameraFile", "location", "scene", "crowdDensity", "weather", "timeOfDay"} <= set(extra)


def test_sekai_game_points_at_camera_npz_and_reports_missing_ones(tmp_path: Path) -> None:
    root = fx.write_sekai_game(tmp_path / "sekai")
    df = build_manifest("sekai_game", root)
    _assert_video_row(df.iloc[0])
    assert df["cameras_uri"].iloc[0].endswith("sekai-game-walking/game0000.npz")
    (root / "sekai-game-walking/game0001.npz").unlink()
    bad: list[tuple[str, str]] = []
    df = build_manifest("sekai_game", root, errors=bad)
    assert len(df) == 1
    assert bad[0][0] == "sekai-game-walking/game0001.mp4" and "missing camera file" in bad[0][1]


def test_miradata_sanitises_dotted_ids_and_drops_unnamed_columns(tmp_path: Path) -> None:
    root = fx.write_miradata(tmp_path / "mira")
    df = build_manifest("miradata", root)
    row = df.iloc[0]
    _assert_video_row(row)
    assert (row.source_id, row.clip_id) == ("1234.5678", "1234_5678")
    assert row.caption == "A dense plaza caption 0."
    extra = _extra(df)
    assert {"video_id", "timestamp", "short_caption", "camera_caption", "frame_number", "source"} <= set(extra)
    assert "" not in extra and not any(k.startswith("unnamed_") for k in extra)
    fx.set_csv_cell(root / "miradata_v1_9k.csv", 1, "", "stray note")
    assert _extra(build_manifest("miradata", root), 1)["unnamed_19"] == "stray note"


def test_miradata_unparsable_number_is_a_bad_row(tmp_path: Path) -> None:
    root = fx.write_miradata(tmp_path / "mira")
    fx.set_csv_cell(root / "miradata_v1_9k.csv", 1, "fps", "n/a")
    bad: list[tuple[str, str]] = []
    df = build_manifest("miradata", root, errors=bad)
    assert df["source_id"].tolist() == ["1234.5678"]
    assert bad == [("1235.5679", "column 'fps': 'n/a' is not a number")]


def test_omniworld_one_clip_per_split_with_unicode_resolution(tmp_path: Path) -> None:
    root = fx.write_omniworld(tmp_path / "omni")
    df = build_manifest("omniworld", root)
    assert df["source_id"].tolist() == ["b04f88d1f85a/split_0", "b04f88d1f85a/split_1"]
    assert df["clip_id"].tolist() == ["b04f88d1f85a_split_0", "b04f88d1f85a_split_1"]
    assert (df["width"] == fx.WIDTH).all() and (df["height"] == fx.HEIGHT).all()
    assert (df["num_frames"] == fx.FRAMES).all()
    assert df["start_s"].iloc[1] == pytest.approx(fx.FRAMES / fx.FPS)
    assert df["cameras_uri"].iloc[1].endswith("b04f88d1f85a/camera/split_1.json")
    assert df["depth_uri"].iloc[0].endswith("b04f88d1f85a/depth")
    assert _extra(df, 1) == {"Metric Scale": "2.0", "Split Num": "2", "Test Split Index": "0", "split_index": 1}
    fx.set_csv_cell(root / "metadata/omniworld_game_metadata.csv", 0, "Resolution", "1280 by 720")
    bad: list[tuple[str, str]] = []
    assert build_manifest("omniworld", root, errors=bad).empty
    assert bad == [("b04f88d1f85a", "column 'Resolution': '1280 by 720' is not WIDTHxHEIGHT")]


def test_dl3dv_scene_frames_and_transforms(tmp_path: Path) -> None:
    root = fx.write_dl3dv(tmp_path / "dl3dv")
    df = build_manifest("dl3dv", root)
    row = df.iloc[0]
    _assert_video_row(row)
    assert row.media_uri.endswith("/images_4") and row.cameras_uri.endswith("/transforms.json")
    assert _extra(df) == {"batch": "1K", "sensibility label": "Without any sensitivity information"}
    shutil.rmtree(Path(df["media_uri"].iloc[1]).parent)
    bad: list[tuple[str, str]] = []
    assert len(build_manifest("dl3dv", root, errors=bad)) == 1
    assert bad[0][0] == df["source_id"].iloc[1] and "missing scene folder" in bad[0][1]


def test_dl3dv_gs_finds_latest_iteration_and_lone_ply(tmp_path: Path) -> None:
    root = fx.write_dl3dv_gs(tmp_path / "gs")
    df = build_manifest("dl3dv_gs", root).set_index("source_id")
    trained = df.loc[[s for s in df.index if df.loc[s, "cameras_uri"]][0]]
    assert trained.media_uri.endswith("point_cloud/iteration_30000/point_cloud.ply")
    assert (trained.num_frames, trained.width, trained.height, trained.fps) == (fx.FRAMES, fx.WIDTH, fx.HEIGHT, 0.0)
    assert json.loads(trained.extra) == {
        "iteration": 30000, "num_gaussians": 7, "ply": "point_cloud/iteration_30000/point_cloud.ply"
    }  # fmt: skip
    lone = df[df["cameras_uri"] == ""].iloc[0]
    assert lone.media_uri.endswith("scene.ply") and lone.num_frames == 0 and lone.fps == 0.0
    Path(lone.media_uri).write_bytes(b"not a ply")
    (root / "two-splats").mkdir()
    for name in ("a.ply", "b.ply"):
        shutil.copy(trained.media_uri, root / "two-splats" / name)
    bad: list[tuple[str, str]] = []
    assert len(build_manifest("dl3dv_gs", root, errors=bad)) == 1
    reasons = dict(bad)
    assert "not a PLY file" in reasons[lone.name] and "ambiguous" in reasons["two-splats"]


def test_local_probes_mp4_and_mkv_and_reports_unreadable_files(tmp_path: Path) -> None:
    root = fx.write_local(tmp_path / "local")
    df = build_manifest("local", root)
    assert df["source_id"].tolist() == ["clips/clip_0.mp4", "more/clip_1.mkv"]
    for i in range(2):
        _assert_video_row(df.iloc[i])
    assert _extra(df, 1)["codec"] == "h264" and "matroska" in _extra(df, 1)["container"]
    (root / "broken.MOV").write_bytes(b"\x00" * 64)
    bad: list[tuple[str, str]] = []
    assert len(build_manifest("local", root, errors=bad)) == 2
    assert bad[0][0] == "broken.MOV" and "not a readable video container" in bad[0][1]
