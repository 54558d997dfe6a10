"""Shared render test data: a tiny random diffusers pipeline in the SD-Turbo layout the refiner loads,
and training images for a DL3DV-layout scene folder.

Example::

    write_tiny_pipeline(tmp_path / "difix")
    refiner = load_refiner(tmp_path / "difix", batch_size=2)   # space_stride 2, ~0.5 MB of weights
    write_scene(scene, tmp_path / "s")
    write_training_images(tmp_path / "s", colours)              # one flat-colour PNG per camera
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def write_tiny_pipeline(root: Path) -> None:
    """A random SD-Turbo-layout folder: unet/, vae/, text_encoder/, tokenizer/, scheduler/ (~0.5 MB)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4,
    ).save_pretrained(root / "unet")  # fmt: skip
    AutoencoderKL(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
        scaling_factor=10.0,  # random weights give small latents; scaled up, an x0 clipped to [-1, 1] would show
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(root / "vae")  # fmt: skip
    CLIPTextModel(CLIPTextConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).save_pretrained(root / "text_encoder")  # fmt: skip
    # Character-level CLIP BPE: every letter, word-final forms of the prompt's letters, no merges.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*"abcdefghijklmnopqrstuvwxyz", *(c + "</w>" for c in "adegimnortv")]:
        vocab[token] = len(vocab)
    (root / "tokenizer").mkdir()
    (root / "tokenizer/vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer/merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "tokenizer/vocab.json"), str(root / "tokenizer/merges.txt"), model_max_length=16)
    tokenizer.save_pretrained(root / "tokenizer")
    # DDPMScheduler's default clip_sample=True is kept on purpose: the refiner must switch it off.
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")


def write_training_images(folder: Path, colours: np.ndarray, size: tuple[int, int] = (40, 20)) -> list[Path]:
    """One flat-colour PNG of ``size`` (W, H) per frame of ``folder/transforms.json``, at its ``file_path``;
    ``colours`` (N, 3) in camera order (sorted file paths). Returns the paths in that order."""
    from PIL import Image

    meta = json.loads((folder / "transforms.json").read_text())
    paths = sorted(folder / f["file_path"] for f in meta["frames"])
    for path, colour in zip(paths, colours):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.broadcast_to(colour, (size[1], size[0], 3)).astype(np.uint8)).save(path)
    return paths
