"""ShardWriter: deterministic bytes, temp-then-rename, rolling limits, index offsets, verify."""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import replace

import numpy as np
import pytest
from _shard_fixtures import make_cameras, make_sample

from wmkit.datasets.sample import Sample, SampleError
from wmkit.datasets.shard_format import read_index, sample_sha256
from wmkit.datasets.shard_index import read_sample, shard_stats, verify_shards
from wmkit.datasets.shard_writer import ShardWriter


def _write(out_dir, samples, **kw) -> list[str]:
    with ShardWriter(out_dir, **kw) as writer:
        for sample in samples:
            writer.write(sample)
    return writer.published


def _sha256s(out_dir) -> dict[str, str]:
    return {
        name: hashlib.sha256(open(os.path.join(out_dir, name), "rb").read()).hexdigest()
        for name in sorted(os.listdir(out_dir))
    }


def test_sample_members_round_trip():
    sample = make_sample("clip_a", depth=True)
    members = sample.to_members()
    assert sorted(members) == ["cameras.npz", "depth.npz", "json", "mp4"]
    back = Sample.from_members("clip_a", members)
    assert back.mp4 == sample.mp4 and back.meta == sample.meta
    np.testing.assert_array_equal(back.cameras.c2w, sample.cameras.c2w)
    np.testing.assert_array_equal(back.depth, sample.depth)
    assert back.depth.dtype == np.float16 and back.depth_valid.dtype == np.bool_
    assert back.to_members() == members


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("cameras.npz"), r"clip_a: missing members \['cameras.npz'\]"),
        (lambda m: m.update({"cameras.npz": b"not an npz"}), "clip_a: cameras.npz: unreadable"),
        (lambda m: m.update({"json": b'{"num_frames": 6'}), "clip_a: unreadable json"),
        (lambda m: m.update({"txt": b"x"}), r"clip_a: unknown members \['txt'\]"),
    ],
    ids=["missing", "bad-npz", "bad-json", "unknown"],
)
def test_from_members_errors_name_the_key(edit, message):
    members = make_sample("clip_a").to_members()
    edit(members)
    with pytest.raises(SampleError, match=message):
        Sample.from_members("clip_a", members)


def test_from_members_rejects_frame_count_mismatch():
    members = make_sample("clip_a", num_frames=6).to_members()
    members["cameras.npz"] = make_cameras(5).to_npz_bytes()
    with pytest.raises(SampleError, match="clip_a: cameras have T=5 frames but json num_frames=6"):
        Sample.from_members("clip_a", members)


def test_two_runs_give_identical_shards(tmp_path):
    samples = [make_sample(f"clip_{i}", seed=i % 2, depth=i == 1) for i in range(5)]
    _write(tmp_path / "a", samples, max_count=2)
    _write(tmp_path / "b", samples, max_count=2)
    a, b = _sha256s(tmp_path / "a"), _sha256s(tmp_path / "b")
    assert list(a) == ["index.parquet", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert a == b


def test_members_are_sorted_with_pinned_metadata(tmp_path):
    _write(tmp_path, [make_sample("clip_0", depth=True), make_sample("clip_1")])
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [
        "clip_0.cameras.npz", "clip_0.depth.npz", "clip_0.json", "clip_0.mp4",
        "clip_1.cameras.npz", "clip_1.json", "clip_1.mp4",
    ]  # fmt: skip
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {(0, 0, 0, "", "", 0o444)}


def test_shard_has_temporary_name_until_complete(tmp_path):
    with ShardWriter(tmp_path, max_count=2) as writer:
        writer.write(make_sample("clip_0"))
        assert os.listdir(tmp_path) == ["shard-000000.tar.tmp"]
        writer.write(make_sample("clip_1"))
        writer.write(make_sample("clip_2"))  # rolls: shard 0 is complete and published
        assert sorted(os.listdir(tmp_path)) == ["index.parquet", "shard-000000.tar", "shard-000001.tar.tmp"]
        assert list(read_index(tmp_path)["key"]) == ["clip_0", "clip_1"]
    assert sorted(os.listdir(tmp_path)) == ["index.parquet", "shard-000000.tar", "shard-000001.tar"]
    assert list(read_index(tmp_path)["key"]) == ["clip_0", "clip_1", "clip_2"]


def test_exception_mid_write_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path) as writer:
            writer.write(make_sample("clip_0"))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_bad_sample_raises_naming_key_and_leaves_no_trace(tmp_path):
    bad_t = replace(make_sample("clip_bad"), cameras=make_cameras(4))
    nan_pose = make_sample("clip_nan")
    c2w = nan_pose.cameras.c2w.copy()
    c2w[2, 0, 3] = np.nan
    nan_pose = replace(nan_pose, cameras=replace(nan_pose.cameras, c2w=c2w))
    with ShardWriter(tmp_path) as writer:
        writer.write(make_sample("clip_0"))
        with pytest.raises(SampleError, match="clip_bad: cameras have T=4 frames but json num_frames=6"):
            writer.write(bad_t)
        with pytest.raises(SampleError, match="clip_nan: non-finite c2w at frames \\[2\\]"):
            writer.write(nan_pose)
        with pytest.raises(SampleError, match="'clip.dot' must match"):
            writer.write(replace(make_sample("x"), key="clip.dot"))
        with pytest.raises(SampleError, match="clip_0: duplicate key"):
            writer.write(make_sample("clip_0"))
        writer.write(make_sample("clip_1"))
    assert list(read_index(tmp_path)["key"]) == ["clip_0", "clip_1"]
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        assert {n.partition(".")[0] for n in tar.getnames()} == {"clip_0", "clip_1"}
    assert verify_shards(tmp_path).ok


def test_count_and_byte_limits_roll_shards(tmp_path):
    samples = [make_sample(f"clip_{i}", seed=i) for i in range(7)]
    assert _write(tmp_path / "count", samples, max_count=3) == [f"shard-00000{i}.tar" for i in range(3)]
    assert read_index(tmp_path / "count").groupby("shard").size().tolist() == [3, 3, 1]

    max_bytes = 3 * 10240
    published = _write(tmp_path / "bytes", samples, max_bytes=max_bytes)
    index = read_index(tmp_path / "bytes")
    assert len(published) > 1 and len(index) == 7
    for shard in published:
        size = os.path.getsize(tmp_path / "bytes" / shard)
        assert size <= max_bytes or (index["shard"] == shard).sum() == 1


def test_index_offsets_point_at_first_member(tmp_path):
    samples = [make_sample(f"clip_{i}", seed=i, depth=i % 2 == 0) for i in range(4)]
    _write(tmp_path, samples)
    index = read_index(tmp_path)
    with open(tmp_path / "shard-000000.tar", "rb") as f:
        data = f.read()
    for sample, row in zip(samples, index.itertuples()):
        header = tarfile.TarInfo.frombuf(data[row.offset : row.offset + 512], "utf-8", "surrogateescape")
        assert header.name == f"{sample.key}.cameras.npz"
        assert row.sha256 == sample_sha256(sample.to_members())
        assert row.num_frames == 6
    # spans tile the tar: each sample ends where the next begins
    assert (index["offset"] + index["bytes"]).tolist()[:-1] == index["offset"].tolist()[1:]
    back = read_sample(tmp_path, "clip_2")
    assert back.to_members() == samples[2].to_members()


def test_resume_appends_next_shard_index(tmp_path):
    _write(tmp_path, [make_sample("clip_0"), make_sample("clip_1")], max_count=1)
    open(tmp_path / "shard-000002.tar.tmp", "wb").write(b"stale partial shard")
    published = _write(tmp_path, [make_sample("clip_2")])
    assert published == ["shard-000002.tar"]
    assert list(read_index(tmp_path)["shard"]) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with pytest.raises(SampleError, match="clip_0: duplicate key \\(already in shard-000000.tar\\)"):
        _write(tmp_path, [make_sample("clip_0")])
    assert verify_shards(tmp_path).ok


def test_verify_names_flipped_byte_and_stats(tmp_path):
    _write(tmp_path, [make_sample(f"clip_{i}", seed=i, source="spatialvid" if i else "local") for i in range(3)])
    assert verify_shards(tmp_path).ok
    stats = shard_stats(tmp_path)
    assert stats.loc["total", "samples"] == 3 and stats.loc["total", "frames"] == 18
    assert stats.loc["spatialvid", "samples"] == 2
    assert stats.loc["total", "hours"] == pytest.approx(18 / 8.0 / 3600)

    row = read_index(tmp_path).set_index("key").loc["clip_1"]
    path = tmp_path / "shard-000000.tar"
    data = bytearray(path.read_bytes())
    data[row["offset"] + row["bytes"] - 600] ^= 0xFF  # inside clip_1's mp4 data
    path.write_bytes(bytes(data))
    report = verify_shards(tmp_path)
    assert not report.ok
    assert report.problems == ["shard-000000.tar: sample clip_1: sha256 mismatch (corrupt member bytes)"]


def test_verify_reports_missing_and_unlisted_shards(tmp_path):
    _write(tmp_path, [make_sample("clip_0"), make_sample("clip_1")], max_count=1)
    os.rename(tmp_path / "shard-000001.tar", tmp_path / "extra-000000.tar")
    problems = verify_shards(tmp_path).problems
    assert "extra-000000.tar: tar is not listed in the index" in problems
    assert "shard-000001.tar: listed in the index but missing on disk" in problems


def test_verify_check_video_compares_decoded_frames(tmp_path):
    from _shard_fixtures import clip_frames, encode_mp4

    short_video = replace(make_sample("clip_short"), mp4=encode_mp4(clip_frames(5)))  # cameras/json say 6
    _write(tmp_path, [make_sample("clip_ok"), short_video])
    assert verify_shards(tmp_path).ok  # without decoding, the mismatch is invisible
    problems = verify_shards(tmp_path, check_video=True).problems
    assert problems == ["shard-000000.tar: sample clip_short: mp4 has 5 frames, cameras have 6"]
