"""`wmkit demo` end to end: the README's first command, on CPU."""

from pathlib import Path

import pytest

from wmkit.cli import main
from wmkit.demo import DEMO_CLIPS, DEMO_FRAMES, DEMO_TRAIN_STEPS


def test_demo_runs_end_to_end(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[7/7]" in out and "summary:" in out
    assert (tmp_path / "manifest_stats.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert f"done: {DEMO_CLIPS}  failed: 0" in out
    assert f'"frames_streamed": {DEMO_CLIPS * DEMO_FRAMES}' in out
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    assert (tmp_path / "generated.mp4").stat().st_size > 0 and (tmp_path / "generated.cameras.npz").is_file()


def test_demo_cameras_match_ground_truth(tmp_path: Path) -> None:
    from wmkit.demo import run_demo

    summary = run_demo(tmp_path)
    assert summary["shards_ok"] and summary["failed"] == 0
    # Only slerp between key poses every 4th frame separates stored from true cameras.
    assert summary["max_position_error_m"] < 0.01
    assert summary["max_rotation_error_deg"] < 3.0
    assert summary["max_focal_error_px"] < 1e-3  # the zoom is linear in time, as is K interpolation
    if isinstance(summary["annotate"], dict):  # the annotate extra is installed
        annotate = summary["annotate"]
        assert annotate["annotated"] == DEMO_CLIPS and annotate["failed"] == 0
        assert annotate["scale_err"] < 0.05  # metric scale from the fused metric depth
        assert annotate["ate_sim3_m"] < 0.05 and annotate["focal_err_rel_mean"] < 0.05  # per-frame K on the zooms
    assert summary["render"] == {"paths": 1, "failed": 0, "shards_ok": True}
    if isinstance(summary["train"], dict):  # the text/vae extras are installed
        assert summary["train"]["steps"] == DEMO_TRAIN_STEPS and summary["train"]["latent_clips"] == DEMO_CLIPS
        assert summary["train"]["loss_last5"] < summary["train"]["loss_first5"]
    # A second run does no work twice: every clip is already in an index, no shard is rewritten
    # (ingested, annotated or rendered).
    tars = sorted(tmp_path.glob("**/*.tar"))
    written = {p: p.stat().st_mtime_ns for p in tars}
    again = run_demo(tmp_path)
    assert again["done"] == DEMO_CLIPS and again["frames_streamed"] == DEMO_CLIPS * DEMO_FRAMES
    assert again["annotate"] == summary["annotate"] and again["render"] == summary["render"]
    assert sorted(tmp_path.glob("**/*.tar")) == tars
    assert {p: p.stat().st_mtime_ns for p in tars} == written
    if isinstance(again["train"], dict):
        assert again["train"]["steps"] == 0  # the training run had finished: it resumes and stops
