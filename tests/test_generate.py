"""`wmkit generate` end to end with a tiny random DiT, tiny VAE and tiny BERT text encoder."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from _model_fixtures import single_thread  # noqa: E402,F401
from _shard_fixtures import make_cameras  # noqa: E402
from _vae_fixtures import LATENT_CHANNELS, moving_frames, save_tiny_text_encoder, save_tiny_vae  # noqa: E402
from PIL import Image  # noqa: E402

from wmkit.datasets.cameras import Cameras  # noqa: E402
from wmkit.datasets.video import decode_mp4_bytes, probe  # noqa: E402
from wmkit.model import GDNDiT, preset  # noqa: E402
from wmkit.model.cli import register  # noqa: E402
from wmkit.model.generate import (  # noqa: E402
    GenerateConfig,
    cameras_path_for,
    generate,
    load_model_weights,
    save_model_weights,
)
from wmkit.model.vae import file_sha256  # noqa: E402

H, W, FPS = 64, 96, 8.0


def tiny_dit(seed: int = 0) -> GDNDiT:
    """The tiny preset on the tiny VAE's channels, zero-initialised outputs woken so the sample moves."""
    torch.manual_seed(seed)
    model = GDNDiT(preset("tiny", latent_channels=LATENT_CHANNELS))
    with torch.no_grad():
        for p in model.parameters():
            if bool((p == 0).all()):
                p.normal_(std=0.05)
    return model


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Paths of every generate input: checkpoint, VAE, text encoder, image and 17-frame cameras."""
    root = tmp_path_factory.mktemp("generate")
    checkpoint = save_model_weights(tiny_dit(), root / "model.safetensors")
    vae = save_tiny_vae(root / "vae")
    save_tiny_text_encoder(root / "enc")
    Image.fromarray(moving_frames(1, (H, W))[0].numpy()).save(root / "first.png")
    make_cameras(17, fps=FPS, width=W, height=H).save(str(root / "path.cameras.npz"))
    return {"checkpoint": checkpoint, "vae": vae, "text_encoder": root / "enc", "image": root / "first.png",
            "cameras": root / "path.cameras.npz", "root": root}


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wmkit")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def cli_args(parts: dict, out, **changes) -> list[str]:
    values = {"checkpoint": parts["checkpoint"], "vae": parts["vae"], "text-encoder": parts["text_encoder"],
              "image": parts["image"], "cameras": parts["cameras"], "prompt": "a camera walks through the room",
              "out": out, "steps": 2, "guidance": 2.0, **changes}
    return ["generate", *[a for k, v in values.items() for a in (f"--{k}", str(v))]]


def test_weights_round_trip(parts):
    model = load_model_weights(parts["checkpoint"])
    assert model.cfg == preset("tiny", latent_channels=LATENT_CHANNELS) and not model.training
    for (k, a), b in zip(tiny_dit().state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert json.loads(parts["checkpoint"].with_suffix(".json").read_text())["dit_config"]["softmax_blocks"] == [3]


def test_generate_writes_video_cameras_and_record(parts, tmp_path, single_thread):
    config = GenerateConfig(steps=2, guidance=2.0, seed=3)
    out = generate(parts["checkpoint"], parts["vae"], parts["text_encoder"], parts["image"], parts["cameras"],
                   "a camera walks through the room", tmp_path / "clip.mp4", config)
    frames = decode_mp4_bytes(out.read_bytes())
    assert frames.shape == (17, H, W, 3)
    assert frames.std(axis=0).mean() > 1.0  # frames differ: the sample is a video, not a still
    assert probe(out).fps == pytest.approx(FPS)
    saved, given = Cameras.load(str(cameras_path_for(out))), Cameras.load(str(parts["cameras"]))
    assert saved.to_npz_bytes() == given.to_npz_bytes() and cameras_path_for(out).name == "clip.cameras.npz"
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["checkpoint"]["sha256"] == file_sha256(parts["checkpoint"])
    assert record["config"]["seed"] == 3 and record["prompt"] == "a camera walks through the room"
    assert record["vae"]["weights"] and record["vae"]["time_stride"] == 8
    assert list(record["text_encoder"]["weights"]) == ["model.safetensors"]


def test_cli_chunk_causal_over_two_chunks(parts, tmp_path, single_thread, capsys):
    cameras = tmp_path / "long.cameras.npz"
    make_cameras(49, fps=FPS, width=W, height=H).save(str(cameras))  # 7 latent frames: chunks [4, 3]
    out = tmp_path / "long.mp4"
    assert cli(cli_args(parts, out, cameras=cameras, mode="chunk_causal", seed=1)) == 0
    assert decode_mp4_bytes(out.read_bytes()).shape == (49, H, W, 3)
    assert f"wrote {out}" in capsys.readouterr().out


def _write_image(path, hw):
    Image.fromarray(np.zeros((*hw, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_checkpoint", r"nothing\.safetensors does not exist"),
        ("cameras_16_frames", r"cameras have 16 frames; need 8·k \+ 1 \(e\.g\. 9 or 17\)"),
        ("image_64x80", r"image size 80x64 is not a multiple of the VAE's 32 pixels"),
        ("cameras_for_128x192", r"principal points .* fall outside the 96x64 image"),
        ("missing_image", r"image .*nothing\.png does not exist"),
    ],
)
def test_bad_inputs_exit_2_with_a_named_reason(parts, tmp_path, capsys, case, message):
    changes = {
        "missing_checkpoint": {"checkpoint": tmp_path / "nothing.safetensors"},
        "cameras_16_frames": {"cameras": tmp_path / "c.npz"},
        "image_64x80": {"image": _write_image(tmp_path / "narrow.png", (64, 80))},
        "cameras_for_128x192": {"cameras": tmp_path / "c.npz"},
        "missing_image": {"image": tmp_path / "nothing.png"},
    }[case]
    if case == "cameras_16_frames":
        make_cameras(16, fps=FPS, width=W, height=H).save(str(tmp_path / "c.npz"))
    if case == "cameras_for_128x192":
        make_cameras(17, fps=FPS, width=192, height=128).save(str(tmp_path / "c.npz"))
    out = tmp_path / "clip.mp4"
    assert cli(cli_args(parts, out, **changes)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: library loading chatter
    assert last.startswith("wmkit generate: ") and re.search(message, last), last
    assert not out.exists()


def test_weights_that_do_not_fit_their_config_are_named(parts, tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(parts["checkpoint"].read_bytes())
    config = json.loads(parts["checkpoint"].with_suffix(".json").read_text())
    config["dit_config"]["depth"] = 5
    config["dit_config"]["softmax_blocks"] = [3, 4]
    bad.with_suffix(".json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"does not fit its config: missing \['blocks\.4\."):
        load_model_weights(bad)
    bad.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.json does not exist"):
        load_model_weights(bad)


def test_sampling_knobs_are_checked():
    with pytest.raises(ValueError, match="need steps >= 1"):
        GenerateConfig(steps=0)
    with pytest.raises(ValueError, match="mode must be"):
        GenerateConfig(mode="causal")
