"""Image + cameras + caption → video: the `wmkit generate` pipeline, and the model weight files it reads.

::

    first.png uint8 [H, W, 3] ──► VideoVAE.encode (a 1-frame clip) ──► z₀ [1, C, 1, H', W']
    cameras.npz (T = 8·(T' − 1) + 1 frames, K in pixels of H × W) ──► camera_inputs
    prompt, negative prompt ──► TextEncoder ──► caption / null caption
    noise [1, C, T', H', W'] (seeded) ──► Euler steps with CFG, first latent frame held at z₀
        (sample_euler over the whole clip, or sample_chunk_causal chunk by chunk)
    ──► VideoVAE.decode ──► frames uint8 [T, H, W, 3] ──► clip.mp4
                                               + clip.cameras.npz, clip.json (prompt, config, sha256s)

Model weight files: ``model.safetensors`` (the `GDNDiT` state dict, nothing else) with
``model.json`` beside it (the `DiTConfig`). Plain files a trainer exports once, read
without pickle; every key must match (no silently missing weights, DESIGN §6).

The video's fps is the cameras' own (1 / median frame interval of ``t``); a single-frame
clip, which has none, is written at 16 fps (DESIGN: 16 fps corpora).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wmkit.datasets.cameras import Cameras
from wmkit.datasets.video import write_mp4

from .camera_rays import camera_inputs
from .config import DiTConfig
from .dit import GDNDiT
from .sampling import dit_velocity, flow_sigmas, sample_chunk_causal, sample_euler
from .text_encoder import TextEncoder
from .vae import VideoVAE, file_sha256, weight_sha256

__all__ = [
    "GenerateConfig",
    "cameras_path_for",
    "generate",
    "generate_frames",
    "load_model_weights",
    "save_model_weights",
]

DEFAULT_FPS = 16.0


def _config_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def save_model_weights(model: GDNDiT, path: str | Path) -> Path:
    """Write ``model``'s state dict to ``path`` (safetensors) and its config to ``path`` with .json; return path."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, path)
    config = {"dit_config": dataclasses.asdict(model.cfg)}
    _config_path(path).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def load_model_weights(path: str | Path, *, device: torch.device | str = "cpu") -> GDNDiT:
    """A `GDNDiT` built from ``path``'s .json config with ``path``'s safetensors weights, in eval mode.

    Raises FileNotFoundError naming a missing file, ValueError naming missing or unexpected keys."""
    from safetensors.torch import load_file

    path = Path(path)
    for needed in (path, _config_path(path)):
        if not needed.is_file():
            raise FileNotFoundError(
                f"model weights: {needed} does not exist (need {path.name} and {_config_path(path).name})"
            )
    try:
        fields = json.loads(_config_path(path).read_text())["dit_config"]
        cfg = DiTConfig(**{**fields, "softmax_blocks": tuple(fields["softmax_blocks"])})
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"model weights: {_config_path(path)} is not a DiT config ({err})") from err
    model = GDNDiT(cfg)
    result = model.load_state_dict(load_file(path), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"model weights: {path} does not fit its config: missing {result.missing_keys[:5]}"
            f"{' …' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.to(device).eval()


@dataclass(frozen=True)
class GenerateConfig:
    """Sampling knobs of `generate`."""

    steps: int = 30
    """Euler steps from noise to clean."""
    guidance: float = 4.5
    """Classifier-free guidance scale (1 = no unconditional pass)."""
    mode: Literal["bidirectional", "chunk_causal"] = "bidirectional"
    """Whole clip at once, or chunk by chunk with carried caches (`sample_chunk_causal`)."""
    seed: int = 0
    """Seed of the initial noise."""
    shift: float = 9.8
    """Flow shift of the schedule (the release samples with 9.8 at 720p)."""
    negative_prompt: str = ""
    """Caption of the unconditional branch."""
    max_text_tokens: int = 300
    """Tokens per caption (the release: 300)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.guidance < 1.0 or self.shift <= 0:
            raise ValueError(
                f"GenerateConfig: need steps >= 1, guidance >= 1, shift > 0; "
                f"got {self.steps}, {self.guidance}, {self.shift}"
            )
        if self.mode not in ("bidirectional", "chunk_causal"):
            raise ValueError(f"GenerateConfig: mode must be 'bidirectional' or 'chunk_causal', got {self.mode!r}")


def _check_inputs(image: np.ndarray, cameras: Cameras, vae: VideoVAE, name: str) -> None:
    """Raise ValueError naming ``name`` unless the image and the cameras fit the VAE and each other."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    H, W = image.shape[:2]
    if H % vae.space_stride or W % vae.space_stride:
        raise ValueError(f"{name}: image size {W}x{H} is not a multiple of the VAE's {vae.space_stride} pixels")
    T = len(cameras)
    if (T - 1) % vae.time_stride:
        raise ValueError(
            f"{name}: cameras have {T} frames; need {vae.time_stride}·k + 1 (e.g. {vae.valid_num_frames(T)} or "
            f"{vae.valid_num_frames(T) + vae.time_stride})"
        )
    cx, cy = cameras.K[:, 0, 2], cameras.K[:, 1, 2]
    if not ((cx > 0) & (cx < W) & (cy > 0) & (cy < H)).all():
        raise ValueError(
            f"{name}: camera principal points (cx {cx.min():.1f}..{cx.max():.1f}, "
            f"cy {cy.min():.1f}..{cy.max():.1f} px) "
            f"fall outside the {W}x{H} image: K is for another image size"
        )


def _check_parts(model: GDNDiT, vae: VideoVAE, text_encoder: TextEncoder, name: str) -> None:
    """Raise ValueError naming ``name`` unless the model takes the VAE's latents and the encoder's text."""
    if model.cfg.latent_channels != vae.latent_channels:
        raise ValueError(
            f"{name}: the model takes {model.cfg.latent_channels} latent channels, the VAE gives {vae.latent_channels}"
        )
    if text_encoder.dim != model.cfg.text_dim:
        raise ValueError(
            f"{name}: the text encoder gives {text_encoder.dim}-wide embeddings, the model takes {model.cfg.text_dim}"
        )


@torch.no_grad()
def generate_frames(
    model: GDNDiT,
    vae: VideoVAE,
    text_encoder: TextEncoder,
    image: np.ndarray,
    cameras: Cameras,
    prompt: str,
    config: GenerateConfig = GenerateConfig(),
    *,
    name: str = "generate",
) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] of a clip starting at ``image`` uint8 [H, W, 3] and following ``cameras``.

    ``cameras``: T = 8·(T' − 1) + 1 frames, c2w OpenCV, K in pixels of the H × W image.
    ``name`` labels errors (e.g. the input files)."""
    _check_inputs(image, cameras, vae, name)
    _check_parts(model, vae, text_encoder, name)
    device = next(model.parameters()).device
    H, W = image.shape[:2]
    z0 = vae.encode(torch.from_numpy(image)[None, None]).to(device)  # [1, C, 1, H', W']
    latent_hw = tuple(z0.shape[-2:])
    text, mask = text_encoder.encode([prompt, config.negative_prompt])
    text, mask = text.to(device), mask.to(device)
    c2w = torch.from_numpy(cameras.c2w)[None].to(device)
    K = torch.from_numpy(cameras.K)[None].to(device)
    cams = camera_inputs(c2w, K, latent_hw, (H, W), translation_scale=model.cfg.ucpe_translation_scale)
    Tl = (len(cameras) - 1) // vae.time_stride + 1
    g = torch.Generator(device=device).manual_seed(config.seed)
    noise = torch.randn(1, vae.latent_channels, Tl, *latent_hw, generator=g, device=device)
    sigmas = flow_sigmas(config.steps, config.shift, device=device)
    args = (cams, text[:1], mask[:1], text[1:], mask[1:])
    if config.mode == "chunk_causal":
        x = sample_chunk_causal(model, noise, *args, sigmas, guidance=config.guidance, first_frame=z0)
    else:
        velocity = dit_velocity(model, *args, mode="bidirectional")
        x = sample_euler(velocity, noise, sigmas, guidance=config.guidance, first_frame=z0)
    return vae.decode(x)[0].numpy()


def cameras_path_for(video: str | Path) -> Path:
    """Where `generate` writes the cameras of ``video``: ``clip.mp4`` → ``clip.cameras.npz``."""
    video = Path(video)
    return video.with_name(video.stem + ".cameras.npz")


def _clip_fps(cameras: Cameras) -> float:
    return float(1.0 / np.median(np.diff(cameras.t))) if len(cameras) > 1 else DEFAULT_FPS


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except UnidentifiedImageError as err:
        raise ValueError(f"image {path} is not a readable image ({err})") from err


def generate(
    checkpoint: str | Path,
    vae_path: str | Path,
    text_encoder_path: str | Path,
    image_path: str | Path,
    cameras_path: str | Path,
    prompt: str,
    out: str | Path,
    config: GenerateConfig = GenerateConfig(),
    *,
    device: torch.device | str | None = None,
) -> Path:
    """Load the model, VAE and text encoder from local files, generate, and write ``out`` (mp4),
    `cameras_path_for(out)` and ``out`` with .json (prompt, config, weight sha256s); return ``out``."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    image_path, cameras_path, out = Path(image_path), Path(cameras_path), Path(out)
    image = _read_image(image_path)
    if not cameras_path.is_file():
        raise FileNotFoundError(f"cameras {cameras_path} does not exist")
    cameras = Cameras.load(str(cameras_path)).validate(name=str(cameras_path))
    name = f"{image_path.name} + {cameras_path.name}"
    vae = VideoVAE(vae_path, device=device)
    _check_inputs(image, cameras, vae, name)  # before the large model and text encoder load
    model = load_model_weights(checkpoint, device=device)
    encoder = TextEncoder(text_encoder_path, max_length=config.max_text_tokens, device=device)
    frames = generate_frames(model, vae, encoder, image, cameras, prompt, config, name=name)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, out, _clip_fps(cameras))
    cameras.save(str(cameras_path_for(out)))
    record = {
        "prompt": prompt,
        "config": dataclasses.asdict(config),
        "image": str(image_path),
        "cameras": str(cameras_path),
        "checkpoint": {"path": str(checkpoint), "sha256": file_sha256(checkpoint)},
        "vae": vae.provenance(),
        "text_encoder": {"path": str(text_encoder_path), "weights": weight_sha256(text_encoder_path)},
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out
