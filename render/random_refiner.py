"""Random-weight refiner folders in the SD-Turbo diffusers layout that :func:`load_refiner` reads.

Two sizes: ``tiny`` (~0.5 MB, for tests on CPU) and ``sd-turbo`` (the published SD-Turbo
architecture that DiFix3D fine-tunes: SD 2.1 UNet, SD VAE, OpenCLIP ViT-H text tower; ~1.3 B
parameters, fp32), for the refiner's speed benchmark where no weights can be downloaded.
Speed does not depend on the values. The tokenizer is character-level CLIP BPE (no merges),
enough for the refiner's one fixed prompt.

Example::

    write_random_refiner(tmp_path / "difix", "tiny")
    refiner = load_refiner(tmp_path / "difix", batch_size=2)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

Size = Literal["tiny", "sd-turbo"]

_UNET = {
    "tiny": dict(
        sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4,
    ),
    "sd-turbo": dict(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    ),
}  # fmt: skip
_VAE = {
    # scaling 10: random weights give small latents; scaled up, an x0 clipped to [-1, 1] would show
    "tiny": dict(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4, scaling_factor=10.0,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ),
    "sd-turbo": dict(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, scaling_factor=0.18215,
        sample_size=768, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ),
}  # fmt: skip
_TEXT = {
    "tiny": dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 max_position_embeddings=16),
    "sd-turbo": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                     num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512),
}  # fmt: skip


def write_random_refiner(root: str | Path, size: Size = "tiny", seed: int = 0) -> Path:
    """Write unet/, vae/, text_encoder/, tokenizer/, scheduler/ with random weights under ``root``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if size not in _UNET:
        raise ValueError(f"unknown refiner size {size!r}; choose from {sorted(_UNET)}")
    root = Path(root)
    torch.manual_seed(seed)
    UNet2DConditionModel(**_UNET[size]).save_pretrained(root / "unet")
    AutoencoderKL(**_VAE[size]).save_pretrained(root / "vae")
    text_config = CLIPTextConfig(**_TEXT[size], bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPTextModel(text_config).save_pretrained(root / "text_encoder")
    # Character-level CLIP BPE: every letter, word-final forms of the prompt's letters, no merges.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*"abcdefghijklmnopqrstuvwxyz", *(c + "</w>" for c in "adegimnortv")]:
        vocab[token] = len(vocab)
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    (root / "tokenizer/vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer/merges.txt").write_text("#version: 0.2\n")
    max_length = text_config.max_position_embeddings
    tokenizer = CLIPTokenizer(str(root / "tokenizer/vocab.json"), str(root / "tokenizer/merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(root / "tokenizer")
    # DDPMScheduler's default clip_sample=True is kept on purpose: the refiner must switch it off.
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(root / "scheduler")
    return root
