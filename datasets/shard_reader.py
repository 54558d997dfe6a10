"""Stream samples from webdataset shards: a chain of small generators.

::

    list_shards(source)                       dir | glob | "a-{000000..000009}.tar" | index.parquet
      -> order_shards / resample_shards       per-epoch permutation, or infinite draws (training)
      -> split_by_node(rank, world)            each rank takes every world-th shard
      -> split_by_worker                       each DataLoader worker takes every n-th of those
      -> tar_samples                           RawSample(key, shard, offset, size, members)
      -> verify_samples(index)   (optional)    sha256 against index.parquet, names sample and shard
      -> shuffle(buffer, seed)   (optional)    webdataset's shuffle buffer with a seeded rng
      -> decode_samples("mp4" | "frames")      Sample, or DecodedSample with uint8 (T, H, W, 3) frames

The shuffle buffer holds raw samples, before decoding: compressed mp4 bytes are
small, decoded clips are not (961 frames at 720p are ~2.6 GB).
Every stage is a plain generator over the previous one, so each can be tested on
a list. :class:`ShardDataset` wires them for ``torch.utils.data.DataLoader``.
Shards, not samples, are split across ranks and workers: without resampling
every sample is read exactly once per epoch across all of them.
"""

from __future__ import annotations

import glob
import os
import random
from typing import Iterable, Iterator, Literal, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.filters import shuffle as wds_shuffle
from webdataset.shardlists import expand_urls

from wmkit.datasets.sample import DecodedSample, Sample, SampleError
from wmkit.datasets.shard_format import (
    INDEX_FILE,
    RawSample,
    ShardFormatError,
    iter_tar_samples,
    read_index,
    sample_sha256,
)

__all__ = [
    "ShardDataset",
    "decode_samples",
    "list_shards",
    "node_info",
    "order_shards",
    "resample_shards",
    "split_by_node",
    "split_by_worker",
    "tar_samples",
    "verify_samples",
]

Decode = Literal["mp4", "frames"]


def list_shards(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """Resolve ``source`` to a sorted list of shard paths.

    ``source`` is a directory (its ``*.tar``), an ``index.parquet`` (the shards it
    lists, beside it), a glob (``shards/*.tar``), a brace pattern
    (``shards/shard-{000000..000003}.tar``) or a list of paths.
    """
    if not isinstance(source, str | os.PathLike):
        return list(source)
    path = os.fspath(source)
    if os.path.isdir(path):
        shards = sorted(glob.glob(os.path.join(glob.escape(path), "*.tar")))
    elif os.path.basename(path) == INDEX_FILE:
        root = os.path.dirname(path)
        shards = [os.path.join(root, s) for s in sorted(set(read_index(path)["shard"]))]
    elif "{" in path:
        shards = expand_urls(path)
    else:
        shards = sorted(glob.glob(path))
    if not shards:
        raise FileNotFoundError(f"{path}: no shards found")
    return shards


def node_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit values, else ``torch.distributed`` if initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def order_shards(shards: Sequence[str], *, seed: int, epoch: int, shuffle: bool) -> Iterator[str]:
    """One pass over ``shards``: sorted, or a permutation seeded by ``(seed, epoch)``.

    Every rank and worker draws the same permutation, so splitting it afterwards
    still partitions the shards.
    """
    order = sorted(shards)
    if shuffle:
        random.Random(f"order:{seed}:{epoch}").shuffle(order)
    yield from order


def resample_shards(shards: Sequence[str], *, seed: int, epoch: int, rank: int, worker: int) -> Iterator[str]:
    """Infinite shard draws with replacement, seeded per ``(seed, epoch, rank, worker)`` (training)."""
    rng = random.Random(f"resample:{seed}:{epoch}:{rank}:{worker}")
    order = sorted(shards)
    while True:
        yield rng.choice(order)


def split_by_node(shards: Iterable[str], rank: int, world_size: int) -> Iterator[str]:
    """Keep every ``world_size``-th shard starting at ``rank``."""
    for i, shard in enumerate(shards):
        if i % world_size == rank:
            yield shard


def split_by_worker(shards: Iterable[str]) -> Iterator[str]:
    """Keep this DataLoader worker's share of ``shards`` (all of them outside a worker)."""
    worker, num_workers = _worker()
    for i, shard in enumerate(shards):
        if i % num_workers == worker:
            yield shard


def tar_samples(shards: Iterable[str]) -> Iterator[RawSample]:
    """Open each shard in turn and yield its samples' raw members."""
    for shard in shards:
        with open(shard, "rb") as f:
            yield from iter_tar_samples(f, shard)


def verify_samples(samples: Iterable[RawSample], index: dict[str, str]) -> Iterator[RawSample]:
    """Pass samples whose sha256 matches ``index`` (``{key: sha256}``); raise naming the bad one."""
    for raw in samples:
        want = index.get(raw.key)
        if want is None:
            raise ShardFormatError(f"{raw.shard}: sample {raw.key} is not in the index")
        got = sample_sha256(raw.members)
        if got != want:
            raise ShardFormatError(f"{raw.shard}: sample {raw.key} fails its sha256 check ({got[:12]} != {want[:12]})")
        yield raw


def decode_samples(samples: Iterable[RawSample], decode: Decode = "mp4") -> Iterator[Sample | DecodedSample]:
    """Parse raw members into :class:`Sample`, plus decoded frames when ``decode="frames"``."""
    if decode not in ("mp4", "frames"):
        raise ValueError(f"decode must be 'mp4' or 'frames', got {decode!r}")
    for raw in samples:
        try:
            sample = Sample.from_members(raw.key, raw.members)
        except SampleError as err:
            raise SampleError(f"{raw.shard}: {err}") from err
        if decode == "mp4":
            yield sample
            continue
        from wmkit.datasets.video import decode_mp4_bytes  # lazy: PyAV only when frames are wanted

        frames = decode_mp4_bytes(sample.mp4, f"{raw.shard}:{raw.key}.mp4")
        if len(frames) != sample.num_frames:
            raise SampleError(
                f"{raw.shard}: sample {raw.key}: mp4 decodes to {len(frames)} frames, cameras have {sample.num_frames}"
            )
        yield DecodedSample(sample, torch.from_numpy(frames))


def _index_sha256(shards: Sequence[str]) -> dict[str, str]:
    """``{key: sha256}`` from the ``index.parquet`` beside each shard."""
    table: dict[str, str] = {}
    for root in sorted({os.path.dirname(s) for s in shards}):
        index = read_index(root)
        table.update(zip(index["key"], index["sha256"]))
    return table


class ShardDataset(IterableDataset):
    """Samples streamed from shards, split across ranks and DataLoader workers.

    Args:
        source: anything :func:`list_shards` accepts.
        decode: ``"mp4"`` yields :class:`Sample` (raw mp4 bytes); ``"frames"`` yields
            :class:`DecodedSample` with ``frames`` uint8 (T, H, W, 3).
        shuffle_buffer: samples held by the shuffle buffer (0 or 1 = no sample shuffle;
            shard order is then sorted too).
        resampled: draw shards with replacement forever (training); otherwise one
            pass per epoch with every sample exactly once across ranks and workers.
        verify: check every sample's sha256 against ``index.parquet``.
        seed: base seed; shard order and shuffle buffers derive from
            ``(seed, epoch, rank, worker)`` so runs replay exactly.
        rank, world_size: explicit node split; default ``torch.distributed`` or (0, 1).

    Use with ``DataLoader(dataset, batch_size=None, num_workers=n)``; call
    :meth:`set_epoch` before each epoch for a new order.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str],
        *,
        decode: Decode = "mp4",
        shuffle_buffer: int = 0,
        resampled: bool = False,
        verify: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if decode not in ("mp4", "frames"):
            raise ValueError(f"decode must be 'mp4' or 'frames', got {decode!r}")
        self.shards = list_shards(source)
        self.decode, self.shuffle_buffer, self.resampled = decode, shuffle_buffer, resampled
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = node_info(rank, world_size)
        self.index = _index_sha256(self.shards) if verify else None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shard order and shuffle seeds the next iteration uses."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Sample | DecodedSample]:
        worker, _ = _worker()
        if self.resampled:
            shards = resample_shards(self.shards, seed=self.seed, epoch=self.epoch, rank=self.rank, worker=worker)
        else:
            ordered = order_shards(self.shards, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle_buffer > 1)
            shards = split_by_worker(split_by_node(ordered, self.rank, self.world_size))
        samples = tar_samples(shards)
        if self.index is not None:
            samples = verify_samples(samples, self.index)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"shuffle:{self.seed}:{self.epoch}:{self.rank}:{worker}")
            samples = wds_shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
        return decode_samples(samples, self.decode)
