"""``wmkit manifest …`` end to end through ``wmkit.cli.main`` on a temp folder."""

from __future__ import annotations

import json
import sys
import types

import pandas as pd
import pytest
from _shard_fixtures import clip_frames, write_mp4

from wmkit.cli import main
from wmkit.manifests.schema import read_manifest, to_manifest, write_manifest

SUBCOMMANDS = ("build", "stats", "filter", "dedup", "split", "merge")


def row(clip_id: str, source: str = "spatialvid", **fields) -> dict:
    """A 10 s 1280x720 clip at 30 fps, its own media file unless told otherwise."""
    base = {
        "clip_id": clip_id,
        "source": source,
        "source_id": clip_id,
        "media_uri": f"{source}/{clip_id}.mp4",
        "start_s": 0.0,
        "end_s": 10.0,
        "fps": 30.0,
        "width": 1280,
        "height": 720,
        "num_frames": 300,
    }
    base.update(fields)
    return base


@pytest.fixture
def two_catalogues(tmp_path):
    """spatialvid.parquet (scored, one repeated entry) and miradata.parquet (an id colliding with spatialvid)."""
    spatialvid = to_manifest(
        [
            row("sv_a", extra=json.dumps({"aesthetic score": 5.0})),
            row("sv_b", extra=json.dumps({"aesthetic score": 3.0})),
            row("sv_c", end_s=3.0, num_frames=90, extra=json.dumps({"aesthetic score": 6.0})),
        ]
    )
    miradata = to_manifest(
        [
            row("sv_a", "miradata", source_id="sv.a", extra=json.dumps({"aesthetic score": 4.8})),
            row("mira_1", "miradata", end_s=20.0, num_frames=600),  # unscored
            # the same catalogue entry as spatialvid's sv_b, listed again
            row("sv_b_again", "spatialvid", source_id="sv_b", media_uri="spatialvid/sv_b.mp4"),
        ]
    )
    paths = {"spatialvid": tmp_path / "spatialvid.parquet", "miradata": tmp_path / "miradata.parquet"}
    write_manifest(spatialvid, str(paths["spatialvid"]))
    write_manifest(miradata, str(paths["miradata"]))
    return paths


def test_help_lists_subcommands_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["manifest", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(cmd in text for cmd in SUBCOMMANDS)
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit):
            main(["manifest", cmd, "--help"])
        text = capsys.readouterr().out
        assert "examples:\n  wmkit manifest " + cmd in text


def test_merge_dedup_filter_split_stats_pipeline(tmp_path, two_catalogues, capsys):
    merged, deduped, kept, split = (tmp_path / f"{name}.parquet" for name in ("merged", "deduped", "kept", "split"))

    assert main(["manifest", "merge", str(two_catalogues["spatialvid"]), str(two_catalogues["miradata"]), "--out", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "1 clip_ids suffixed" in out and f"wrote 6 rows to {merged}" in out
    df = read_manifest(str(merged))
    assert df["clip_id"].tolist() == ["sv_a", "sv_b", "sv_c", "sv_a-2", "mira_1", "sv_b_again"]

    assert main(["manifest", "dedup", str(merged), "--out", str(deduped)]) == 0
    assert "6 rows, 1 duplicates dropped" in capsys.readouterr().out
    assert read_manifest(str(deduped))["clip_id"].tolist() == ["sv_a", "sv_b", "sv_c", "sv_a-2", "mira_1"]

    code = main(
        ["manifest", "filter", str(deduped), "--out", str(kept), "--min-duration", "5", "--score", "aesthetic score=4.5"]
    )
    assert code == 0
    out = capsys.readouterr().out
    removed = {line.rsplit(maxsplit=1)[0]: line.rsplit(maxsplit=1)[1] for line in out.splitlines()[:4]}
    assert removed == {
        "rows in": "5",
        "duration_s >= 5": "-1",  # sv_c
        "extra['aesthetic score'] >= 4.5": "-2",  # sv_b (3.0) and mira_1 (unscored)
        "kept": "2",
    }
    assert read_manifest(str(kept))["clip_id"].tolist() == ["sv_a", "sv_a-2"]

    assert main(["manifest", "split", str(deduped), "--out", str(split), "--val-fraction", "0.5", "--seed", "s1"]) == 0
    out = capsys.readouterr().out
    labels = read_manifest(str(split))["split"]
    assert set(labels) <= {"train", "val"} and len(labels) == 5
    assert f"val: {(labels == 'val').sum()} clips" in out

    png = tmp_path / "charts" / "stats.png"
    assert main(["manifest", "stats", str(deduped), "--png", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["source", "resolution", "clips", "hours", "frames"]
    # sv_a, sv_b, sv_a-2: 10 s / 300 frames each; sv_c 3 s / 90; mira_1 20 s / 600 -> 53 s, 1,590 frames
    assert out[-2].split() == ["all", "all", "5", "0.01", "1,590"]
    assert png.stat().st_size > 10_000


def test_errors_name_the_file_and_exit_non_zero(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    assert main(["manifest", "dedup", str(missing), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "wmkit manifest dedup:" in capsys.readouterr().err
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file")
    assert main(["manifest", "stats", str(garbage)]) == 2
    assert "wmkit manifest stats:" in capsys.readouterr().err
    bad = tmp_path / "bad.parquet"
    to_manifest([row("fine")]).assign(clip_id="has.dot").to_parquet(bad)
    assert main(["manifest", "split", str(bad), "--out", str(tmp_path / "s.parquet"), "--val-fraction", "0.1"]) == 2
    assert "clip_id='has.dot'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["manifest", "filter", str(bad), "--out", str(tmp_path / "o.parquet"), "--score", "no-minimum"])
    assert exit_info.value.code == 2
    assert "expected KEY=MIN" in capsys.readouterr().err


def fake_readers(df: pd.DataFrame, bad_rows: list[tuple[str, str]]) -> types.ModuleType:
    """A stand-in ``wmkit.manifests.readers`` whose build_manifest returns ``df`` and reports ``bad_rows``."""
    module = types.ModuleType("wmkit.manifests.readers")

    def build_manifest(source, root, errors=None):
        assert errors is not None, "the CLI must collect bad rows, not stop at the first"
        errors.extend(bad_rows)
        return df

    module.build_manifest = build_manifest
    return module


def test_build_reports_bad_rows_and_fails_only_when_nothing_was_read(tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.parquet"
    bad = [("clip 7.mp4", "missing video file /data/clip 7.mp4")]
    monkeypatch.setitem(sys.modules, "wmkit.manifests.readers", fake_readers(to_manifest([row("ok")]), bad))
    assert main(["manifest", "build", "--source", "spatialvid", "--root", str(tmp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 unreadable rows:\n  clip 7.mp4: missing video file /data/clip 7.mp4" in text
    assert read_manifest(str(out))["clip_id"].tolist() == ["ok"]

    out.unlink()
    monkeypatch.setitem(sys.modules, "wmkit.manifests.readers", fake_readers(to_manifest([row("x")]).iloc[:0], bad))
    assert main(["manifest", "build", "--source", "spatialvid", "--root", str(tmp_path), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "clip 7.mp4" in captured.out and "nothing written" in captured.err
    assert not out.exists()


def test_build_local_folder_of_videos(tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    write_mp4(videos / "a.mp4", clip_frames(16, seed=1), fps=8.0)
    write_mp4(videos / "sub" / "b.c.mp4", clip_frames(24, seed=2), fps=8.0)
    (videos / "broken.mp4").write_bytes(b"\x00" * 64)
    out = tmp_path / "local.parquet"
    assert main(["manifest", "build", "--source", "local", "--root", str(videos), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 unreadable rows:\n  broken.mp4: " in text
    assert f"wrote 2 rows to {out}" in text
    df = read_manifest(str(out)).sort_values("num_frames", ignore_index=True)
    assert df["source"].tolist() == ["local", "local"]
    assert df["num_frames"].tolist() == [16, 24]
    assert df["fps"].tolist() == [8.0, 8.0]
    assert (df["width"] == 32).all() and (df["height"] == 24).all()
    assert df["clip_id"].str.fullmatch(r"[A-Za-z0-9_-]+").all()

    assert main(["manifest", "stats", str(out)]) == 0
    total = capsys.readouterr().out.splitlines()[-1].split()
    assert total[:3] == ["all", "all", "2"] and total[-1] == "40"


def test_build_of_a_missing_root_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "local.parquet"
    assert main(["manifest", "build", "--source", "local", "--root", str(tmp_path / "absent"), "--out", str(out)]) == 2
    assert "absent" in capsys.readouterr().err
    assert not out.exists()
