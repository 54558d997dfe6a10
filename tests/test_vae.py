"""VideoVAE on a tiny random LTX VAE saved to disk: shapes, normalisation, checks, provenance."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from _model_fixtures import single_thread  # noqa: E402,F401
from _vae_fixtures import FRAME_HW, LATENT_CHANNELS, moving_frames, save_tiny_vae  # noqa: E402

from wmkit.model.vae import VAEError, VideoVAE, file_sha256  # noqa: E402


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vae")


@pytest.fixture(scope="module")
def vae(vae_dir):
    return VideoVAE(vae_dir)


def test_strides_and_provenance_come_from_the_folder(vae, vae_dir):
    assert (vae.latent_channels, vae.time_stride, vae.space_stride) == (LATENT_CHANNELS, 8, 32)
    weights = sorted(vae_dir.glob("*.safetensors"))
    assert vae.weights == {p.name: file_sha256(p) for p in weights} and len(weights) == 1
    prov = vae.provenance()
    assert prov["class"] == "AutoencoderKLLTXVideo" and prov["scaling_factor"] == 1.5
    json.dumps(prov)  # goes into shard json as is


def test_pipeline_folder_with_vae_subfolder_loads(vae_dir, tmp_path):
    pipeline = tmp_path / "pipeline"
    (pipeline / "vae").mkdir(parents=True)
    for f in vae_dir.iterdir():
        (pipeline / "vae" / f.name).write_bytes(f.read_bytes())
    assert VideoVAE(pipeline).path == pipeline / "vae"


def test_encode_shapes_batch_and_normalisation(vae, single_thread):
    frames = torch.stack([moving_frames(17, seed=0), moving_frames(17, seed=1)])  # [2, 17, 64, 96, 3]
    z = vae.encode(frames)
    assert z.shape == (2, LATENT_CHANNELS, 3, FRAME_HW[0] // 32, FRAME_HW[1] // 32) and z.dtype == torch.float32
    torch.testing.assert_close(vae.encode(frames[1:]), z[1:], rtol=1e-4, atol=1e-5)  # batching changes nothing
    x = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():
        mu = vae.model.encode(x).latent_dist.mean
    mean = vae.model.latents_mean.view(1, -1, 1, 1, 1)
    std = vae.model.latents_std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(z, (mu - mean) * 1.5 / std)  # diffusers' LTX _normalize_latents


def test_decode_inverts_the_normalisation(vae, single_thread):
    z = torch.randn(1, LATENT_CHANNELS, 2, 2, 3, generator=torch.Generator().manual_seed(0))
    frames = vae.decode(z)
    assert frames.shape == (1, 9, 64, 96, 3) and frames.dtype == torch.uint8
    mu = z * vae.model.latents_std.view(1, -1, 1, 1, 1) / 1.5 + vae.model.latents_mean.view(1, -1, 1, 1, 1)
    with torch.no_grad():
        x = vae.model.decode(mu).sample
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
    assert (frames.int() - expected.int()).abs().max() <= 1


def test_single_frame_is_one_latent_frame(vae, single_thread):
    z = vae.encode(moving_frames(1)[None])
    assert z.shape[2] == 1 and vae.decode(z).shape[1] == 1


@pytest.mark.parametrize(
    ("shape", "dtype", "match"),
    [
        ((1, 16, 64, 96, 3), torch.uint8, r"16 frames .* 8·k \+ 1 \(e.g. 9\)"),
        ((1, 9, 48, 96, 3), torch.uint8, r"96x48 is not a multiple of 32"),
        ((1, 9, 64, 96, 3), torch.float32, r"need uint8 frames"),
        ((9, 64, 96, 3), torch.uint8, r"need uint8 frames \[B, T, H, W, 3\]"),
    ],
)
def test_bad_frames_are_named(vae, shape, dtype, match):
    with pytest.raises(VAEError, match=match):
        vae.encode(torch.zeros(shape, dtype=dtype))


def test_bad_latents_are_named(vae):
    with pytest.raises(VAEError, match=r"need latents \[B, 8"):
        vae.decode(torch.zeros(1, 4, 2, 2, 3))


def test_valid_num_frames_trims_to_the_stride(vae):
    assert [vae.valid_num_frames(n) for n in (1, 8, 9, 16, 17, 30)] == [1, 1, 9, 9, 17, 25]


def test_missing_folder_and_weights_are_named(vae_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoVAE(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VideoVAE(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((vae_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"noweights has no weight file"):
        VideoVAE(tmp_path / "noweights")


def test_wrong_class_is_refused(vae_dir, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    config = json.loads((vae_dir / "config.json").read_text())
    config["_class_name"] = "AutoencoderKL"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(VAEError, match="names class 'AutoencoderKL'"):
        VideoVAE(folder)
