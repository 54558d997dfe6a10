"""Annotate a manifest into webdataset shards: Ray Data over the rows, or the same stages in-process.

One run::

    1 manifest.parquet ──► skip clips in index.parquet (done) and, unless
                           retry_failed, clips status.parquet marks failed
    2 annotate          :class:`Annotator`: builds both backends and calls setup()
                        once, then :func:`~wmkit.annotate.stages.annotate_clip` per row
                        runner="local": one Annotator in this process, rows in order
                        runner="ray":   Ray Data ``map_batches`` over the rows with an
                                        actor pool of ``num_actors`` Annotators; one row
                                        per batch, so one clip is the unit of retry;
                                        ``num_gpus_per_actor`` may be a fraction
    3 driver            results stream back here; samples go to one ShardWriter
                        (shards under a temporary name, renamed when complete)
    4 status.parquet    a row per clip: "done" only after its shard is published,
                        "failed" with (stage, reason) otherwise

Failure policy:

- A clip failing any stage (including the quality thresholds under policy
  "reject") becomes a ``failed`` row and never reaches the writer, so nothing
  partial is published. Backend ``setup()`` errors (a missing weight file)
  fail every clip of the actor with stage ``setup``, naming each clip.
- A worker killed mid-clip (OOM, segfault) is restarted by Ray Data (its
  actor pools default to ``max_restarts=-1``, ``max_task_retries=-1``) and its clip re-run; a
  killed task returns nothing, so the driver sees each clip once. The driver
  still drops a second result for a clip it already handled, because Ray
  only promises at-least-once execution.
- A killed driver leaves at most an unpublished ``.tmp`` shard (deleted by
  the next writer); the next run redoes exactly the clips not in the index.

``runner="ray"`` calls ``ray.init()`` when Ray is not initialised: a local
instance on a laptop, or the cluster that ``RAY_ADDRESS`` names.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from wmkit.annotate.config import AnnotateConfig
from wmkit.annotate.stages import StageError, annotate_clip
from wmkit.datasets.ingest import _StatusTable
from wmkit.datasets.sample import MEMBERS, Sample, SampleError
from wmkit.datasets.shard_format import INDEX_FILE, read_index
from wmkit.datasets.shard_writer import ShardWriter
from wmkit.manifests.schema import read_manifest, validate

__all__ = ["Annotator", "ClipResult", "annotate_manifest"]

#: Ray Data column holding each sample member (column names avoid the dots of member names).
_MEMBER_COLUMNS = {member: member.replace(".", "_") for member in MEMBERS}


@dataclass(frozen=True)
class ClipResult:
    """What an annotator hands back for one clip: the sample's members, or the failing stage and reason."""

    clip_id: str
    members: dict[str, bytes] | None  # Sample.to_members() when annotated
    stage: str = ""
    reason: str = ""


class Annotator:
    """Backends built and set up once; annotates manifest rows one by one (one per Ray actor).

    Also the Ray Data callable: ``__call__`` maps a batch of manifest rows
    (columns of numpy arrays) to a batch of results (``clip_id``, ``stage``,
    ``reason`` and one bytes column per sample member, empty when failed).
    """

    def __init__(self, config: AnnotateConfig) -> None:
        from wmkit.annotate.backends import make_backend

        self.config = config
        self.setup_error = ""
        for module in config.plugins:
            importlib.import_module(module)
        try:
            self.geometry = make_backend(config.geometry_backend, **config.geometry_options)
            self.geometry.setup()
            self.metric = make_backend(config.metric_backend, **config.metric_options)
            self.metric.setup()
        except Exception as err:  # a missing weight file fails every clip with its reason, not the run
            self.setup_error = f"{type(err).__name__}: {err}"

    def annotate(self, row: Mapping[str, Any]) -> ClipResult:
        """Annotate one row; every failure comes back as a result naming the stage."""
        clip_id = str(row["clip_id"])
        if self.setup_error:
            return ClipResult(clip_id, None, "setup", self.setup_error)
        try:
            return ClipResult(clip_id, annotate_clip(row, self.geometry, self.metric, self.config).to_members())
        except StageError as err:
            return ClipResult(clip_id, None, err.stage, err.reason)
        except SampleError as err:  # Sample.to_members (json not serialisable)
            return ClipResult(clip_id, None, "sample", str(err))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = pd.DataFrame(batch).to_dict("records")
        results = [self.annotate(row) for row in rows]
        out = {
            "clip_id": np.array([r.clip_id for r in results], dtype=object),
            "stage": np.array([r.stage for r in results], dtype=object),
            "reason": np.array([r.reason for r in results], dtype=object),
        }
        for member, column in _MEMBER_COLUMNS.items():
            out[column] = np.array([(r.members or {}).get(member, b"") for r in results], dtype=object)
        return out


def _from_batch(batch: Mapping[str, np.ndarray]) -> Iterator[ClipResult]:
    """Results of one Ray Data output batch (inverse of :meth:`Annotator.__call__`)."""
    for i, clip_id in enumerate(batch["clip_id"]):
        members = {m: bytes(batch[c][i]) for m, c in _MEMBER_COLUMNS.items() if len(batch[c][i])}
        stage = str(batch["stage"][i])
        yield ClipResult(str(clip_id), None if stage else members, stage, str(batch["reason"][i]))


def _local_results(rows: list[dict[str, Any]], config: AnnotateConfig) -> Iterator[ClipResult]:
    """The stage list in this process, rows in manifest order."""
    annotator = Annotator(config)
    for row in rows:
        yield annotator.annotate(row)


def _ray_results(rows: list[dict[str, Any]], config: AnnotateConfig, progress: bool) -> Iterator[ClipResult]:
    """Ray Data over the rows with an actor pool of :class:`Annotator` (completion order)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init()
    ray.data.DataContext.get_current().enable_progress_bars = progress
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        Annotator,
        fn_constructor_args=(config,),
        batch_size=1,  # one clip per task: a killed worker re-runs one clip
        compute=ray.data.ActorPoolStrategy(size=config.num_actors),
        num_cpus=config.num_cpus_per_actor,
        num_gpus=config.num_gpus_per_actor or None,
        # Ray Data's actor pools restart a dead actor and re-run the task it held
        # (max_restarts = max_task_retries = -1 by default); the killed-worker test checks it.
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        yield from _from_batch(batch)


def _todo(manifest: pd.DataFrame, out_dir: str, table: _StatusTable, retry_failed: bool) -> list[dict[str, Any]]:
    """Rows still to annotate; marks clips published but not yet recorded (a crash between the two) done."""
    index = read_index(out_dir) if os.path.exists(os.path.join(out_dir, INDEX_FILE)) else None
    done = dict(zip(index["key"], index["shard"])) if index is not None else {}
    for clip_id, shard in done.items():
        if table.rows.get(clip_id, {}).get("status") != "done":
            table.set(clip_id, "done", shard=shard)
    failed = {c for c, r in table.rows.items() if r["status"] == "failed"}
    return [
        row
        for row in manifest.to_dict("records")
        if row["clip_id"] not in done and (retry_failed or row["clip_id"] not in failed)
    ]


def _write(results: Iterable[ClipResult], writer: ShardWriter, table: _StatusTable, bar: tqdm) -> None:
    """Write each annotated clip, record each failure; one result per clip id."""
    seen: set[str] = set()
    failures = 0
    for result in results:
        if result.clip_id in seen:  # Ray executes at least once; a repeat is dropped, never written twice
            continue
        seen.add(result.clip_id)
        if result.members is None:
            table.set(result.clip_id, "failed", result.stage, result.reason)
            failures += 1
        else:
            try:
                writer.write(Sample.from_members(result.clip_id, result.members))
            except SampleError as err:
                table.set(result.clip_id, "failed", "write", str(err))
                failures += 1
        bar.update()
        bar.set_postfix(failed=failures, refresh=False)


def annotate_manifest(
    manifest: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AnnotateConfig = AnnotateConfig(),
    *,
    runner: Literal["ray", "local"] = "ray",
    retry_failed: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Annotate the manifest's clips into shards under ``out_dir``; return the status table.

    Args:
        manifest: a manifest frame or a ``manifest.parquet`` path.
        out_dir: shard directory; ``index.parquet`` and ``status.parquet`` live there.
        config: backends, stage configs, quality policy, writer limits and actors.
        runner: ``"ray"`` (Ray Data actor pool) or ``"local"`` (in-process, same stages).
        retry_failed: also redo clips that failed in an earlier run.
        progress: show a progress bar.

    Returns the full status table (every clip ever annotated into ``out_dir``).
    """
    if runner not in ("ray", "local"):
        raise ValueError(f"annotate_manifest: runner must be 'ray' or 'local', got {runner!r}")
    df = read_manifest(os.fspath(manifest)) if isinstance(manifest, str | os.PathLike) else manifest
    validate(df)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    table = _StatusTable(out_dir)
    todo = _todo(df, out_dir, table, retry_failed)

    def on_publish(shard: str, keys: list[str]) -> None:
        for key in keys:
            table.set(key, "done", shard=shard)
        table.save()

    try:
        with (
            ShardWriter(out_dir, config.prefix, config.max_count, config.max_bytes, on_publish=on_publish) as writer,
            tqdm(total=len(todo), desc=f"annotate ({runner})", unit="clip", disable=not progress) as bar,
        ):
            if todo:
                results = _local_results(todo, config) if runner == "local" else _ray_results(todo, config, progress)
                _write(results, writer, table, bar)
    finally:
        table.save()
    return table.frame()
