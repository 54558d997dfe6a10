"""Build shards straight from a manifest whose sources carry cameras (DESIGN §1, §2).

The pipeline, per run::

    manifest.parquet ──► skip clips already in index.parquet (done) and, unless
                         retry_failed, clips status.parquet marks failed
        │
        ▼  build_sample(row, config)    pure: clip row -> Sample, or ClipError(stage, reason)
        │    1 cameras  load_source_cameras(row), validate (NaN pose, zero focal, ...)
        │    2 decode   decode_clip(media_uri, start_s, end_s, size=config.size)
        │    3 frames   decoded frame count == cameras T
        │    4 encode   encode_mp4(frames, fps): always re-encoded, so every sample is
        │               H.264 at the stored size with exactly T frames, whatever the source codec
        │    5 sample   json meta (manifest fields, parsed extra, provenance) and Sample.validate
        ▼
    ShardWriter ──► shards (temp name, renamed when complete) + index.parquet
        ▼
    status.parquet: one row per clip (STATUS_DTYPES); "done" rows are written only
                    after their shard is published, so a crash never marks a clip done
                    that is not on disk.

A failed clip becomes a ``failed`` row with its stage and reason and never
reaches the writer, so it leaves no partial sample. Running twice does no work
twice: the index is the record of what is done. ``workers > 0`` maps
:func:`build_sample` over a process pool; results are written in manifest
order, so shards are byte-identical to an in-process run. A Ray pipeline can
map :func:`build_sample` the same way.

Source depth (``depth_uri``) is carried in the json but not converted here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd
from tqdm import tqdm

from wmkit import __version__
from wmkit.datasets.cameras import Cameras, scale_intrinsics
from wmkit.datasets.item_runner import ClipError, clip_stage
from wmkit.datasets.sample import Sample, SampleError
from wmkit.datasets.shard_writer import ShardWriter
# the status names are re-exported: train/latents.py and the CLIs import them from here
from wmkit.datasets.status import STATUS_DTYPES, STATUS_FILE, StatusTable, read_status, status_summary
from wmkit.manifests.schema import read_manifest, validate

__all__ = [
    "ClipError",
    "IngestConfig",
    "STATUS_DTYPES",
    "STATUS_FILE",
    "build_sample",
    "ingest_manifest",
    "read_status",
    "status_summary",
]

@dataclass(frozen=True)
class IngestConfig:
    """What determines a sample's bytes; hashed into every sample's provenance."""

    size: tuple[int, int] | None = None  # stored (width, height) in pixels; None keeps the source size
    backend: str = "pyav"  # decode_clip backend
    crf: int = 18  # x264 quality of the re-encode
    preset: str = "medium"  # x264 speed preset

    def config_hash(self) -> str:
        """sha256 of the config as sorted JSON."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def build_sample(row: Mapping[str, Any], config: IngestConfig = IngestConfig()) -> Sample:
    """Turn one manifest row into a validated :class:`Sample`, or raise :class:`ClipError`.

    Pure apart from reading the row's files: no shard or status side effects,
    so a process pool or a Ray task can map it.
    """
    from wmkit.datasets.source_cameras import load_source_cameras
    from wmkit.datasets.video import decode_clip, encode_mp4

    clip_id, fps = str(row["clip_id"]), float(row["fps"])
    with clip_stage(clip_id, "cameras"):
        cameras = load_source_cameras(row).validate(name=f"clip {clip_id}")
    with clip_stage(clip_id, "decode"):
        frames = decode_clip(
            row["media_uri"], row["start_s"], row["end_s"], size=config.size, backend=config.backend, source_fps=fps
        )
    if len(frames) != len(cameras):
        raise ClipError(clip_id, "frames", f"video span has {len(frames)} frames but the cameras have {len(cameras)}")
    height, width = frames.shape[1:3]
    if config.size is not None:
        with clip_stage(clip_id, "cameras"):
            if not (row["width"] > 0 and row["height"] > 0):
                raise ValueError("manifest width/height unknown, cannot rescale K to the stored size")
            K = scale_intrinsics(cameras.K, (row["width"], row["height"]), (width, height))
            cameras = Cameras(cameras.c2w, K, cameras.t, cameras.frame_index, cameras.metric, cameras.scale_confidence)
    with clip_stage(clip_id, "encode"):
        mp4 = encode_mp4(frames, fps, crf=config.crf, preset=config.preset, name=f"clip {clip_id}")
    with clip_stage(clip_id, "sample"):
        return Sample(clip_id, mp4, cameras, _meta(row, config, len(frames), width, height)).validate()


def _meta(row: Mapping[str, Any], config: IngestConfig, num_frames: int, width: int, height: int) -> dict[str, Any]:
    """The sample's json: manifest fields, parsed ``extra``, provenance."""
    return {
        "source": str(row["source"]),
        "source_id": str(row["source_id"]),
        "caption": str(row["caption"]),
        "license": str(row["license"]),
        "fps": float(row["fps"]),
        "size": [int(width), int(height)],
        "num_frames": int(num_frames),
        "media_uri": str(row["media_uri"]),
        "span_s": [float(row["start_s"]), float(row["end_s"])],
        "cameras_uri": str(row["cameras_uri"]),
        "depth_uri": str(row["depth_uri"]),
        "extra": json.loads(row["extra"]),
        "provenance": {
            "wmkit_version": __version__,
            "stage": "ingest",
            "backends": {"decode": config.backend, "encode": "libx264", "cameras": f"source:{row['source']}"},
            "weights": {},
            "config": asdict(config),
            "config_hash": config.config_hash(),
        },
        "quality": {},
    }


def _try_build(row: Mapping[str, Any], config: IngestConfig) -> Sample | ClipError:
    """:func:`build_sample` with its ClipError returned, so a pool can carry it back."""
    try:
        return build_sample(row, config)
    except ClipError as err:
        return err


def _results(
    rows: Sequence[dict[str, Any]], config: IngestConfig, workers: int
) -> Iterator[tuple[dict[str, Any], Sample | ClipError]]:
    """``(row, result)`` in manifest order, built in-process or by ``workers`` processes."""
    if workers <= 0:
        for row in rows:
            yield row, _try_build(row, config)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        for row in rows:
            pending.append((row, pool.submit(_try_build, row, config)))
            if len(pending) > 2 * workers:  # bounded look-ahead keeps memory flat
                row_done, future = pending.popleft()
                yield row_done, future.result()
        while pending:
            row_done, future = pending.popleft()
            yield row_done, future.result()


def ingest_manifest(
    manifest: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "shard",
    max_count: int = 1000,
    max_bytes: int = 1 << 30,
    size: tuple[int, int] | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    workers: int = 0,
) -> pd.DataFrame:
    """Write the manifest's clips into shards under ``out_dir``; return the status table.

    Args:
        manifest: a manifest frame or a ``manifest.parquet`` path.
        out_dir: shard directory; ``index.parquet`` and ``status.parquet`` live there.
        prefix, max_count, max_bytes: shard naming and limits (:class:`ShardWriter`).
        size: stored (width, height) in pixels; K is rescaled to it. None keeps the source size.
        retry_failed: also redo clips that failed in an earlier run.
        progress: show a tqdm bar.
        workers: processes building samples (0 = in-process).

    Returns the full status table (every clip ever ingested into ``out_dir``).
    """
    df = read_manifest(os.fspath(manifest)) if isinstance(manifest, str | os.PathLike) else manifest
    validate(df)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    config = IngestConfig(size=tuple(size) if size is not None else None)
    table = StatusTable(out_dir)
    skip = table.resume(retry_failed)
    todo = [row for row in df.to_dict("records") if row["clip_id"] not in skip]

    try:
        with (
            ShardWriter(out_dir, prefix, max_count, max_bytes, on_publish=table.on_publish) as writer,
            tqdm(total=len(todo), desc="ingest", unit="clip", disable=not progress) as bar,
        ):
            failures = 0
            for row, result in _results(todo, config, workers):
                if isinstance(result, ClipError):
                    table.set(result.clip_id, "failed", result.stage, result.reason)
                    failures += 1
                else:
                    try:
                        writer.write(result)
                    except SampleError as err:
                        table.set(row["clip_id"], "failed", "write", str(err))
                        failures += 1
                bar.update()
                bar.set_postfix(failed=failures, refresh=False)
    finally:
        table.save()
    return table.frame()
