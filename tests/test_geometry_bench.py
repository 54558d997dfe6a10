"""bench/geometry.py runs end to end on CPU (--smoke) and writes the summary issue 6 names."""

from __future__ import annotations

import json
import math

from _bench_fixtures import run_smoke


def test_smoke_run_writes_the_summary_and_table(tmp_path):
    out = tmp_path / "geometry.json"
    run_smoke("geometry.py", "--out", str(out), single_thread=True)
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert result["smoke"] is True and summary["device"].endswith("CPU")
    for net in ("pi3x", "moge2"):
        for key in (f"{net}_fps_518", f"{net}_fps_720p", f"{net}_long_clip_peak_mem_gb"):
            assert math.isfinite(summary[key]) and summary[key] > 0, key
        assert summary[f"{net}_fps_518_compiled"] is None  # smoke skips torch.compile
    timed = [c for c in result["cases"] if c["case"] == "fps"]
    assert len(timed) == 4 and all(c["frames"] == result["fps_frames"] for c in timed)
    longs = [c for c in result["cases"] if c["case"] == "long"]
    assert [c["frames"] for c in longs] == [result["long_frames"]] * 2
    assert result["profiles"] == {}  # not asked for
    table = out.with_suffix(".md").read_text()
    assert table.count("| pi3x |") == 3 and table.count("| moge2 |") == 3


def test_smoke_profile_of_one_network(tmp_path):
    out = tmp_path / "geometry.json"
    run_smoke("geometry.py", "--out", str(out), "--nets", "moge2", "--profile", single_thread=True)
    result = json.loads(out.read_text())
    assert list(result["profiles"]) == ["moge2"] and "Self CPU" in result["profiles"]["moge2"]
    assert {c["net"] for c in result["cases"]} == {"moge2"} and result["summary"]["pi3x_fps_518"] is None
