"""`wmkit train` with context parallelism: 2 gloo processes with cp=2 (one clip's latent
frames split over both, FSDP2 over both) train the same loss curve as 1 process on the same
shards and seed — the loss of each step is the whole clip's, and the gradients are the
unsplit gradients up to fp32 rounding; 4 processes as a 2 × 2 dp × cp mesh train the
2-process data-parallel curve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _dist_fixtures import free_port
from _train_fixtures import clip_sample, write_shards
from wmkit.train.config import config_from_dict, run_preset
from wmkit.train.trainer import train

STEPS = 4
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _worker(rank: int, port: int, cfg_dict: dict, world: int = 2) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    try:
        train(config_from_dict(cfg_dict))
    finally:
        torch.distributed.destroy_process_group()


def _curve(run: Path, steps: int = STEPS) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    return [(r["loss"], r["grad_norm"]) for r in rows]


@pytest.mark.parametrize("mode", ["bidirectional", "chunk_causal"])
def test_cp2_run_trains_the_single_process_curve(tmp_path, mode):
    # 33 frames = 5 latent frames: rank 0 holds [0, 3), rank 1 [3, 5), cutting the one chunk [0, 5)
    shards = write_shards(tmp_path / "shards", [clip_sample(i, frames=33) for i in range(4)], max_count=2)
    base = run_preset("tiny_cpu", shards=str(shards), steps=STEPS, progress=False, shuffle_buffer=2,
                      batch_size=1, mode=mode)
    single = base.__class__(**{**base.to_dict(), "out": str(tmp_path / "single")})
    split = base.__class__(**{**base.to_dict(), "out": str(tmp_path / "cp2"), "context_parallel": 2})
    torch.set_num_threads(1)
    train(single)
    mp.spawn(_worker, args=(free_port(), split.to_dict()), nprocs=2, join=True)
    want, got = _curve(tmp_path / "single"), _curve(tmp_path / "cp2")
    assert len({loss for loss, _ in want}) == STEPS  # real, changing losses
    _assert_same_curve(want, got)


def _assert_same_curve(want: list[tuple[float, float]], got: list[tuple[float, float]]) -> None:
    for step, ((loss, norm), (cp_loss, cp_norm)) in enumerate(zip(want, got), 1):
        assert cp_loss == pytest.approx(loss, rel=1e-6), f"step {step}: loss {cp_loss} with cp=2, {loss} without"
        assert cp_norm == pytest.approx(norm, rel=1e-6), f"step {step}: grad norm {cp_norm} with cp=2, {norm} without"


def test_dp2_cp2_mesh_trains_the_dp2_curve(tmp_path):
    """4 processes as 2 data-parallel × 2 context-parallel ranks, with activation checkpointing:
    each cp pair reads its dp index's stream, so the curve is the 2-process data-parallel one."""
    shards = write_shards(tmp_path / "shards", [clip_sample(i, frames=33) for i in range(4)], max_count=1)
    base = run_preset("tiny_cpu", shards=str(shards), steps=3, progress=False, shuffle_buffer=2, batch_size=1,
                      activation_checkpointing=True)
    for name, world, cp in (("dp2", 2, 1), ("dp2cp2", 4, 2)):
        cfg = base.__class__(**{**base.to_dict(), "out": str(tmp_path / name), "context_parallel": cp})
        mp.spawn(_worker, args=(free_port(), cfg.to_dict(), world), nprocs=world, join=True)
    want, got = _curve(tmp_path / "dp2", 3), _curve(tmp_path / "dp2cp2", 3)
    assert len({loss for loss, _ in want}) == 3
    _assert_same_curve(want, got)
