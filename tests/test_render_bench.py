"""bench/render.py --smoke: runs on CPU end to end and writes the summary the issue names."""

from __future__ import annotations

import json
import math

from _bench_fixtures import run_smoke


def test_smoke_run_writes_summary_and_table(tmp_path):
    out_json, out_md = tmp_path / "render.json", tmp_path / "render.md"
    run_smoke("render.py", "--json", str(out_json), "--md", str(out_md), "--refiner", "random:tiny")
    result = json.loads(out_json.read_text())
    summary = result["summary"]
    assert {"render_961_720p_s", "refiner_fps", "cpu_ref_parity_psnr_db", "device"} <= set(summary)
    assert summary["refiner_fps"] > 0 and result["refiner"]["random_weights"] == "tiny"
    assert result["refiner"]["frames"] == 4 and len(result["refiner"]["refiner"]["version"]) == 16
    assert summary["case"].startswith("smoke: 9 frames 64x48") and summary["parity_against"] == "reference float64"
    for key in ("render_961_720p_s", "cpu_ref_parity_psnr_db", "plan_s", "render_s", "encode_s", "cpu_ref_fps"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    case = result["case"]
    assert math.isclose(case["total_s"], case["plan_s"] + case["render_s"] + case["encode_s"])
    assert case["mean_alpha"] > 0.9 and case["encode"]["mp4_mb"] > 0
    assert summary["cpu_ref_parity_psnr_db"] > 80  # fp32 vs fp64 reference: rounding only
    table = out_md.read_text()
    assert "`render_961_720p_s`" in table and "`cpu_ref_parity_psnr_db`" in table
