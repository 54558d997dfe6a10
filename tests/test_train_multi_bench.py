"""bench/train_multi.py --smoke, launched by torchrun with 2 gloo processes as on a GPU host:
the summary the issue names, 1-vs-2-rank losses that agree, the CP=2 GDNDiT's outputs and
gradients equal to the unsplit pass, scaling efficiency from the two throughputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_on_two_gloo_ranks_writes_the_summary(tmp_path):
    out = tmp_path / "train_multi.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "bench" / "train_multi.py"), "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    summary = results["summary"]
    assert set(summary) == {"scaling_efficiency_2", "cp2_mem_fraction", "loss_max_rel_diff", "device"}
    assert results["smoke"] is True and results["world_size"] == 2 and "CPU gloo smoke" in summary["device"]

    same = results["cases"]["same-result"]["models"]["tiny"]
    assert len(same["losses_1"]) == len(same["losses_2"]) == 20
    assert len(set(same["losses_1"])) == 20  # real, changing losses
    assert summary["loss_max_rel_diff"] == same["max_rel_diff"] < 1e-5  # fp32: reduction order only

    cp = results["cases"]["context-parallel"]
    assert cp["model"] == "tiny" and cp["mode"] == "bidirectional"  # the whole GDNDiT, frames split
    assert cp["cp2_frames_per_rank"] == [7, 6]  # 13 latent frames by frame_slice
    for name, err in cp["max_rel_diff"].items():
        assert err < 1e-5, f"CP=2 {name} differs from the unsplit pass by {err:.2e}"
    assert summary["cp2_mem_fraction"] == cp["mem_gb_cp2_per_rank"] / cp["mem_gb_cp1"]
    assert 0.5 < summary["cp2_mem_fraction"] < 1  # the larger slice holds 7 of 13 frames, plus gathered K/V

    runs = results["cases"]["scaling"]["runs"]
    assert runs["2"]["world_size"] == 2 and runs["1"]["world_size"] == 1
    assert summary["scaling_efficiency_2"] == pytest.approx(runs["2"]["samples_per_s"] / (2 * runs["1"]["samples_per_s"]))
    assert runs["2"]["mfu"] > 0 and runs["2"]["model_tflops_per_step_per_gpu"] > 0

    table = out.with_suffix(".md").read_text()
    assert "| same-result tiny |" in table and "efficiency N=2" in table
