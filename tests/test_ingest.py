"""ingest_manifest: clips -> shards, failures as status rows, resume, retry, workers."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import types

import numpy as np
import pandas as pd
import pytest
from _shard_fixtures import FPS, HEIGHT, WIDTH, clip_frames, make_cameras, write_mp4

from wmkit.datasets.cameras import Cameras
from wmkit.datasets.ingest import ClipError, IngestConfig, build_sample, ingest_manifest, read_status
from wmkit.datasets.shard_format import read_index
from wmkit.datasets.shard_index import read_sample, verify_shards
from wmkit.manifests.schema import to_manifest

T = 6


@pytest.fixture
def npz_cameras(monkeypatch):
    """Route load_source_cameras to wmkit-format ``cameras.npz`` files named by ``cameras_uri``.

    Tests the ingest mechanics apart from any source's camera layout.
    """

    def load(row):
        return Cameras.load(row["cameras_uri"])

    try:
        module = importlib.import_module("wmkit.datasets.source_cameras")
    except ImportError:
        module = types.ModuleType("wmkit.datasets.source_cameras")
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(module, "load_source_cameras", load, raising=False)


def _clip(root, clip_id: str, *, seed: int = 0, cameras: Cameras | None = None, video: bytes | None = None) -> dict:
    """Write one clip's mp4 and cameras.npz under ``root``; return its manifest row."""
    media = os.path.join(root, f"{clip_id}.mp4")
    if video is None:
        write_mp4(media, clip_frames(T, seed))
    else:
        open(media, "wb").write(video)
    cams_path = os.path.join(root, f"{clip_id}.cameras.npz")
    if cameras is not False:
        (cameras or make_cameras(T)).save(cams_path)
    return {
        "clip_id": clip_id,
        "source": "local",
        "source_id": f"{clip_id}.mp4",
        "media_uri": media,
        "start_s": 0.0,
        "end_s": T / FPS,
        "fps": FPS,
        "width": WIDTH,
        "height": HEIGHT,
        "num_frames": T,
        "caption": f"caption of {clip_id}",
        "license": "CC-BY-4.0",
        "cameras_uri": cams_path,
        "extra": json.dumps({"aesthetic score": 4.5}),
    }


def _bad_cameras(edit) -> Cameras:
    cams = make_cameras(T)
    c2w, K = cams.c2w.copy(), cams.K.copy()
    edit(c2w, K)
    return Cameras(c2w, K, cams.t, cams.frame_index, cams.metric, cams.scale_confidence)


def _sha256s(out_dir) -> dict[str, str]:
    names = sorted(n for n in os.listdir(out_dir) if n.endswith(".tar"))
    return {n: hashlib.sha256(open(os.path.join(out_dir, n), "rb").read()).hexdigest() for n in names}


def test_build_sample_makes_a_valid_sample(tmp_path, npz_cameras):
    row = to_manifest([_clip(tmp_path, "clip_a")]).iloc[0].to_dict()
    sample = build_sample(row, IngestConfig())
    assert sample.key == "clip_a" and sample.num_frames == T
    meta = sample.meta
    assert meta["size"] == [WIDTH, HEIGHT] and meta["fps"] == FPS and meta["num_frames"] == T
    assert meta["source_id"] == "clip_a.mp4" and meta["extra"] == {"aesthetic score": 4.5}
    assert meta["provenance"]["config_hash"] == IngestConfig().config_hash()
    assert meta["provenance"]["wmkit_version"]

    small = build_sample(row, IngestConfig(size=(16, 12)))
    assert small.meta["size"] == [16, 12]
    np.testing.assert_allclose(small.cameras.K[:, 0, 0], sample.cameras.K[:, 0, 0] / 2)
    assert small.meta["provenance"]["config_hash"] != meta["provenance"]["config_hash"]


def test_failures_are_recorded_and_the_run_goes_on(tmp_path, npz_cameras):
    rows = [
        _clip(tmp_path, "good_0", seed=0),
        _clip(tmp_path, "corrupt_video", video=b"\x00not a video" * 50),
        _clip(tmp_path, "missing_cameras", cameras=False),
        _clip(tmp_path, "nan_pose", cameras=_bad_cameras(lambda c2w, K: c2w.__setitem__((3, 0, 3), np.nan))),
        _clip(tmp_path, "zero_focal", cameras=_bad_cameras(lambda c2w, K: K.__setitem__((2, 0, 0), 0.0))),
        _clip(tmp_path, "frame_mismatch", cameras=make_cameras(T - 1)),
        _clip(tmp_path, "good_1", seed=1),
    ]
    out = tmp_path / "shards"
    status = ingest_manifest(to_manifest(rows), out, max_count=1, progress=False).set_index("clip_id")

    assert status.loc[["good_0", "good_1"], "status"].tolist() == ["done", "done"]
    assert status.loc[["good_0", "good_1"], "shard"].tolist() == ["shard-000000.tar", "shard-000001.tar"]
    failed = status[status["status"] == "failed"]
    assert dict(failed["stage"]) == {
        "corrupt_video": "decode",
        "missing_cameras": "cameras",
        "nan_pose": "cameras",
        "zero_focal": "cameras",
        "frame_mismatch": "frames",
    }
    assert "non-finite c2w" in failed.loc["nan_pose", "reason"]
    assert "non-positive focal" in failed.loc["zero_focal", "reason"]
    assert "5" in failed.loc["frame_mismatch", "reason"] and "6" in failed.loc["frame_mismatch", "reason"]
    assert "corrupt_video.mp4" in failed.loc["corrupt_video", "reason"]
    assert (failed["shard"] == "").all() and status["finished_at"].notna().all()

    # failed clips leave nothing: the shards hold exactly the good clips
    assert list(read_index(out)["key"]) == ["good_0", "good_1"]
    assert sorted(os.listdir(out)) == ["index.parquet", "shard-000000.tar", "shard-000001.tar", "status.parquet"]
    assert verify_shards(out).ok
    pd.testing.assert_frame_equal(read_status(out).set_index("clip_id"), status)
    assert read_sample(out, "good_1").meta["caption"] == "caption of good_1"


def test_resume_skips_done_and_retry_failed_retries(tmp_path, npz_cameras):
    rows = [_clip(tmp_path, f"clip_{i}", seed=i) for i in range(3)]
    rows.append(_clip(tmp_path, "late_cameras", cameras=False))
    out = tmp_path / "shards"
    first = ingest_manifest(to_manifest(rows[:2]), out, max_count=1, progress=False)
    assert first["status"].tolist() == ["done", "done"]
    before = _sha256s(out)

    second = ingest_manifest(to_manifest(rows), out, max_count=1, progress=False).set_index("clip_id")
    assert _sha256s(out).items() >= before.items()  # earlier shards untouched
    assert second.loc["clip_2", "shard"] == "shard-000002.tar"  # next free index
    assert second.loc["late_cameras", "status"] == "failed"
    assert second.loc["clip_0", "finished_at"] == first.set_index("clip_id").loc["clip_0", "finished_at"]

    make_cameras(T).save(rows[3]["cameras_uri"])  # the cameras arrive
    third = ingest_manifest(to_manifest(rows), out, max_count=1, progress=False).set_index("clip_id")
    assert third.loc["late_cameras", "status"] == "failed"  # not retried by default
    assert len(read_index(out)) == 3

    fourth = ingest_manifest(to_manifest(rows), out, max_count=1, retry_failed=True, progress=False)
    fourth = fourth.set_index("clip_id")
    assert fourth.loc["late_cameras", ["status", "stage", "reason", "shard"]].tolist() == [
        "done", "", "", "shard-000003.tar"
    ]  # fmt: skip
    assert list(read_index(out)["key"]) == ["clip_0", "clip_1", "clip_2", "late_cameras"]
    assert verify_shards(out).ok


def test_crash_mid_run_keeps_published_shards_and_resumes(tmp_path, npz_cameras, monkeypatch):
    rows = [_clip(tmp_path, f"clip_{i}", seed=i) for i in range(5)]
    out = tmp_path / "shards"
    module = sys.modules["wmkit.datasets.source_cameras"]
    loader = module.load_source_cameras

    def crash_on_clip_3(row):
        if row["clip_id"] == "clip_3":
            raise KeyboardInterrupt  # not an Exception: aborts the run like a kill
        return loader(row)

    monkeypatch.setattr(module, "load_source_cameras", crash_on_clip_3)
    with pytest.raises(KeyboardInterrupt):
        ingest_manifest(to_manifest(rows), out, max_count=2, progress=False)
    assert sorted(os.listdir(out)) == ["index.parquet", "shard-000000.tar", "status.parquet"]
    assert read_status(out)["clip_id"].tolist() == ["clip_0", "clip_1"]  # clip_2 was in the dropped shard

    monkeypatch.setattr(module, "load_source_cameras", loader)
    status = ingest_manifest(to_manifest(rows), out, max_count=2, progress=False)
    assert (status["status"] == "done").all() and len(status) == 5
    assert list(read_index(out)["key"]) == [f"clip_{i}" for i in range(5)]


def test_workers_give_identical_shards(tmp_path, npz_cameras):
    rows = to_manifest([_clip(tmp_path, f"clip_{i}", seed=i) for i in range(4)])
    ingest_manifest(rows, tmp_path / "serial", max_count=3, progress=False)
    ingest_manifest(rows, tmp_path / "pool", max_count=3, progress=False, workers=2)
    assert _sha256s(tmp_path / "serial") == _sha256s(tmp_path / "pool")
    assert len(_sha256s(tmp_path / "pool")) == 2


def test_clip_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(ClipError("clip_a", "decode", "bad bytes")))
    assert (err.clip_id, err.stage, err.reason) == ("clip_a", "decode", "bad bytes")
    assert str(err) == "clip clip_a: decode: bad bytes"


def test_spatialvid_end_to_end_with_real_camera_loader(tmp_path):
    """Real catalogue layout -> manifest -> shards, cameras equal the ground truth."""
    from _source_fixtures import FRAMES, truth_cameras, write_spatialvid

    from wmkit.datasets.shard_reader import ShardDataset
    from wmkit.manifests.readers import build_manifest

    root = write_spatialvid(tmp_path / "svid", n_clips=2)
    manifest = build_manifest("spatialvid", root)
    (root / "annotations/group_0001/svid-clip-1/poses.npy").unlink()  # clip 1 loses its poses
    manifest_path = tmp_path / "manifest.parquet"
    manifest.to_parquet(manifest_path, index=False)

    status = ingest_manifest(str(manifest_path), tmp_path / "shards", progress=False).set_index("clip_id")
    clip0, clip1 = manifest["clip_id"]
    assert status.loc[clip0, "status"] == "done"
    assert status.loc[clip1, ["status", "stage"]].tolist() == ["failed", "cameras"]
    assert "poses.npy" in status.loc[clip1, "reason"]

    (decoded,) = list(ShardDataset(tmp_path / "shards", decode="frames", verify=True))
    truth = truth_cameras(manifest["source_id"][0])
    assert decoded.frames.shape == (FRAMES, 48, 64, 3)
    np.testing.assert_allclose(decoded.sample.cameras.c2w, truth.c2w, atol=1e-4)
    np.testing.assert_allclose(decoded.sample.cameras.K, truth.K, atol=1e-3)
    assert decoded.sample.meta["extra"]["aesthetic score"] in ("5.1", 5.1)
    assert decoded.sample.meta["source"] == "spatialvid"
