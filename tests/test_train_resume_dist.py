"""Resume is exact: 2 gloo processes, FSDP2 + activation checkpointing, run 8 steps straight
vs run, die at step 5 (last checkpoint at 3), resume to 8 — the loss curves match bit for bit.
Dying is a killed process (no clean-up) or, launched by torchrun as a user does, a rank whose
step raises (`WMKIT_TRAIN_FAULT`): the job exits non-zero with a line naming the rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _dist_fixtures import free_port
from _train_fixtures import clip_sample, write_shards
from wmkit.train.config import run_preset

STEPS, CKPT_EVERY, DIE_AFTER = 8, 3, 5
RUN = {"steps": STEPS, "ckpt_every": CKPT_EVERY, "progress": False, "activation_checkpointing": True,
       "shuffle_buffer": 4}  # tiny_cpu fields of every run here (straight, killed, failed, resumed)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _die_after(step: int, loss: float) -> None:
    if step == DIE_AFTER:
        os._exit(0)  # no clean-up, no final checkpoint: as a killed job


def _worker(rank: int, port: int, cfg_dict: dict, die: bool) -> None:
    from wmkit.train.config import config_from_dict
    from wmkit.train.trainer import train

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    try:
        train(config_from_dict(cfg_dict), on_step=_die_after if die else None)
    finally:
        torch.distributed.destroy_process_group()


def _launch(cfg, die: bool = False) -> None:
    mp.spawn(_worker, args=(free_port(), cfg.to_dict(), die), nprocs=2, join=True)


def _curve(run: Path) -> dict[int, tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in rows}  # a re-run step keeps its last row


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The shards and the config of an uninterrupted 8-step run, and that run's directory."""
    root = tmp_path_factory.mktemp("resume")
    shards = write_shards(root / "shards", [clip_sample(i, frames=17 if i % 3 else 9) for i in range(9)],
                          max_count=2)
    base = run_preset("tiny_cpu", shards=str(shards), out=str(root / "straight"), **RUN)
    _launch(base)
    return base, root / "straight"


def _assert_same_curve(want: dict, got: dict) -> None:
    assert sorted(want) == sorted(got) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step] == want[step], f"step {step}: loss/grad-norm {got[step]} != uninterrupted {want[step]}"
    losses = [want[s][0] for s in sorted(want)]
    assert len(set(losses)) == STEPS  # real, changing losses (not a constant that matches trivially)


def test_killed_and_resumed_run_replays_the_uninterrupted_curve(tmp_path, straight):
    base, straight_dir = straight
    broken = base.__class__(**{**base.to_dict(), "out": str(tmp_path / "broken")})
    _launch(broken, die=True)
    killed = _curve(tmp_path / "broken")
    assert max(killed) == DIE_AFTER
    assert sorted(p.name for p in (tmp_path / "broken" / "checkpoints").iterdir()) == ["step-00000003"]
    _launch(broken)
    _assert_same_curve(_curve(straight_dir), _curve(tmp_path / "broken"))


def _torchrun(base, out: Path, fault: str | None) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node 2 -m wmkit.cli train run` with `base`'s config, as a user launches it."""
    env = {k: v for k, v in os.environ.items() if k != "WMKIT_TRAIN_FAULT"} | {"OMP_NUM_THREADS": "1"}
    if fault is not None:
        env["WMKIT_TRAIN_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "wmkit.cli",
           "train", "run", "--preset", "tiny_cpu", "--shards", base.shards, "--out", str(out),
           *(f"{k}={str(v).lower()}" for k, v in RUN.items())]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_rank_that_raises_mid_step_is_named_and_a_restart_loses_nothing(tmp_path, straight):
    base, straight_dir = straight
    failed = _torchrun(base, tmp_path / "run", fault=f"1:{DIE_AFTER}")
    assert failed.returncode != 0
    want_line = f"rank 1 failed at step {DIE_AFTER} (resume from {tmp_path / 'run' / 'checkpoints' / 'step-00000003'})"
    assert want_line in failed.stderr, failed.stderr[-3000:]
    assert "RuntimeError: injected fault (WMKIT_TRAIN_FAULT=1:5)" in failed.stderr
    assert max(_curve(tmp_path / "run")) == DIE_AFTER - 1  # the failed step logged nothing
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000003"]

    resumed = _torchrun(base, tmp_path / "run", fault=None)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_curve(_curve(straight_dir), _curve(tmp_path / "run"))
