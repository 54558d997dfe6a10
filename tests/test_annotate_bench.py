"""bench/annotate.py --smoke: runs end to end and writes the summary the issue names; clips written
here are timed again without open3d and av (the GPU machine's case)."""

from __future__ import annotations

import json
import math

from _bench_fixtures import run_smoke

SUMMARY_KEYS = (
    "focal_err_ratio_single_k_over_per_frame_k",
    "metric_scale_err",
    "ate_after_ba_over_input",
    "rss_ratio_3600_over_600",
)


def test_smoke_run_writes_summary_table_and_memory_cases(tmp_path):
    out_json, out_md = tmp_path / "annotate.json", tmp_path / "annotate.md"
    run_smoke("annotate.py", "--json", str(out_json), "--md", str(out_md))
    result = json.loads(out_json.read_text())
    summary = result["summary"]
    assert all(key in summary for key in SUMMARY_KEYS)
    assert summary["focal_err_ratio_single_k_over_per_frame_k"] > 0 and summary["metric_scale_err"] >= 0
    assert summary["rss_ratio_240_over_120"] > 0 and summary["throughput_frames_per_s"] > 0
    assert [c["zoom"] > 0 for c in result["clips"]] == [False, True]
    assert {case["frames"] for case in result["memory"].values()} == {120, 240}
    assert all(case["peak_rss_mb"] >= case["peak_rss_before_ba_mb"] > 0 for case in result["memory"].values())
    table = out_md.read_text()
    assert "(c) our BA, per-frame K" in table and "`metric_scale_err`" in table


def test_throughput_reads_written_clips_without_open3d_and_av(tmp_path):
    clips, out_json, out_md = tmp_path / "clips", tmp_path / "throughput.json", tmp_path / "throughput.md"
    run_smoke("annotate.py", "--write-clips", str(clips))
    index = json.loads((clips / "index.json").read_text())
    assert [c["frames"] for c in index["clips"]] == [12, 12] and index["size"] == [128, 80]
    run_smoke("annotate.py", "--read-clips", str(clips), "--json", str(out_json), "--md", str(out_md),
              block=("open3d", "av"))
    result = json.loads(out_json.read_text())
    summary = result["summary"]
    assert math.isfinite(summary["throughput_frames_per_s"]) and summary["throughput_frames_per_s"] > 0
    assert summary["frames"] == sum(c["frames"] for c in result["clips"]) == 24
    assert set(summary["stage_s"]) == {"backends", "fusion", "tracks", "bundle_adjust"}
    assert all(c["ate_sim3_m"] < 0.1 for c in result["clips"])  # a fast but broken path would show here
    assert result["setup"]["decode"].startswith("excluded")
    assert "frames/s (backends..BA)" in out_md.read_text()
