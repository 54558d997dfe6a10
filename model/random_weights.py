"""Small random-weight VAE and caption encoder saved in their real on-disk layouts.

`wmkit demo` and the tests load them through the same code paths as real weights
(`wmkit.model.vae.VideoVAE`, `wmkit.model.text_encoder.TextEncoder`), since no weights can
be downloaded. They are instruments, never a substitute for trained weights.

The VAE's strides match the real LTX VAE (8 in time, 32 in space: patch 4 × three 2×
stages), its width does not (8 latent channels, 8-channel blocks, one layer per block), so
it runs in milliseconds on CPU. latents_mean/std and scaling_factor are not the identity,
so callers see the normalisation.
"""

from __future__ import annotations

from pathlib import Path

import torch

LATENT_CHANNELS = 8


def save_tiny_vae(folder: Path, seed: int = 0, scaling_factor: float = 1.5) -> Path:
    """Build a random `AutoencoderKLLTXVideo`, save it with `save_pretrained` to `folder`; return it."""
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        patch_size=4,
        scaling_factor=scaling_factor,
    )
    with torch.no_grad():
        vae.latents_mean.copy_(torch.linspace(-0.2, 0.2, LATENT_CHANNELS))
        vae.latents_std.copy_(torch.linspace(0.5, 2.0, LATENT_CHANNELS))
    vae.save_pretrained(folder)
    return folder


CAPTION_WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "camera", "walks", "through", "the", "room", "tiny", "test", "clip",
]


def save_tiny_text_encoder(folder: Path, hidden: int = 32) -> Path:
    """A random 1-layer BERT with its word-piece tokenizer, saved with `save_pretrained` to `folder`."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(CAPTION_WORDS) + "\n")
    config = transformers.BertConfig(vocab_size=len(CAPTION_WORDS), hidden_size=hidden, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=2 * hidden,
                                     max_position_embeddings=300)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)
    return folder
