"""Items to shards through a worker: in-process or Ray Data, each result written or recorded as a failure.

Shared by the stages that build one sample per item on workers that set up
once (``annotate``: a clip; ``render``: a scene path)::

    todo rows ──► worker (an :class:`ItemWorker`: built once, ``process(row)`` per row)
                   in-process: one worker, rows in order
                   Ray Data:   ``map_batches`` with an actor pool of workers, one row per
                               batch (one item is the unit of retry), completion order
        ──► ItemResult(key, members | None, stage, reason)
        ──► driver: ShardWriter (temporary name, renamed when complete) + StatusTable

A failed item becomes a ``failed`` status row with its stage and reason and
never reaches the writer, so nothing partial is published. Ray only promises
at-least-once execution (an actor pool restarts a killed actor and re-runs its
task), so the driver drops a second result for a key it already handled.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from wmkit.datasets.sample import MEMBERS, Sample, SampleError
from wmkit.datasets.shard_writer import ShardWriter
from wmkit.datasets.status import StatusTable

__all__ = [
    "ClipError",
    "ItemResult",
    "ItemWorker",
    "RayResources",
    "clip_stage",
    "local_results",
    "ray_results",
    "run_to_shards",
]

#: Ray Data column holding each sample member (column names avoid the dots of member names).
_MEMBER_COLUMNS = {member: member.replace(".", "_") for member in MEMBERS}


class ClipError(Exception):
    """One clip (item) failed at one stage; a status row, not a crash."""

    def __init__(self, clip_id: str, stage: str, reason: str) -> None:
        super().__init__(clip_id, stage, reason)
        self.clip_id, self.stage, self.reason = clip_id, stage, reason

    def __str__(self) -> str:
        return f"clip {self.clip_id}: {self.stage}: {self.reason}"


@contextmanager
def clip_stage(clip_id: str, stage: str) -> Iterator[None]:
    """Turn any error inside the block into :class:`ClipError` for ``stage``."""
    try:
        yield
    except ClipError:
        raise
    except Exception as err:  # failures are data: any error of this clip becomes its status row
        raise ClipError(clip_id, stage, f"{type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class ItemResult:
    """What a worker hands back for one item: the sample's members, or the failing stage and reason."""

    key: str
    members: dict[str, bytes] | None  # Sample.to_members() when the item succeeded
    stage: str = ""
    reason: str = ""


class ItemWorker(ABC):
    """Set up once (in ``__init__``), then :meth:`process` one row at a time; also the Ray Data callable.

    ``__call__`` maps a batch of rows (columns of numpy arrays) to a batch of
    results (``key``, ``stage``, ``reason`` and one bytes column per sample
    member, empty when failed); :func:`ray_results` reads them back.
    """

    @abstractmethod
    def process(self, row: Mapping[str, Any]) -> ItemResult:
        """One row's result; every failure comes back as a result naming the stage, never as an exception."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self.process(row) for row in pd.DataFrame(batch).to_dict("records")]
        out = {
            "key": np.array([r.key for r in results], dtype=object),
            "stage": np.array([r.stage for r in results], dtype=object),
            "reason": np.array([r.reason for r in results], dtype=object),
        }
        for member, column in _MEMBER_COLUMNS.items():
            out[column] = np.array([(r.members or {}).get(member, b"") for r in results], dtype=object)
        return out


def _from_batch(batch: Mapping[str, np.ndarray]) -> Iterator[ItemResult]:
    """Results of one Ray Data output batch (inverse of :meth:`ItemWorker.__call__`)."""
    for i, key in enumerate(batch["key"]):
        members = {m: bytes(batch[c][i]) for m, c in _MEMBER_COLUMNS.items() if len(batch[c][i])}
        stage = str(batch["stage"][i])
        yield ItemResult(str(key), None if stage else members, stage, str(batch["reason"][i]))


def local_results(rows: list[dict[str, Any]], worker: Callable[[], ItemWorker]) -> Iterator[ItemResult]:
    """The worker in this process (built once by ``worker()``), rows in order."""
    built = worker()
    for row in rows:
        yield built.process(row)


@dataclass(frozen=True)
class RayResources:
    """Actor pool of a Ray Data run: ``num_actors`` workers, each with these CPUs and GPUs (a fraction shares one)."""

    num_actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def ray_results(
    rows: list[dict[str, Any]],
    worker_cls: type[ItemWorker],
    worker_args: tuple,
    resources: RayResources,
    progress: bool,
) -> Iterator[ItemResult]:
    """Ray Data over the rows with an actor pool of ``worker_cls(*worker_args)`` (completion order).

    Calls ``ray.init()`` when Ray is not initialised: a local instance, or the
    cluster ``RAY_ADDRESS`` names.
    """
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init()
    ray.data.DataContext.get_current().enable_progress_bars = progress
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        worker_cls,
        fn_constructor_args=worker_args,
        batch_size=1,  # one item per task: a killed worker re-runs one item
        compute=ray.data.ActorPoolStrategy(size=resources.num_actors),
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        # Ray Data's actor pools restart a dead actor and re-run the task it held
        # (max_restarts = max_task_retries = -1 by default); annotate's killed-worker test checks it.
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        yield from _from_batch(batch)


def _write(results: Iterable[ItemResult], writer: ShardWriter, table: StatusTable, bar: tqdm) -> None:
    """Write each successful item, record each failure; one result per key."""
    seen: set[str] = set()
    failures = 0
    for result in results:
        if result.key in seen:  # Ray executes at least once; a repeat is dropped, never written twice
            continue
        seen.add(result.key)
        if result.members is None:
            table.set(result.key, "failed", result.stage, result.reason)
            failures += 1
        else:
            try:
                writer.write(Sample.from_members(result.key, result.members))
            except SampleError as err:
                table.set(result.key, "failed", "write", str(err))
                failures += 1
        bar.update()
        bar.set_postfix(failed=failures, refresh=False)


def run_to_shards(
    out_dir: str | os.PathLike,
    todo: list[dict[str, Any]],
    results: Callable[[list[dict[str, Any]]], Iterable[ItemResult]],
    table: StatusTable,
    *,
    prefix: str,
    max_count: int,
    max_bytes: int,
    desc: str,
    unit: str,
    progress: bool,
) -> pd.DataFrame:
    """Write ``results(todo)`` into shards under ``out_dir``, updating ``table``; return the full status table.

    ``table`` is the caller's :class:`StatusTable` for ``out_dir`` (``todo``
    was chosen with :meth:`StatusTable.resume`). The table is saved on every
    publish and once more at the end, also when an error escapes.
    """
    try:
        with (
            ShardWriter(out_dir, prefix, max_count, max_bytes, on_publish=table.on_publish) as writer,
            tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress) as bar,
        ):
            if todo:
                _write(results(todo), writer, table, bar)
    finally:
        table.save()
    return table.frame()
