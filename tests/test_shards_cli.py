"""``wmkit shards ingest|verify|stats`` end to end on a SpatialVID-layout catalogue."""

from __future__ import annotations

import pytest
from _source_fixtures import write_spatialvid

from wmkit.cli import build_parser, main
from wmkit.datasets.shard_format import read_index
from wmkit.manifests.readers import build_manifest


@pytest.fixture
def manifest_path(tmp_path):
    root = write_spatialvid(tmp_path / "svid", n_clips=3)
    manifest = build_manifest("spatialvid", root)
    (root / "annotations/group_0001/svid-clip-2/intrinsics.npy").unlink()
    path = tmp_path / "manifest.parquet"
    manifest.to_parquet(path, index=False)
    return str(path)


def test_ingest_verify_stats(tmp_path, manifest_path, capsys):
    out = str(tmp_path / "shards")
    assert main(["shards", "ingest", "--manifest", manifest_path, "--out", out, "--max-count", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("done: 2  failed: 1\n")
    assert "svid-clip-2 [cameras]" in printed and "intrinsics.npy" in printed

    assert main(["shards", "verify", out]) == 0
    assert "2 shards, 2 samples checked: OK" in capsys.readouterr().out

    assert main(["shards", "stats", out]) == 0
    table = capsys.readouterr().out
    assert "spatialvid" in table and "total" in table and "26" in table  # 2 clips x 13 frames

    row = read_index(out).iloc[1]
    path = tmp_path / "shards" / row["shard"]
    data = bytearray(path.read_bytes())
    data[row["offset"] + 600] ^= 0x40
    path.write_bytes(bytes(data))
    assert main(["shards", "verify", out]) == 1
    printed = capsys.readouterr().out
    assert f"{row['shard']}: sample {row['key']}: sha256 mismatch" in printed and "FAILED" in printed


def test_bad_input_exits_2_and_names_it(tmp_path, capsys):
    assert main(["shards", "verify", str(tmp_path / "nope")]) == 1  # reported as a verify problem
    assert "no shard index" in capsys.readouterr().out
    assert main(["shards", "stats", str(tmp_path / "nope")]) == 2
    assert "no shard index" in capsys.readouterr().err
    assert main(["shards", "ingest", "--manifest", str(tmp_path / "m.parquet"), "--out", str(tmp_path)]) == 2
    assert "m.parquet" in capsys.readouterr().err


def test_help_ends_with_examples(capsys):
    for cmd in ("ingest", "verify", "stats"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["shards", cmd, "--help"])
        assert f"wmkit shards {cmd} " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shards", "ingest", "--manifest", "m", "--out", "o", "--size", "640by352"])
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err
