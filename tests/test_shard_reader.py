"""Shard reader: shard listing, round trips, shuffle, node/worker splits, resampling, verify."""

from __future__ import annotations

import itertools
import os
from collections import Counter

import numpy as np
import pytest
import torch
from _shard_fixtures import clip_frames, make_sample
from torch.utils.data import DataLoader

from wmkit.datasets.sample import DecodedSample, Sample
from wmkit.datasets.shard_format import ShardFormatError, read_index
from wmkit.datasets.shard_reader import (
    ShardDataset,
    list_shards,
    split_by_node,
    tar_samples,
    verify_samples,
)
from wmkit.datasets.shard_writer import ShardWriter

NUM_SAMPLES = 10


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """10 samples in 5 shards of 2; sample i uses clip seed i % 3."""
    out = tmp_path_factory.mktemp("shards")
    with ShardWriter(out, max_count=2) as writer:
        for i in range(NUM_SAMPLES):
            writer.write(make_sample(f"clip_{i:02d}", seed=i % 3, depth=i == 4))
    return out


ALL_KEYS = [f"clip_{i:02d}" for i in range(NUM_SAMPLES)]


def _keys(dataset, num_workers=0) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return [sample.key for sample in loader]


def test_list_shards_accepts_dir_glob_braces_index_and_list(shard_dir):
    want = [str(shard_dir / f"shard-{i:06d}.tar") for i in range(5)]
    assert list_shards(shard_dir) == want
    assert list_shards(str(shard_dir / "*.tar")) == want
    assert list_shards(str(shard_dir / "shard-{000000..000004}.tar")) == want
    assert list_shards(shard_dir / "index.parquet") == want
    assert list_shards(want[:2]) == want[:2]
    with pytest.raises(FileNotFoundError, match="no shards found"):
        list_shards(str(shard_dir / "nothing-*.tar"))


def test_round_trip_mp4_mode(shard_dir):
    samples = list(ShardDataset(shard_dir, verify=True))
    assert [s.key for s in samples] == ALL_KEYS
    assert all(isinstance(s, Sample) for s in samples)
    for i, sample in enumerate(samples):
        assert sample.to_members() == make_sample(f"clip_{i:02d}", seed=i % 3, depth=i == 4).to_members()


def test_round_trip_frames_mode(shard_dir):
    decoded = list(ShardDataset(shard_dir, decode="frames"))
    assert [d.key for d in decoded] == ALL_KEYS
    for i, item in enumerate(decoded):
        assert isinstance(item, DecodedSample)
        assert item.frames.dtype == torch.uint8 and item.frames.shape == (6, 24, 32, 3)
        error = np.abs(item.frames.numpy().astype(int) - clip_frames(6, seed=i % 3).astype(int))
        assert error.mean() < 4  # lossy H.264 of flat colours
    assert decoded[4].sample.depth.shape == (6, 6, 8)


def test_shuffle_buffer_is_seeded(shard_dir):
    first = _keys(ShardDataset(shard_dir, shuffle_buffer=4, seed=7))
    again = _keys(ShardDataset(shard_dir, shuffle_buffer=4, seed=7))
    other = _keys(ShardDataset(shard_dir, shuffle_buffer=4, seed=8))
    dataset = ShardDataset(shard_dir, shuffle_buffer=4, seed=7)
    dataset.set_epoch(1)
    next_epoch = _keys(dataset)
    assert first == again
    assert first != ALL_KEYS and other != first and next_epoch != first
    assert sorted(first) == sorted(other) == sorted(next_epoch) == ALL_KEYS


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_dataloader_workers_see_each_sample_once(shard_dir, num_workers):
    keys = _keys(ShardDataset(shard_dir, shuffle_buffer=3, seed=1), num_workers=num_workers)
    assert sorted(keys) == ALL_KEYS


def test_ranks_and_workers_partition_the_samples(shard_dir):
    per_rank = [_keys(ShardDataset(shard_dir, rank=r, world_size=2), num_workers=2) for r in range(2)]
    assert per_rank[0] and per_rank[1]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == ALL_KEYS
    assert list(split_by_node(range(7), 1, 3)) == [1, 4]
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        ShardDataset(shard_dir, rank=2, world_size=2)


def test_resampled_is_infinite_and_seeded_per_rank(shard_dir):
    def take(rank, seed=0, n=3 * NUM_SAMPLES):
        dataset = ShardDataset(shard_dir, resampled=True, seed=seed, rank=rank, world_size=2)
        return [s.key for s in itertools.islice(iter(dataset), n)]

    rank0 = take(0)
    assert len(rank0) == 3 * NUM_SAMPLES and set(rank0) <= set(ALL_KEYS)
    assert max(Counter(rank0).values()) > 1  # drawn with replacement
    assert rank0 == take(0) and rank0 != take(1) and rank0 != take(0, seed=1)


def test_verify_names_the_corrupt_sample_and_shard(tmp_path, shard_dir):
    for name in os.listdir(shard_dir):
        (tmp_path / name).write_bytes((shard_dir / name).read_bytes())
    row = read_index(tmp_path).set_index("key").loc["clip_05"]
    path = tmp_path / row["shard"]
    data = bytearray(path.read_bytes())
    data[row["offset"] + 700] ^= 0x01  # inside clip_05's cameras.npz data
    path.write_bytes(bytes(data))
    dataset = ShardDataset(tmp_path, verify=True)
    with pytest.raises(ShardFormatError, match=r"shard-000002.tar: sample clip_05 fails its sha256 check"):
        list(dataset)
    assert [s.key for s in ShardDataset([str(tmp_path / "shard-000000.tar")], verify=True)] == ALL_KEYS[:2]


def test_verify_stage_rejects_keys_missing_from_index(shard_dir):
    raw = next(tar_samples([str(shard_dir / "shard-000000.tar")]))
    with pytest.raises(ShardFormatError, match="sample clip_00 is not in the index"):
        list(verify_samples([raw], {}))
