"""Checkpoints as named parts with torch.distributed.checkpoint (DCP), verified at load.

Layout (one directory per step; titan's named parts)::

    RUN/checkpoints/step-00000120/
        .metadata, __0_0.distcp, __1_0.distcp …   DCP: model, optim, ema (sharded like the
                                                   model under FSDP2), schedule, rank0 … rankN
        manifest.json                              step, config + hash, sha256 and size of every file

The `rank{r}` part holds what differs per rank: RNG states (torch, CUDA, numpy, python, the
flow-noise generator) as tensors, and the data position as a JSON string. A checkpoint is
written under `step-….tmp` and renamed once `manifest.json` lists every file, so a run
killed mid-save leaves only a `.tmp` directory, which is ignored and replaced; a complete
directory whose files no longer match their sha256 raises `CheckpointError` naming the file.
Only the newest `keep_last` checkpoints are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from wmkit.model.vae import file_sha256

MANIFEST = "manifest.json"
_PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete or does not match its manifest."""


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def step_dir(root: str | Path, step: int) -> Path:
    """Directory of the checkpoint of `step` under `root` (RUN/checkpoints)."""
    return Path(root) / f"{_PREFIX}{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete-named checkpoint directories under `root`, oldest first (`.tmp` ones excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """This process's RNG states (torch, CUDA, numpy, python, `generator`) as tensors."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if py_state[2] is None else py_state[2]], dtype=torch.float64),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Restore the states saved by `rng_state`."""
    torch.set_rng_state(state["torch"])
    pos, gauss = state["numpy_pos"].tolist(), float(state["numpy_gauss"][0])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos[0], pos[1], gauss))
    py_gauss = float(state["python_gauss"][0])
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), None if np.isnan(py_gauss) else py_gauss))
    generator.set_state(state["generator"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def write_manifest(path: Path, step: int, config: dict[str, Any], config_hash: str) -> dict[str, Any]:
    """Write `manifest.json` listing sha256 and size of every file in `path`; return it."""
    files = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in sorted(path.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"step": step, "config": config, "config_hash": config_hash, "files": files}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Return the manifest of checkpoint `path`; raise `CheckpointError` naming the first
    missing, truncated or altered file (or a missing manifest)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {path} is incomplete: no {MANIFEST}") from err
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({err})") from err
    for name, want in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if f.stat().st_size != want["bytes"]:
            raise CheckpointError(f"checkpoint {path} is corrupted: {name} has {f.stat().st_size} bytes, "
                                  f"the manifest says {want['bytes']}")
        if file_sha256(f) != want["sha256"]:
            raise CheckpointError(f"checkpoint {path} is corrupted: {name} fails its sha256 check")
    return manifest


def save_checkpoint(root: str | Path, step: int, parts: dict[str, Any], rank_part: dict[str, Any],
                    config: dict[str, Any], config_hash: str, keep_last: int) -> Path:
    """Save `parts` (the same keys on every rank: model, optim, ema, schedule …) and this
    rank's `rank_part` with DCP, then publish `step_dir(root, step)` with its manifest.

    Collective: every rank calls it. Returns the published directory."""
    rank, _ = _rank_world()
    final, tmp = step_dir(root, step), step_dir(root, step).with_suffix(".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dcp.save({**parts, f"rank{rank}": rank_part}, checkpoint_id=str(tmp))
    _barrier()
    if rank == 0:
        write_manifest(tmp, step, config, config_hash)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old)
    _barrier()
    return final


def load_checkpoint(path: str | Path, parts: dict[str, Any], rank_part: dict[str, Any]) -> dict[str, Any]:
    """Verify `path`, then load it in place into `parts` and this rank's `rank_part`
    (templates with the saved keys and shapes). Returns the manifest."""
    manifest = verify_checkpoint(path)
    rank, _ = _rank_world()
    state = {**parts, f"rank{rank}": rank_part}
    dcp.load(state, checkpoint_id=str(path))
    parts.update({k: state[k] for k in parts})
    rank_part.update(state[f"rank{rank}"])
    return manifest


__all__ = ["CheckpointError", "MANIFEST", "list_checkpoints", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state", "step_dir", "verify_checkpoint", "write_manifest"]
