"""DiFix3D-style one-step diffusion refiner for rendered frames (DESIGN §5; issue 8 item 4).

Usage::

    from wmkit.render.refiner import load_refiner

    refiner = load_refiner("/weights/difix")           # None -> None: the refiner is off
    if refiner is not None:
        clean = refiner.refine(frames)                  # uint8 [T, H, W, 3] -> uint8 [T, H, W, 3]
        clean = refiner.refine(frames, reference=ref)   # ref uint8 [H, W, 3] (all frames) or [T, H, W, 3]
        clean = refiner.refine(frames, reference=views, reference_index=idx)  # views [U, H, W, 3], idx [T]
        meta = refiner.provenance()                     # version, folder, weight sha256s, prompt, timestep

Weights come from a local folder in the SD-Turbo / diffusers layout, never downloaded
(DESIGN §6)::

    FOLDER/unet/          config.json + *.safetensors   UNet2DConditionModel
    FOLDER/vae/           config.json + *.safetensors   AutoencoderKL
    FOLDER/text_encoder/  config.json + *.safetensors   CLIPTextModel
    FOLDER/tokenizer/     vocab.json, merges.txt        CLIPTokenizer
    FOLDER/scheduler/     scheduler_config.json         read as DDPMScheduler, clip_sample off

Weights are read from safetensors only (plain names, else the ``*.fp16.*`` variant);
their sha256 go to :meth:`Refiner.provenance`.

The math is DiFix3D's (nv-tlabs/Difix3D ``src/model.py::Difix.forward`` and
``src/pipeline_difix.py``)::

    x  = frame/127.5 − 1                      [B, 3, H, W], padded to a multiple of s (below)
    z  = vae.encode(x).mode · scaling          the clean latent is used as x_t: no noise is added
    ε  = unet(z, t = 199, c)                   c = CLIP("remove degradation"), computed once
    x0 = scheduler.step(ε, 199, z).pred_original_sample       = (z − √(1−ᾱ_t) ε) / √ᾱ_t for ε-prediction
    out = vae.decode(x0 / scaling).clamp(−1, 1) → round((out + 1)·127.5) uint8

With a one-step schedule DiFix3D's ``prev_sample`` is this x0 plus noise of std 1e-10,
so taking ``pred_original_sample`` is the same number without the random draw.
Upstream samples the VAE posterior; here its mode is used, so reruns match exactly.

Reference view (``difix_ref``): the frame and its reference go through the UNet as
two views of one sample, batch order ``(b v)`` = [frame 0, ref 0, frame 1, ref 1, …].
Every self-attention layer attends over the tokens of both views together, as
upstream's ``src/mv_unet.py`` does by folding ``(b v) n d -> b (v n) d`` around
``attn1``; convolutions, cross-attention and feed-forward stay per view. Only the
frame view is decoded. Without a reference each frame is its own sample (plain UNet).

Sizes: H and W need not be multiples of the VAE stride s (8 for SD); frames are
padded at the bottom/right by edge replication to the next multiple and the output
is cropped back, so the output has the input's size. (Upstream resizes instead.)

Weights: the diffusers-format release (``nvidia/difix``, ``nvidia/difix_ref``:
``DifixPipeline`` of ``src/pipeline_difix.py``, whose VAE is a plain ``AutoencoderKL``)
loads as is. The training checkpoints of ``src/model.py`` (a pickled ``.pkl`` whose
VAE decoder has ``skip_conv_*`` layers fed by encoder activations) are not read: they
are pickles, and their skip convs are not implemented. A VAE folder whose weights hold
such keys, or any other key the diffusers class does not expect, is refused by name
rather than half-loaded.

Precision: on CUDA the UNet and VAE run under bf16 (default) or fp16 autocast, except
that with fp16 a VAE whose config sets ``force_upcast`` (SD's does) stays fp32, as in
diffusers' pipelines; the scheduler step is fp32. CPU runs everything in fp32.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from wmkit.model.vae import file_sha256

__all__ = ["PROMPT", "TIMESTEP", "Refiner", "RefinerError", "load_refiner"]

#: DiFix3D's fixed prompt and noise level (``--timestep 199`` in upstream inference).
PROMPT = "remove degradation"
TIMESTEP = 199

_COMPONENTS = {  # sub-folder: a file it must hold (the weighted ones also need weight files)
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "vocab.json",
    "scheduler": "scheduler_config.json",
}
_WEIGHTED = ("unet", "vae", "text_encoder")


class RefinerError(ValueError):
    """A refiner folder whose weights do not fit the diffusers classes, or frames the refiner
    cannot take; the message names the path or the shape. A missing folder, component or
    weight file is a ``FileNotFoundError`` naming the path."""


def _check_folder(path: Path) -> None:
    """Raise ``FileNotFoundError`` naming every missing part of a refiner folder."""
    if not path.is_dir():
        raise FileNotFoundError(f"refiner folder {path} does not exist")
    missing = [str(path / sub / name) for sub, name in _COMPONENTS.items() if not (path / sub / name).is_file()]
    missing += [f"{path / sub}/*.safetensors" for sub in _WEIGHTED if (path / sub).is_dir() and not _weight_files(path / sub)[0]]
    if missing:
        raise FileNotFoundError(
            f"refiner folder {path} is incomplete; missing: {', '.join(missing)} "
            "(expected the SD-Turbo layout unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )


def _weight_files(folder: Path) -> tuple[list[Path], str | None]:
    """The *.safetensors files ``from_pretrained`` will read in ``folder``, and their variant.

    Only safetensors are read (DESIGN §6: no pickled weights). Plain files win; ``*.fp16.*``
    files (diffusers' "fp16" variant, as SD-Turbo ships) are used when no plain file exists.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors")
    plain = [p for p in files if ".fp16." not in p.name]
    return (plain, None) if plain or not files else (files, "fp16")


def _strict(loaded: tuple, folder: Path) -> torch.nn.Module:
    """The model from ``from_pretrained(..., output_loading_info=True)``; raise if any key did not fit."""
    model, info = loaded
    bad = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        detail = "; ".join(f"{k}: {v[:4]}{' …' if len(v) > 4 else ''}" for k, v in bad.items())
        raise RefinerError(f"refiner weights in {folder} do not fit {type(model).__name__}: {detail}")
    return model


class _JointViewsAttnProcessor:
    """Self-attention over the V views of each sample together; cross-attention unchanged.

    Hidden states arrive as ``[(B·V), N, D]`` with views contiguous per sample, so
    ``reshape(B, V·N, D)`` is upstream's ``(b v) n d -> b (v n) d``.
    """

    def __init__(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self._attend = AttnProcessor2_0()

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        views: int = 1,
    ) -> torch.Tensor:
        if views == 1 or encoder_hidden_states is not None:
            return self._attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        BV, N, D = hidden_states.shape
        joint = self._attend(attn, hidden_states.reshape(BV // views, views * N, D), None, attention_mask, temb)
        return joint.reshape(BV, N, D)


class Refiner:
    """DiFix3D-style one-step refiner loaded once from a local folder (layout and math: module docstring).

    Args:
        path: the refiner folder (SD-Turbo layout).
        device: where the networks run.
        batch_size: frames per UNet/VAE call (a reference view doubles the images per call).
        autocast_dtype: ``"bf16"`` or ``"fp16"`` autocast on CUDA; CPU always runs fp32.

    Attributes: ``path``, ``weights`` (``{component: {file: sha256}}``), ``space_stride`` (s).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: torch.device | str = "cpu",
        batch_size: int = 8,
        autocast_dtype: Literal["bf16", "fp16"] = "bf16",
    ) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        if batch_size < 1:
            raise RefinerError(f"refiner batch_size must be ≥ 1, got {batch_size}")
        if autocast_dtype not in ("bf16", "fp16"):
            raise RefinerError(f"refiner autocast_dtype must be 'bf16' or 'fp16', got {autocast_dtype!r}")
        self.path = Path(path)
        _check_folder(self.path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[autocast_dtype]
        self.weights: dict[str, dict[str, str]] = {}

        def load(cls: type, sub: str) -> torch.nn.Module:
            folder = self.path / sub
            files, variant = _weight_files(folder)
            self.weights[sub] = {p.name: file_sha256(p) for p in files}
            loaded = cls.from_pretrained(folder, local_files_only=True, use_safetensors=True, variant=variant,
                                         output_loading_info=True)  # fmt: skip
            return _strict(loaded, folder).to(self.device).eval().requires_grad_(False)

        self.unet = load(UNet2DConditionModel, "unet")
        self.vae = load(AutoencoderKL, "vae")
        self.unet.set_attn_processor(_JointViewsAttnProcessor())
        # DifixPipeline forces clip_sample off: a clipped x0 would clamp latents to [-1, 1].
        self.scheduler = DDPMScheduler.from_pretrained(self.path / "scheduler", local_files_only=True, clip_sample=False)
        self.scheduler.set_timesteps(timesteps=[TIMESTEP], device=self.device)
        self.space_stride = 2 ** (len(self.vae.config.block_out_channels) - 1)

        # The prompt is fixed, so its embedding is computed once and the text encoder dropped.
        tokenizer = CLIPTokenizer.from_pretrained(self.path / "tokenizer", local_files_only=True)
        text_encoder = load(CLIPTextModel, "text_encoder")
        ids = tokenizer(PROMPT, max_length=tokenizer.model_max_length, padding="max_length",
                        truncation=True, return_tensors="pt").input_ids  # fmt: skip
        with torch.no_grad():
            self.prompt_embeds = text_encoder(ids.to(self.device))[0]  # [1, L, C]
        del text_encoder

    def provenance(self) -> dict:
        """What refined a clip: folder, weight sha256s per component, prompt, timestep, VAE stride, and
        ``version``: 16 hex of a sha256 over the weights' content, prompt and timestep (file names and
        folder left out, so the same weights anywhere give the same version)."""
        content = {k: sorted(v.values()) for k, v in self.weights.items()}
        content["method"] = [PROMPT, str(TIMESTEP)]
        version = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "class": "Refiner",
            "version": version,
            "path": str(self.path),
            "weights": {k: dict(v) for k, v in self.weights.items()},
            "prompt": PROMPT,
            "timestep": TIMESTEP,
            "space_stride": self.space_stride,
        }

    def refine(
        self, frames: np.ndarray, reference: np.ndarray | None = None, reference_index: np.ndarray | None = None
    ) -> np.ndarray:
        """Refine frames one step: uint8 ``[T, H, W, 3]`` in, the same shape and dtype out.

        Args:
            frames: uint8 [T, H, W, 3] rendered frames.
            reference: optional uint8 [H, W, 3] view shared by all frames, or [T, H, W, 3]
                one per frame (DiFix3D's reference view; same size as the frames), or with
                ``reference_index`` [U, H, W, 3] distinct views.
            reference_index: optional int [T]: frame t's reference is ``reference[reference_index[t]]``
                (a 961-frame clip with a few distinct views needs no T-sized copy of them).
        """
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise RefinerError(f"refiner: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        if reference is not None:
            reference = np.asarray(reference)
            if reference_index is None and reference.ndim == 3:  # one view for every frame
                reference, reference_index = reference[None], np.zeros(len(frames), np.int64)
            elif reference_index is None and len(reference) == len(frames):  # one view per frame
                reference_index = np.arange(len(frames))
            if reference_index is None or reference.dtype != np.uint8 or reference.shape[1:] != frames.shape[1:]:
                raise RefinerError(
                    f"refiner: reference must be uint8 [H, W, 3] or [T, H, W, 3] (or [U, H, W, 3] with "
                    f"reference_index) matching frames {frames.shape}, got {reference.dtype} {reference.shape}"
                )
            reference_index = np.asarray(reference_index)
            if (reference_index.shape != (len(frames),) or reference_index.dtype.kind not in "iu"
                    or ((reference_index < 0) | (reference_index >= len(reference))).any()):  # fmt: skip
                raise RefinerError(
                    f"refiner: reference_index must be {len(frames)} ints in [0, {len(reference)}), got "
                    f"{reference_index.dtype} {reference_index.shape}"
                )
        elif reference_index is not None:
            raise RefinerError("refiner: reference_index given without reference views")
        out = np.empty_like(frames)
        for i in range(0, len(frames), self.batch_size):
            ref = None if reference is None else reference[reference_index[i : i + self.batch_size]]
            out[i : i + self.batch_size] = self._refine_batch(frames[i : i + self.batch_size], ref)
        return out

    def _autocast(self, vae: bool) -> torch.autocast | nullcontext:
        """Autocast on CUDA; none on CPU, and none for an fp16 run of a VAE whose config asks for
        fp32 (``force_upcast``: SD VAEs can overflow in fp16, as diffusers' pipelines also upcast)."""
        fp32_vae = vae and self.autocast_dtype == torch.float16 and self.vae.config.force_upcast
        if self.device.type != "cuda" or fp32_vae:
            return nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    @torch.no_grad()
    def _refine_batch(self, frames: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        """One UNet/VAE call over B frames (and their references): uint8 [B, H, W, 3] → uint8."""
        B, H, W, _ = frames.shape
        views = 1 if reference is None else 2
        images = frames if reference is None else np.stack([frames, reference], axis=1).reshape(B * 2, H, W, 3)
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        s = self.space_stride
        x = F.pad(x, (0, -W % s, 0, -H % s), mode="replicate")
        scale, shift = self.vae.config.scaling_factor, self.vae.config.shift_factor or 0.0
        with self._autocast(vae=True):
            z = (self.vae.encode(x).latent_dist.mode().float() - shift) * scale
        with self._autocast(vae=False):
            t = torch.full((B * views,), TIMESTEP, device=self.device, dtype=torch.long)
            eps = self.unet(z, t, encoder_hidden_states=self.prompt_embeds.expand(B * views, -1, -1),
                            cross_attention_kwargs={"views": views}).sample  # fmt: skip
        # step() draws (unused, std ~1e-10) variance noise; a private generator keeps the global RNG untouched.
        gen = torch.Generator(device=self.device).manual_seed(0)
        x0 = self.scheduler.step(eps.float(), TIMESTEP, z, generator=gen).pred_original_sample
        with self._autocast(vae=True):
            image = self.vae.decode(x0[::views] / scale + shift).sample
        image = image.float().clamp(-1, 1)[:, :, :H, :W]
        return ((image + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def load_refiner(
    path: str | Path | None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    autocast_dtype: Literal["bf16", "fp16"] = "bf16",
) -> Refiner | None:
    """The :class:`Refiner` in ``path``, or ``None`` when ``path`` is ``None`` (refiner off)."""
    if path is None:
        return None
    return Refiner(path, device=device, batch_size=batch_size, autocast_dtype=autocast_dtype)
