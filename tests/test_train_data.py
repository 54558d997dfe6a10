"""Training batches from shards: buckets, bad samples skipped and counted, exact replay on resume."""

from __future__ import annotations

import logging

import pytest
import torch

from _train_fixtures import TEXT_DIM, clip_sample, mismatched_cameras, nan_latents, write_raw_shard, write_shards
from wmkit.model.config import LATENT_CHANNELS
from wmkit.train.data import ShardBatches, ShardLoader, model_inputs
from wmkit.train.pooling_vae import PoolingVAE


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """10 clips: 6 of 17 frames (3 latent frames) and 4 of 9 frames (2 latent frames)."""
    out = tmp_path_factory.mktemp("shards")
    samples = [clip_sample(i, frames=17 if i % 5 < 3 else 9) for i in range(10)]
    return write_shards(out, samples, max_count=3)


def _loader(source, **kw) -> ShardLoader:
    args = {"kind": "latents", "batch_size": 2, "seed": 5, "shuffle_buffer": 4} | kw
    return ShardLoader(ShardBatches(source, **args))


def _take(loader: ShardLoader, n: int) -> list:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_batches_hold_one_shape_with_cameras_and_text(shards):
    batches = _take(_loader(shards), 8)
    shapes = {b.latents.shape for b in batches}
    assert shapes == {(2, LATENT_CHANNELS, 3, 3, 4), (2, LATENT_CHANNELS, 2, 3, 4)}  # both buckets, never mixed
    for b in batches:
        T = 8 * (b.latents.shape[2] - 1) + 1
        assert b.c2w.shape == (2, T, 4, 4) and b.K.shape == (2, T, 3, 3) and b.image_hw == (96, 128)
        assert b.text.shape == (2, 4, TEXT_DIM) and bool(b.text_mask.all())
    inputs = model_inputs(batches[0], torch.device("cpu"))
    assert inputs.cameras.plucker.shape[:4] == (2, batches[0].latents.shape[2], 3, 4)


def test_replay_from_a_saved_position_continues_exactly(shards):
    for workers in (0, 2):
        straight = _take(_loader(shards, num_workers=workers), 9)
        first = _loader(shards, num_workers=workers)
        _take(first, 5)
        state = first.state_dict()
        resumed = _loader(shards, num_workers=workers)
        resumed.load_state_dict(state)
        for a, b in zip(straight[5:], _take(resumed, 4), strict=True):
            assert a.keys == b.keys, f"{workers} workers: {a.keys} != {b.keys}"
            torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=0)


def test_ranks_draw_different_streams(shards):
    r0 = [b.keys for b in _take(_loader(shards, rank=0, world_size=2), 4)]
    r1 = [b.keys for b in _take(_loader(shards, rank=1, world_size=2), 4)]
    assert r0 != r1


def test_bad_samples_are_skipped_logged_and_counted(tmp_path, caplog):
    good = write_shards(tmp_path / "s", [clip_sample(i) for i in range(3)] + [nan_latents(3), mismatched_cameras(4)])
    members = clip_sample(5).to_members()
    write_raw_shard(good / "shard-000009.tar", {"room-005": {k: v for k, v in members.items() if k != "cameras.npz"}})
    (good / "shard-000010.tar").write_bytes(b"not a tar at all" * 40)
    loader = _loader(good, batch_size=1, shuffle_buffer=0, resampled=False)
    with caplog.at_level(logging.WARNING, logger="wmkit.train.data"):
        keys = [b.keys[0] for b in _take(loader, 6)]
    assert set(keys) == {"room-000", "room-001", "room-002"}  # the 2nd epoch starts after the bad items
    counts = loader.bad_counts()
    assert counts == {"non-finite latents": 1, "camera/frame mismatch": 1, "missing members": 1, "broken shard": 1}
    assert "room-003" in caplog.text or "NaN" in caplog.text
    assert "room-005" in caplog.text and "shard-000010.tar" in caplog.text


def test_clips_too_short_for_context_parallelism_are_skipped_and_counted(shards):
    loader = _loader(shards, min_latent_frames=3)  # cp=3: the 2-latent-frame clips cannot be split
    assert {b.latents.shape[2] for b in _take(loader, 4)} == {3}
    assert loader.bad_counts()["too few latent frames"] > 0


def test_all_bad_data_fails_fast(tmp_path):
    write_shards(tmp_path / "s", [nan_latents(i) for i in range(3)])
    with pytest.raises(RuntimeError, match="3 bad samples in a row"):
        _take(_loader(tmp_path / "s", max_consecutive_bad=3), 1)


def test_video_shards_are_decoded_cropped_and_encoded(tmp_path):
    # 21 frames of 128 × 96 px: cut to 17 frames (3 latent frames); pooled by the stand-in VAE
    src = write_shards(tmp_path / "v", [clip_sample(i, frames=21, latents=False) for i in range(2)])
    batch = _take(_loader(src, kind="video", batch_size=2), 1)[0]
    assert batch.frames.shape == (2, 17, 96, 128, 3) and batch.frames.dtype == torch.uint8 and batch.text is None
    with pytest.raises(ValueError, match="no text_encoder"):
        model_inputs(batch, torch.device("cpu"), vae=PoolingVAE())
    z = PoolingVAE().encode(batch.frames)
    assert z.shape == (2, LATENT_CHANNELS, 3, 3, 4) and bool(torch.isfinite(z).all())
