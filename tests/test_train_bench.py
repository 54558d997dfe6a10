"""bench/train.py runs end to end on CPU (--smoke) and writes the summary the issue names."""

from __future__ import annotations

import json
import sys

import pytest

from _bench_fixtures import BENCH_DIR, run_smoke


def test_smoke_run_writes_the_summary(tmp_path):
    out = tmp_path / "train.json"
    proc = run_smoke("train.py", "--out", str(out), single_thread=True)
    results = json.loads(out.read_text())
    summary = results["summary"]
    assert set(summary) == {"mfu_2p6b", "peak_mem_gb_2p6b", "case_2p6b", "loader_stall_fraction", "device"}
    assert summary["case_2p6b"] == "step_2p6b"
    assert results["smoke"] is True and results["cases"]["step_2p6b"]["model"] == "tiny"
    assert 0 < summary["mfu_2p6b"] and 0 <= summary["loader_stall_fraction"] < 1
    step = results["cases"]["step_2p6b"]
    assert step["tokens"] == 3 * 6 and step["tokens_per_s"] == pytest.approx(step["tokens"] / step["step_s"])
    assert results["cases"]["loader_tiny"]["samples_per_s"] > 0
    assert "step_2p6b" in proc.stdout


def test_flop_formula_by_hand():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        from train import model_flops
    finally:
        sys.path.remove(str(BENCH_DIR))
    from wmkit.model import preset

    # tiny: 4 blocks (1 softmax), C = 64, H = 4, D = 16; 2 latent frames × 3 tokens, 1000 parameters
    dense = 6 * 1000 * 6
    softmax = 2 * 4 * 6**2 * 64  # two branches, QKᵀ and AV over 6 tokens
    gdn = 2 * 2 * 4 * (2 * 3 * 16**2 * 5 + 4 * 16**3)  # two branches, 2 frames, 4 heads
    assert model_flops(preset("tiny"), 1000, 2, 3) == dense + 3 * (softmax + 3 * gdn)
    # at 121 × 880 tokens the five softmax blocks' quadratic attention outweighs the dense part
    big = model_flops(preset("2.6b"), 2_641_000_000, 121, 880)
    assert big > 2 * 6 * 2_641_000_000 * 121 * 880


def test_peak_live_bytes_follows_allocations_and_frees():
    """bench/compiled_memory.py's measure: the most bytes held at once, from the allocator's record."""
    import torch

    from wmkit.bench.compiled_memory import peak_live_bytes

    def run() -> None:
        a, b = torch.empty(1_000_000), torch.empty(2_000_000)  # 4 + 8 MB live together
        del a, b
        c = torch.empty(500_000)  # 2 MB after they are freed
        del c

    assert peak_live_bytes(run) == 12_000_000
