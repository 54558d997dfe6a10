"""Latent shards from generated video shards with the tiny VAE: members, trimming, failures, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from _model_fixtures import single_thread  # noqa: E402,F401
from _shard_fixtures import make_cameras, make_meta  # noqa: E402
from _vae_fixtures import LATENT_CHANNELS, moving_frames, save_tiny_text_encoder, save_tiny_vae  # noqa: E402

from wmkit.datasets.sample import Sample  # noqa: E402
from wmkit.datasets.shard_format import read_index  # noqa: E402
from wmkit.datasets.shard_reader import ShardDataset  # noqa: E402
from wmkit.datasets.shard_writer import ShardWriter  # noqa: E402
from wmkit.datasets.video import decode_mp4_bytes, encode_mp4  # noqa: E402
from wmkit.model.vae import VideoVAE  # noqa: E402
from wmkit.train.latents import Latents, encode_latent_shards, latent_frame_indices  # noqa: E402

FPS = 8.0
# key: (frames, (H, W)); "odd" is 20 frames (trimmed to 17); "narrow" is 80 px wide (not 32·k).
CLIPS = {"a": (17, (64, 96)), "odd": (20, (64, 96)), "narrow": (9, (64, 80)), "d": (17, (64, 96)), "one": (1, (64, 96))}


def video_sample(key: str, num_frames: int, hw: tuple[int, int], seed: int) -> Sample:
    H, W = hw
    frames = moving_frames(num_frames, hw, seed=seed).numpy()
    meta = {**make_meta(num_frames, source_id=key), "size": [W, H], "fps": FPS}
    cams = make_cameras(num_frames, fps=FPS, width=W, height=H)
    return Sample(key, encode_mp4(frames, FPS, preset="ultrafast"), cams, meta)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    with ShardWriter(root, max_count=3) as writer:
        for seed, (key, (T, hw)) in enumerate(CLIPS.items()):
            writer.write(video_sample(key, T, hw, seed))
    return root


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vae")


@pytest.fixture(scope="module")
def encoded(video_dir, vae_dir, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("latents")
    status = encode_latent_shards(video_dir, out, vae_dir, batch_size=2, progress=False, max_count=2)
    return out, status


def test_latent_frames_take_the_last_frame_of_each_stride():
    assert latent_frame_indices(4).tolist() == [0, 8, 16, 24]
    assert latent_frame_indices(1).tolist() == [0]


def test_status_rows_done_and_failed(encoded):
    out, status = encoded
    rows = status.set_index("clip_id")
    assert sorted(rows.index) == sorted(CLIPS)
    assert set(rows.index[rows["status"] == "done"]) == {"a", "odd", "d", "one"}
    assert rows.loc["narrow", "stage"] == "size"
    assert "80x64 is not a multiple of the VAE's 32" in rows.loc["narrow", "reason"]
    assert (rows.loc[["a", "odd", "d", "one"], "shard"] != "").all()
    assert sorted(read_index(out)["key"]) == ["a", "d", "odd", "one"]


def test_samples_keep_video_and_cameras_and_carry_latents(encoded, video_dir, vae_dir, single_thread):
    out, _ = encoded
    inputs = {s.key: s for s in ShardDataset(video_dir)}
    vae = VideoVAE(vae_dir)
    outputs = {s.key: s for s in ShardDataset(out, verify=True)}  # parses and validates every member
    for key, sample in outputs.items():
        src = inputs[key]
        assert sample.mp4 == src.mp4 and sample.cameras.to_npz_bytes() == src.cameras.to_npz_bytes()
        assert sample.meta["provenance"]["vae"]["weights"] == vae.weights
        lat = Latents.from_bytes(sample.latents)
        T_enc = 8 * ((len(src.cameras) - 1) // 8) + 1
        Tl = (T_enc - 1) // 8 + 1
        assert lat.num_frames == T_enc and lat.z.shape == (LATENT_CHANNELS, Tl, 2, 3) and lat.z.dtype == np.float16
        pick = 8 * np.arange(Tl)
        np.testing.assert_array_equal(lat.c2w, src.cameras.c2w[pick])
        np.testing.assert_array_equal(lat.K, src.cameras.K[pick])
        np.testing.assert_array_equal(lat.t, src.cameras.t[pick])
        np.testing.assert_array_equal(lat.frame_index, src.cameras.frame_index[pick])
        assert (lat.time_stride, lat.space_stride, lat.vae) == (8, 32, vae.provenance())
        frames = torch.from_numpy(decode_mp4_bytes(src.mp4))[:T_enc]
        alone = vae.encode(frames[None])[0]  # one clip per call: batching must not change the result
        torch.testing.assert_close(torch.from_numpy(lat.z).float(), alone, atol=2e-3, rtol=1e-3)


def test_rerun_does_no_work_twice_and_retry_redoes_failures(encoded, video_dir, vae_dir, single_thread):
    out, first = encoded
    tars = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    again = encode_latent_shards(video_dir, out, vae_dir, progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == tars
    key = lambda df: df.sort_values("clip_id").reset_index(drop=True)  # noqa: E731
    assert key(again).equals(key(first))  # nothing re-run, not even the failure
    retried = encode_latent_shards(video_dir, out, vae_dir, progress=False, retry_failed=True).set_index("clip_id")
    before = first.set_index("clip_id")
    assert retried.loc["narrow", "finished_at"] > before.loc["narrow", "finished_at"]
    assert retried.loc["a", "finished_at"] == before.loc["a", "finished_at"]
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == tars


def test_latents_bytes_round_trip_and_name_missing_parts(encoded):
    out, _ = encoded
    sample = next(iter(ShardDataset(out)))
    lat = Latents.from_bytes(sample.latents)
    assert Latents.from_bytes(lat.to_bytes()).to_bytes() == lat.to_bytes() == sample.latents
    from safetensors.numpy import save

    with pytest.raises(ValueError, match=r"clip-x: latents.safetensors lacks tensors \['c2w', 'K'"):
        Latents.from_bytes(save({"z": lat.z, "t": lat.t, "frame_index": lat.frame_index}), name="clip-x")


def test_bad_batch_size_and_missing_input_are_named(vae_dir, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        encode_latent_shards(tmp_path, tmp_path / "out", vae_dir, batch_size=0)
    with pytest.raises(FileNotFoundError, match="no shards found"):
        encode_latent_shards(tmp_path / "empty", tmp_path / "out", vae_dir, progress=False)


def test_shards_are_byte_identical_across_runs(encoded, video_dir, vae_dir, tmp_path, single_thread):
    out, _ = encoded
    encode_latent_shards(video_dir, tmp_path, vae_dir, batch_size=2, progress=False, max_count=2)
    tars = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert tars and {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")} == tars


def test_caption_embeddings_are_stored_for_the_trainer(video_dir, vae_dir, tmp_path, single_thread):
    pytest.importorskip("transformers")
    from wmkit.model.text_encoder import TextEncoder

    encoder_dir = save_tiny_text_encoder(tmp_path / "enc")
    out = tmp_path / "out"
    encode_latent_shards(video_dir, out, vae_dir, text_encoder=encoder_dir, text_max_length=12, progress=False)
    sample = next(s for s in ShardDataset(out) if s.key == "a")
    lat = Latents.from_bytes(sample.latents)
    emb, mask = TextEncoder(encoder_dir, max_length=12).encode([sample.meta["caption"]])  # "a tiny test clip"
    assert lat.text.dtype == np.float16 and lat.text.shape == (int(mask.sum()), 32) == (6, 32)
    assert lat.text_mask.dtype == np.bool_ and lat.text_mask.all()
    torch.testing.assert_close(torch.from_numpy(lat.text).float(), emb[0][mask[0]], atol=2e-3, rtol=1e-3)
    assert sorted(sample.meta["provenance"]["text_encoder"]["weights"]) == ["model.safetensors"]
