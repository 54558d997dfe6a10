"""Manifest operations (filter, dedup, split, merge) and stats on small hand-built manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wmkit.manifests.ops import (
    dedup_manifest,
    extra_score,
    filter_manifest,
    merge_manifests,
    resolve_clip_id_collisions,
    split_group_keys,
    split_manifest,
)
from wmkit.manifests.schema import ManifestError, read_manifest, to_manifest, write_manifest
from wmkit.manifests.stats import format_table, manifest_stats, plot_stats, resolution_bucket


def clip(clip_id: str, **fields) -> dict:
    """One manifest row with plausible defaults (a 10 s 1280x720 spatialvid clip at 30 fps)."""
    row = {
        "clip_id": clip_id,
        "source": "spatialvid",
        "source_id": clip_id,
        "media_uri": f"videos/{clip_id}.mp4",
        "start_s": 0.0,
        "end_s": 10.0,
        "fps": 30.0,
        "width": 1280,
        "height": 720,
        "num_frames": 300,
    }
    if "extra" in fields and isinstance(fields["extra"], dict):
        fields["extra"] = json.dumps(fields["extra"])
    row.update(fields)
    return row


# --------------------------------------------------------------------------- filter


def test_filter_thresholds_and_report_counts():
    df = to_manifest(
        [
            clip("short", end_s=2.0, num_frames=60),
            clip("long", end_s=100.0, num_frames=3000),
            clip("small", width=640, height=360),
            clip("slow", fps=10.0, num_frames=100),
            clip("mira", source="miradata"),
            clip("ok"),
            clip("ok_cam", cameras_uri="cams/ok_cam.npz"),
        ]
    )
    kept, report = filter_manifest(
        df, min_duration_s=5, max_duration_s=60, min_height=720, min_fps=24, sources=["spatialvid"], require_cameras=False
    )
    assert kept["clip_id"].tolist() == ["ok", "ok_cam"]
    assert list(report.removed.values()) == [1, 1, 1, 1, 1]
    assert report.rows_in == 7 and report.rows_out == 2
    text = report.format()
    assert "duration_s >= 5" in text and "source in ['spatialvid']" in text and "kept" in text

    with_cams, report = filter_manifest(df, require_cameras=True)
    assert with_cams["clip_id"].tolist() == ["ok_cam"]
    assert report.removed == {"has cameras_uri": 6}


def test_filter_bounds_are_inclusive_and_no_thresholds_keep_all():
    df = to_manifest([clip("a", end_s=5.0), clip("b", width=1920, height=1080)])
    kept, _ = filter_manifest(df, min_duration_s=5.0, max_duration_s=10.0, min_width=1280)
    assert len(kept) == 2
    kept, report = filter_manifest(df)
    assert len(kept) == 2 and report.removed == {}


def test_score_filter_reads_extra_and_drops_unscored_rows():
    df = to_manifest(
        [
            clip("high", extra={"aesthetic score": 5.2, "motion score": 3.0}),
            clip("low", extra={"aesthetic score": 3.9, "motion score": 9.0}),
            clip("edge", extra={"aesthetic score": 4.5, "motion score": 2.0}),
            clip("unscored", extra={"caption_len": 12}),
            clip("null", extra={"aesthetic score": None}),
        ]
    )
    kept, report = filter_manifest(df, score_min={"aesthetic score": 4.5})
    assert kept["clip_id"].tolist() == ["high", "edge"]
    assert report.removed == {"extra['aesthetic score'] >= 4.5": 3}

    kept, report = filter_manifest(df, score_min={"aesthetic score": 4.5, "motion score": 2.5})
    assert kept["clip_id"].tolist() == ["high"]
    assert list(report.removed.values()) == [3, 1]


def test_score_that_is_not_a_number_names_the_clip():
    df = to_manifest([clip("fine", extra={"aes": 5}), clip("bad_row", extra={"aes": "n/a"})])
    assert extra_score(df.iloc[:1], "aes").tolist() == [5.0]
    with pytest.raises(ManifestError, match="bad_row.*'aes'.*not a number"):
        filter_manifest(df, score_min={"aes": 4.0})


# --------------------------------------------------------------------------- dedup


def test_dedup_same_source_entry_keeps_first():
    df = to_manifest(
        [
            clip("a", caption="first"),
            clip("b"),
            clip("a_again", source_id="a", media_uri="elsewhere/a.mp4", caption="second"),
        ]
    )
    out = dedup_manifest(df)
    assert out["clip_id"].tolist() == ["a", "b"]
    assert out.loc[0, "caption"] == "first"


def test_dedup_same_media_span_within_half_a_frame():
    half_frame = 0.5 / 30.0
    df = to_manifest(
        [
            clip("v_0", media_uri="long.mp4", start_s=0.0, end_s=10.0),
            clip("v_1", media_uri="long.mp4", start_s=10.0, end_s=20.0),
            # same frames as v_0, catalogued by another source with float noise
            clip("m_0", source="miradata", media_uri="long.mp4", start_s=0.9 * half_frame, end_s=10.0 - 0.9 * half_frame),
            # one frame later: a different clip
            clip("v_0_shift", media_uri="long.mp4", start_s=1 / 30.0, end_s=10.0 + 1 / 30.0),
            # same span in another media: a different clip
            clip("other", media_uri="other.mp4", start_s=0.0, end_s=10.0),
            # same start, different end: a different clip
            clip("v_0_long", media_uri="long.mp4", start_s=0.0, end_s=12.0),
        ]
    )
    out = dedup_manifest(df)
    assert out["clip_id"].tolist() == ["v_0", "v_1", "v_0_shift", "other", "v_0_long"]


def test_dedup_unknown_fps_needs_exact_span():
    df = to_manifest(
        [
            clip("scene", source="dl3dv_gs", media_uri="scenes/s1", start_s=0, end_s=0, fps=0, num_frames=0),
            clip("scene_copy", source="dl3dv_gs", media_uri="scenes/s1", start_s=0, end_s=0, fps=0, num_frames=0),
            clip("scene_later", source="dl3dv_gs", media_uri="scenes/s1", start_s=0.01, end_s=0.01, fps=0),
        ]
    )
    assert dedup_manifest(df)["clip_id"].tolist() == ["scene", "scene_later"]


def test_dedup_suffixes_colliding_ids_of_distinct_clips():
    rows = pd.concat(
        [
            to_manifest([clip("abc", source="miradata", source_id="abc.0", media_uri="mira/abc.0.mp4")]),
            to_manifest([clip("abc", source="spatialvid", source_id="abc", media_uri="svid/abc.mp4")]),
            to_manifest([clip("abc", source="omniworld", source_id="abc", media_uri="omni/abc.mp4")]),
        ],
        ignore_index=True,
    )
    out = dedup_manifest(rows)
    assert out["clip_id"].tolist() == ["abc", "abc-2", "abc-3"]
    assert out["source_id"].tolist() == ["abc.0", "abc", "abc"]


# --------------------------------------------------------------------------- merge


def test_merge_resolves_collisions_deterministically_and_skips_taken_ids():
    a = to_manifest([clip("x", source="spatialvid"), clip("x-2", source="spatialvid")])
    b = to_manifest([clip("x", source="miradata", source_id="x.mp4"), clip("y", source="miradata")])
    merged = merge_manifests([a, b])
    assert merged["clip_id"].tolist() == ["x", "x-2", "x-3", "y"]
    assert merged["source"].tolist() == ["spatialvid", "spatialvid", "miradata", "miradata"]
    assert merged.equals(merge_manifests([a, b]))
    # the other order: the first manifest keeps the plain id
    assert merge_manifests([b, a])["clip_id"].tolist() == ["x", "y", "x-3", "x-2"]


def test_merge_then_dedup_removes_an_overlapping_catalogue():
    a = to_manifest([clip("p"), clip("q")])
    merged = merge_manifests([a, a])
    assert merged["clip_id"].tolist() == ["p", "q", "p-2", "q-2"]
    assert dedup_manifest(merged)["clip_id"].tolist() == ["p", "q"]


def test_merge_keeps_split_only_when_every_input_has_it():
    a = split_manifest(to_manifest([clip("a")]), 0.5)
    b = split_manifest(to_manifest([clip("b")]), 0.5)
    c = to_manifest([clip("c")])
    assert "split" in merge_manifests([a, b]).columns
    assert "split" not in merge_manifests([a, c]).columns
    with pytest.raises(ManifestError, match="manifest 1 to merge is missing columns"):
        merge_manifests([a, c.drop(columns=["license"])])


def test_resolve_collisions_is_a_noop_without_repeats():
    df = to_manifest([clip("a"), clip("b")])
    assert resolve_clip_id_collisions(df) is df


# --------------------------------------------------------------------------- split


def many_clips(n: int, start: int = 0) -> pd.DataFrame:
    return to_manifest([clip(f"c{i:05d}") for i in range(start, start + n)])


def test_split_is_deterministic_and_close_to_the_requested_fraction():
    df = many_clips(2000)
    first = split_manifest(df, 0.1)
    second = split_manifest(df.copy(), 0.1)
    assert first["split"].tolist() == second["split"].tolist()
    assert set(first["split"]) == {"train", "val"}
    fraction = (first["split"] == "val").mean()
    assert abs(fraction - 0.1) < 0.02  # binomial sd at n=2000 is 0.0067
    # a different seed draws a different split of similar size
    other = split_manifest(df, 0.1, seed="another")
    assert (other["split"] != first["split"]).any()
    assert abs((other["split"] == "val").mean() - 0.1) < 0.02


def test_split_is_stable_when_rows_are_appended_or_reordered():
    df = many_clips(300)
    before = split_manifest(df, 0.2).set_index("clip_id")["split"]
    grown = pd.concat([many_clips(200, start=300), df], ignore_index=True)
    after = split_manifest(grown.sample(frac=1.0, random_state=0), 0.2).set_index("clip_id")["split"]
    assert after.loc[before.index].tolist() == before.tolist()


def test_split_extremes():
    df = many_clips(50)
    assert (split_manifest(df, 0.0)["split"] == "train").all()
    assert (split_manifest(df, 1.0)["split"] == "val").all()
    with pytest.raises(ValueError, match="val_fraction"):
        split_manifest(df, 1.5)


def test_split_keeps_scenes_and_media_together():
    rows = []
    for scene in range(60):  # 60 scenes of 4 clips, each clip its own video file
        rows += [clip(f"s{scene}_c{k}", extra={"scene_id": f"scene{scene}"}) for k in range(4)]
    for video in range(60):  # 60 long videos cut in 3 clips, no scene key
        rows += [clip(f"v{video}_c{k}", media_uri=f"long/{video}.mp4", start_s=10.0 * k, end_s=10.0 * k + 10) for k in range(3)]
    df = to_manifest(rows)
    out = split_manifest(df, 0.3)
    groups = split_group_keys(df)
    assert groups.nunique() == 120
    assert groups.iloc[0] == "scene_id=scene0" and groups.iloc[-1] == "media_uri=long/59.mp4"
    splits_per_group = out.groupby(groups.to_numpy())["split"].nunique()
    assert (splits_per_group == 1).all()
    assert set(out["split"]) == {"train", "val"}


def test_split_manifest_roundtrips_through_parquet(tmp_path):
    out = split_manifest(many_clips(20), 0.5)
    path = tmp_path / "split.parquet"
    write_manifest(out, str(path))
    back = read_manifest(str(path))
    assert back["split"].tolist() == out["split"].tolist()
    assert back["clip_id"].tolist() == out["clip_id"].tolist()


# --------------------------------------------------------------------------- stats


def stats_fixture() -> pd.DataFrame:
    return to_manifest(
        [
            clip("a", end_s=3600.0, num_frames=108000),  # 1 h of 720p
            clip("b", start_s=10.0, end_s=1810.0, width=1920, height=1080, num_frames=54000),  # 0.5 h 1080p
            clip("c", end_s=1800.0, width=1280, height=704, num_frames=54000),  # 720p bucket despite 704
            clip("d", source="miradata", end_s=720.0, fps=24.0, width=640, height=360, num_frames=17280),
            clip("e", source="dl3dv_gs", media_uri="scenes/e", end_s=0.0, fps=0.0, width=0, height=0, num_frames=0),
        ]
    )


def test_resolution_buckets_use_the_short_side():
    width = pd.Series([0, 64, 1280, 720, 1920, 3840, 426])
    height = pd.Series([0, 48, 704, 1280, 1080, 2160, 240])
    assert list(resolution_bucket(width, height)) == ["unknown", "<240p", "720p", "720p", "1080p", "2160p+", "240p"]


def test_stats_numbers_are_exact():
    stats = manifest_stats(stats_fixture())
    rows = {(r.source, r.resolution): (r.clips, r.hours, r.frames) for r in stats.itertuples(index=False)}
    assert list(rows) == [
        ("dl3dv_gs", "unknown"),
        ("dl3dv_gs", "all"),
        ("miradata", "360p"),
        ("miradata", "all"),
        ("spatialvid", "720p"),
        ("spatialvid", "1080p"),
        ("spatialvid", "all"),
        ("all", "all"),
    ]
    assert rows["spatialvid", "720p"] == (2, 1.5, 162000)
    assert rows["spatialvid", "1080p"] == (1, 0.5, 54000)
    assert rows["spatialvid", "all"] == (3, 2.0, 216000)
    assert rows["miradata", "360p"] == (1, 0.2, 17280)
    assert rows["dl3dv_gs", "unknown"] == (1, 0.0, 0)
    assert rows["all", "all"] == (5, 2.2, 233280)


def test_format_table_is_aligned_text():
    text = format_table(manifest_stats(stats_fixture()))
    lines = text.splitlines()
    assert lines[0].split() == ["source", "resolution", "clips", "hours", "frames"]
    assert len(lines) == 9 and len({len(line) for line in lines}) == 1
    assert lines[-1].split() == ["all", "all", "5", "2.20", "233,280"]


def test_plot_stats_writes_a_png(tmp_path):
    path = tmp_path / "stats.png"
    plot_stats(manifest_stats(stats_fixture()), path)
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 400
        # a chart, not a blank canvas: many distinct colours
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 20


def test_stats_of_an_empty_manifest():
    empty = stats_fixture().iloc[:0]
    stats = manifest_stats(empty)
    assert stats.to_dict("records") == [{"source": "all", "resolution": "all", "clips": 0, "hours": 0.0, "frames": 0}]
