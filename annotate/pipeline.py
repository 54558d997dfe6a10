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
                        (steps 2-4: :mod:`wmkit.datasets.item_runner`, shared with render)
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
from collections.abc import Iterator
from typing import Any, Literal, Mapping

import pandas as pd

from wmkit.annotate.config import AnnotateConfig
from wmkit.annotate.stages import annotate_clip
from wmkit.datasets.item_runner import (
    ClipError, ItemResult, ItemWorker, RayResources, local_results, ray_results, run_to_shards,
)
from wmkit.datasets.sample import SampleError
from wmkit.datasets.status import StatusTable
from wmkit.manifests.schema import read_manifest, validate

__all__ = ["Annotator", "annotate_manifest"]


class Annotator(ItemWorker):
    """Backends built and set up once; annotates manifest rows one by one (one per Ray actor)."""

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

    def process(self, row: Mapping[str, Any]) -> ItemResult:
        """Annotate one row; every failure comes back as a result naming the stage."""
        clip_id = str(row["clip_id"])
        if self.setup_error:
            return ItemResult(clip_id, None, "setup", self.setup_error)
        try:
            return ItemResult(clip_id, annotate_clip(row, self.geometry, self.metric, self.config).to_members())
        except ClipError as err:
            return ItemResult(clip_id, None, err.stage, err.reason)
        except SampleError as err:  # Sample.to_members (json not serialisable)
            return ItemResult(clip_id, None, "sample", str(err))


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
    table = StatusTable(out_dir)
    skip = table.resume(retry_failed)
    todo = [row for row in df.to_dict("records") if row["clip_id"] not in skip]
    resources = RayResources(config.num_actors, config.num_cpus_per_actor, config.num_gpus_per_actor)

    def results(rows: list[dict[str, Any]]) -> Iterator[ItemResult]:
        if runner == "local":
            return local_results(rows, lambda: Annotator(config))
        return ray_results(rows, Annotator, (config,), resources, progress)

    return run_to_shards(
        out_dir, todo, results, table, prefix=config.prefix, max_count=config.max_count,
        max_bytes=config.max_bytes, desc=f"annotate ({runner})", unit="clip", progress=progress,
    )  # fmt: skip
