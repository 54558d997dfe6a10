"""The LTX video VAE behind the DiT's latents (DESIGN §3: 128 channels, stride 8 in time, 32 in space).

Wraps diffusers' ``AutoencoderKLLTXVideo`` (LTX-Video) or ``AutoencoderKLLTX2Video``
(LTX-2), whichever class the folder's ``config.json`` names, loaded from a local folder
only (DESIGN §6). Needs the optional ``diffusers`` package (pinned 0.42.1).

Pixels and latents::

    frames uint8 [B, T, H, W, 3]  ──► x = frames/127.5 − 1, [B, 3, T, H, W]
      ──► encoder ──► posterior mean μ  (the mode: latents are deterministic, reruns match)
      ──► z = (μ − latents_mean) · scaling_factor / latents_std        [B, C, T', H', W']
    decode is the inverse: μ = z · latents_std / scaling_factor + latents_mean ──► decoder
      ──► clamp to [−1, 1] ──► round((x + 1)·127.5) uint8

The normalisation is the one diffusers' LTX pipeline applies (``_normalize_latents`` /
``_denormalize_latents`` in ``pipelines/ltx/pipeline_ltx.py``) with the VAE's stored
per-channel ``latents_mean``/``latents_std`` buffers and ``config.scaling_factor``.
VAEs with timestep-conditioned decoders are decoded at timestep 0 without added noise,
the pipeline's default (``decode_timestep=0``).

Shapes: time stride s_t (8 for LTX) and space stride s_x (32) are read from the loaded
model; T = s_t·(T' − 1) + 1 frames give T' latent frames, H = s_x·H', W = s_x·W'.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import torch

__all__ = ["VAE_CLASSES", "VAEError", "VideoVAE", "file_sha256", "weight_sha256"]

#: diffusers classes a VAE folder may name in its config.json ``_class_name``.
VAE_CLASSES = ("AutoencoderKLLTXVideo", "AutoencoderKLLTX2Video")


class VAEError(ValueError):
    """A VAE folder of the wrong class or an input the VAE cannot take; the message names the
    path or the shape. A missing folder or weight file is a ``FileNotFoundError``."""


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks (weight files are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def weight_sha256(folder: str | Path) -> dict[str, str]:
    """``{file name: sha256}`` of a model folder's weight files (*.safetensors, *.bin), for provenance."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin"))
    return {p.name: file_sha256(p) for p in files}


def _model_folder(path: Path) -> Path:
    """The folder holding the VAE's config.json: ``path`` itself, or its ``vae/`` (a pipeline folder)."""
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            return folder
    if not path.exists():
        raise FileNotFoundError(f"VAE folder {path} does not exist")
    raise FileNotFoundError(
        f"VAE folder {path} has no config.json (nor vae/config.json); expected a save_pretrained folder"
    )


class VideoVAE:
    """An LTX video VAE loaded once from a local folder: uint8 frames ⇄ normalised latents.

    Args:
        path: folder saved with ``save_pretrained`` (config.json + weights), or a pipeline
            folder with a ``vae/`` subfolder.
        device: where the model runs; on CUDA encode/decode run under bf16 autocast.

    Attributes: ``latent_channels`` (C), ``time_stride``, ``space_stride`` and ``weights``
    (``{file name: sha256}`` of the weight files, for shard provenance).

    Example::

        vae = VideoVAE("/weights/ltx2-vae", device="cuda")
        z = vae.encode(frames)        # [B, 17, 256, 384, 3] uint8 -> [B, 128, 3, 8, 12]
        video = vae.decode(z)         # -> [B, 17, 256, 384, 3] uint8
    """

    def __init__(self, path: str | Path, *, device: torch.device | str = "cpu") -> None:
        import diffusers

        self.path = _model_folder(Path(path))
        config = json.loads((self.path / "config.json").read_text())
        name = config.get("_class_name")
        if name not in VAE_CLASSES:
            raise VAEError(f"VAE folder {self.path}: config.json names class {name!r}, expected one of {VAE_CLASSES}")
        self.weights = weight_sha256(self.path)
        if not self.weights:
            raise FileNotFoundError(f"VAE folder {self.path} has no weight file (*.safetensors or *.bin)")
        self.class_name = name
        self.device = torch.device(device)
        self.model = getattr(diffusers, name).from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        self.latent_channels = int(self.model.config.latent_channels)
        self.time_stride = int(self.model.temporal_compression_ratio)
        self.space_stride = int(self.model.spatial_compression_ratio)

    def provenance(self) -> dict:
        """What produced a latent: class, folder, weight sha256s and the shape constants."""
        return {
            "class": self.class_name,
            "path": str(self.path),
            "weights": dict(self.weights),
            "latent_channels": self.latent_channels,
            "time_stride": self.time_stride,
            "space_stride": self.space_stride,
            "scaling_factor": float(self.model.config.scaling_factor),
        }

    def num_latent_frames(self, num_frames: int) -> int:
        """T' = (T − 1)/s_t + 1; raises naming the count unless T ≡ 1 (mod s_t)."""
        if num_frames < 1 or (num_frames - 1) % self.time_stride:
            raise VAEError(
                f"VAE: {num_frames} frames do not fill latent frames; need {self.time_stride}·k + 1 "
                f"(e.g. {self.valid_num_frames(max(num_frames, 1))})"
            )
        return (num_frames - 1) // self.time_stride + 1

    def valid_num_frames(self, num_frames: int) -> int:
        """The largest frame count ≤ ``num_frames`` that the VAE takes (s_t·k + 1; at least 1)."""
        return (max(num_frames, 1) - 1) // self.time_stride * self.time_stride + 1

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        shape = (1, -1, 1, 1, 1)
        mean = self.model.latents_mean.float().view(shape)
        std = self.model.latents_std.float().view(shape)
        return mean, std, float(self.model.config.scaling_factor)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised latents z [B, C, T', H', W'] float32 of frames uint8 [B, T, H, W, 3] RGB.

        T must be s_t·k + 1 and H, W multiples of s_x; otherwise raises `VAEError` with the shape."""
        if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3:
            raise VAEError(f"VAE.encode: need uint8 frames [B, T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        _, T, H, W, _ = frames.shape
        self.num_latent_frames(T)
        if H % self.space_stride or W % self.space_stride:
            raise VAEError(f"VAE.encode: frame size {W}x{H} is not a multiple of {self.space_stride} pixels")
        x = frames.to(self.device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        with self._autocast():
            mu = self.model.encode(x.to(self.model.dtype)).latent_dist.mode()
        mean, std, scale = self._stats()
        return (mu.float() - mean) * scale / std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Frames uint8 [B, T, H, W, 3] of normalised latents z [B, C, T', H', W'] (T = s_t·(T' − 1) + 1)."""
        if z.dim() != 5 or z.shape[1] != self.latent_channels:
            raise VAEError(f"VAE.decode: need latents [B, {self.latent_channels}, T', H', W'], got {tuple(z.shape)}")
        mean, std, scale = self._stats()
        mu = z.to(self.device).float() * std / scale + mean
        temb = torch.zeros(z.shape[0], device=self.device) if self.model.config.timestep_conditioning else None
        with self._autocast():
            x = self.model.decode(mu.to(self.model.dtype), temb).sample
        pixels = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 4, 1).cpu()
