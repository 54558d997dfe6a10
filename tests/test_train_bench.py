"""bench/train.py runs end to end on CPU (--smoke) and writes the summary the issue names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_the_summary(tmp_path):
    out = tmp_path / "train.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    summary = results["summary"]
    assert set(summary) == {"mfu_2p6b", "peak_mem_gb_2p6b", "loader_stall_fraction", "device"}
    assert results["smoke"] is True and results["cases"]["step_2p6b"]["model"] == "tiny"
    assert 0 < summary["mfu_2p6b"] and 0 <= summary["loader_stall_fraction"] < 1
    step = results["cases"]["step_2p6b"]
    assert step["tokens"] == 3 * 6 and step["tokens_per_s"] == pytest.approx(step["tokens"] / step["step_s"])
    assert results["cases"]["loader_tiny"]["samples_per_s"] > 0
    assert "step_2p6b" in proc.stdout


def test_flop_formula_by_hand():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from train import model_flops
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from wmkit.model import preset

    # tiny: 4 blocks (1 softmax), C = 64, H = 4, D = 16; 2 latent frames × 3 tokens, 1000 parameters
    dense = 6 * 1000 * 6
    softmax = 2 * 4 * 6**2 * 64  # two branches, QKᵀ and AV over 6 tokens
    gdn = 2 * 2 * 4 * (2 * 3 * 16**2 * 5 + 4 * 16**3)  # two branches, 2 frames, 4 heads
    assert model_flops(preset("tiny"), 1000, 2, 3) == dense + 3 * (softmax + 3 * gdn)
    # at 121 × 880 tokens the five softmax blocks' quadratic attention outweighs the dense part
    big = model_flops(preset("2.6b"), 2_641_000_000, 121, 880)
    assert big > 2 * 6 * 2_641_000_000 * 121 * 880
