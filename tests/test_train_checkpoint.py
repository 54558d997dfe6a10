"""Checkpoints: named parts round-trip, RNG and data position come back, damage is named at load."""

from __future__ import annotations

import random
import numpy as np
import pytest
import torch

from wmkit.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _save(root, step, weight, keep_last=2):
    gen = torch.Generator().manual_seed(step)
    parts = {"model": {"w": weight}, "train": {"step": step}}
    mine = {"rng": rng_state(gen), "data": f'{{"batches": {step}}}'}
    return save_checkpoint(root, step, parts, mine, {"lr": 1.0}, "cafe", keep_last)


def test_round_trip_restores_parts_rng_and_position(tmp_path):
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    gen = torch.Generator().manual_seed(11)
    torch.randn(3, generator=gen)  # advance it
    want_next = (torch.rand(2), np.random.rand(2), random.random(), torch.rand(2, generator=gen))
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    gen = torch.Generator().manual_seed(11)
    torch.randn(3, generator=gen)
    path = save_checkpoint(tmp_path, 3, {"model": {"w": torch.arange(5.0)}, "train": {"step": 3}},
                           {"rng": rng_state(gen), "data": '{"batches": 3}'}, {"lr": 1.0}, "cafe", 2)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)  # scramble
    other = torch.Generator().manual_seed(99)
    parts = {"model": {"w": torch.zeros(5)}, "train": {"step": 0}}
    mine = {"rng": rng_state(other), "data": ""}
    manifest = load_checkpoint(path, parts, mine)
    set_rng_state(mine["rng"], other)
    assert manifest["step"] == 3 and manifest["config"] == {"lr": 1.0}
    assert torch.equal(parts["model"]["w"], torch.arange(5.0)) and parts["train"]["step"] == 3
    assert mine["data"] == '{"batches": 3}'
    got_next = (torch.rand(2), np.random.rand(2), random.random(), torch.rand(2, generator=other))
    assert torch.equal(got_next[0], want_next[0]) and np.array_equal(got_next[1], want_next[1])
    assert got_next[2] == want_next[2] and torch.equal(got_next[3], want_next[3])


def test_keeps_last_n_and_ignores_unfinished(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step, torch.ones(3) * step)
    (tmp_path / "step-00000040.tmp").mkdir()  # a save killed half-way
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000020", "step-00000030"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_damaged_checkpoint_is_named_at_load(tmp_path, damage):
    path = _save(tmp_path, 5, torch.arange(1000.0))
    data = sorted(p for p in path.iterdir() if p.name.endswith(".distcp"))[0]
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:-10])
    elif damage == "delete":
        data.unlink()
    else:
        (path / "manifest.json").unlink()
    message = {"flip": "fails its sha256", "truncate": "bytes", "delete": "is missing", "manifest": "no manifest"}
    with pytest.raises(CheckpointError, match=message[damage]) as err:
        load_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "train": {"step": 0}},
                        {"rng": rng_state(torch.Generator()), "data": ""})
    assert str(path) in str(err.value)
    assert step_dir(tmp_path, 5) == path
