"""Latent shards: video shards re-written with VAE latents beside each clip (DESIGN §2, §3).

The pipeline, per run::

    in_dir shards ──► tar_samples, skipping keys already in out_dir/index.parquet (done)
        │               and, unless retry_failed, keys out_dir/status.parquet marks failed
        ▼  decode      decode_samples(..., "frames"): uint8 (T, H, W, 3), T == cameras T
        ▼  trim        the first T_enc = 8·k + 1 frames (the largest count the VAE takes)
        ▼  encode      VideoVAE.encode, batch_size clips of one shape at a time
        ▼  text        (optional) TextEncoder on each json caption
        ▼  sample      the input sample + latents.safetensors + json provenance["vae"]
    ShardWriter ──► out_dir shards (same keys) + index.parquet
    status.parquet: one row per key (wmkit.datasets.ingest.STATUS_DTYPES), "done" rows only
                    once their shard is published, so a crash never marks undone work done.

Choices (DESIGN leaves them open):

- **Frame counts not 8·k + 1 are trimmed, not failed**: the latents cover the first
  T_enc = 8·⌊(T − 1)/8⌋ + 1 frames (at most 7 frames are left out), recorded as
  ``num_frames`` in the latents' metadata. The mp4, cameras.npz and json of the clip are
  kept byte for byte (no re-encode, no generational loss); a loader takes
  ``cameras.select(slice(0, T_enc))`` for per-frame rays. Frame sizes that are not a
  multiple of the VAE's space stride (32) fail with a status row: cropping would move
  the principal point, so the ingest size must be chosen right.
- **The mp4 stays**: the shard contract (``wmkit.datasets.sample``) requires it, and it
  keeps latent shards decodable for evaluation. Dropping it would need an optional mp4
  in that contract.
- **z is stored as float16**: numpy-readable (``Sample.validate`` parses latents with
  ``safetensors.numpy``, which has no bfloat16), half the bytes of float32, and the
  normalised latents are unit-scale, where float16 rounds finer than bf16 training does.

Latent-frame cameras, one per latent frame: the camera of its **last** frame (VAE time
stride 8; the first latent frame covers frame 0 alone)::

    frames          0 | 1 2 … 8 | 9 … 16 | … | 8(T'−2)+1 … 8(T'−1)
    latent frame    0 |    1    |   2    | … |        T' − 1
    camera taken    0 |    8    |   16   | … |      8(T' − 1)

``latents.safetensors`` holds ``z`` (C, T', H', W') float16, ``c2w`` (T', 4, 4) and ``K``
(T', 3, 3) float64 (pixels of the stored frames), ``t`` (T',) float64 seconds and
``frame_index`` (T',) int64 of those frames, and one metadata entry ``wmkit``: JSON with
``num_frames`` (T_enc), ``time_stride``, ``space_stride`` and ``vae`` (provenance with
weight sha256s). With a text encoder it also holds the caption's embeddings ``text``
(L, C_text) float16, its real tokens only (padding dropped), and ``text_mask`` (L,) bool,
which the trainer reads instead of running the encoder (``TrainConfig.text_encoder=""``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from tqdm import tqdm

from wmkit.datasets.cameras import Cameras
from wmkit.datasets.ingest import STATUS_DTYPES, STATUS_FILE, read_status
from wmkit.datasets.sample import DecodedSample, Sample, SampleError
from wmkit.datasets.shard_format import INDEX_FILE, RawSample, read_index
from wmkit.datasets.shard_reader import decode_samples, list_shards, tar_samples
from wmkit.datasets.shard_writer import ShardWriter
from wmkit.model.text_encoder import TextEncoder
from wmkit.model.vae import VideoVAE, weight_sha256

__all__ = ["Latents", "encode_latent_shards", "latent_frame_indices"]


def latent_frame_indices(num_latent_frames: int, time_stride: int = 8) -> np.ndarray:
    """Frame index of the camera each latent frame takes: its last frame, s_t·j (module docstring)."""
    return np.arange(num_latent_frames, dtype=np.int64) * time_stride


@dataclass(frozen=True)
class Latents:
    """The ``latents.safetensors`` member: z and the latent-frame cameras (module docstring).

    z: (C, T', H', W') float16; c2w (T', 4, 4), K (T', 3, 3), t (T',) float64;
    frame_index (T',) int64; num_frames = T_enc frames encoded (8·(T' − 1) + 1);
    text (L, C_text) float16 and text_mask (L,) bool when captions were encoded."""

    z: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    t: np.ndarray
    frame_index: np.ndarray
    num_frames: int
    time_stride: int
    space_stride: int
    vae: dict
    text: np.ndarray | None = None
    text_mask: np.ndarray | None = None

    @classmethod
    def from_encoding(cls, z: torch.Tensor, cameras: Cameras, vae: VideoVAE,
                      text: torch.Tensor | None = None) -> "Latents":
        """Pack z [C, T', H', W'] of a clip's first frames with the cameras of each latent frame's
        last frame, and the caption's real-token embeddings text [L, C_text] if given."""
        Tl = z.shape[1]
        pick = latent_frame_indices(Tl, vae.time_stride)
        return cls(
            z=z.to(torch.float16).cpu().numpy(),
            c2w=cameras.c2w[pick],
            K=cameras.K[pick],
            t=cameras.t[pick],
            frame_index=cameras.frame_index[pick],
            num_frames=int(pick[-1]) + 1,
            time_stride=vae.time_stride,
            space_stride=vae.space_stride,
            vae=vae.provenance(),
            text=None if text is None else text.to(torch.float16).cpu().numpy(),
            text_mask=None if text is None else np.ones(len(text), dtype=np.bool_),
        )

    def to_bytes(self) -> bytes:
        """Serialise as the shard member ``latents.safetensors`` (deterministic bytes)."""
        tensors = {"z": self.z, "c2w": self.c2w, "K": self.K, "t": self.t, "frame_index": self.frame_index}
        if self.text is not None:
            tensors |= {"text": self.text, "text_mask": self.text_mask}
        # One metadata entry: safetensors writes its metadata map in hash order, so several
        # entries would make the bytes (and the shard sha256) differ from run to run.
        info = {"num_frames": self.num_frames, "time_stride": self.time_stride, "space_stride": self.space_stride,
                "vae": self.vae}
        metadata = {"wmkit": json.dumps(info, sort_keys=True, separators=(",", ":"))}
        return save_safetensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "latents.safetensors") -> "Latents":
        """Parse a ``latents.safetensors`` member; raise `SampleError` naming ``name`` if a part is missing."""
        data = bytes(data)
        tensors = load_safetensors(data)
        missing = [k for k in ("z", "c2w", "K", "t", "frame_index") if k not in tensors]
        if missing:
            raise SampleError(f"{name}: latents.safetensors lacks tensors {missing}")
        try:
            info = json.loads(_safetensors_metadata(data)["wmkit"])
            return cls(**tensors, num_frames=int(info["num_frames"]), time_stride=int(info["time_stride"]),
                       space_stride=int(info["space_stride"]), vae=info["vae"])
        except (KeyError, TypeError, ValueError) as err:
            raise SampleError(
                f"{name}: latents.safetensors has incomplete metadata or unknown tensors ({err})"
            ) from err


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes: the format is an 8-byte little-endian header
    length, then that JSON header (``safetensors.numpy.load`` returns tensors only)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})


class _Failed(Exception):
    """One sample failed at one stage; becomes its status row."""

    def __init__(self, key: str, stage: str, reason: str) -> None:
        super().__init__(key, stage, reason)
        self.key, self.stage, self.reason = key, stage, reason


# Errors that belong to one sample (bad mp4, wrong size, CUDA out of memory), not to the run.
_SAMPLE_ERRORS = (ValueError, OSError, RuntimeError)


def _prepare(raw: RawSample, vae: VideoVAE) -> DecodedSample:
    """Decode one raw sample and keep the frames the VAE takes (module docstring: trim)."""
    try:
        decoded = next(decode_samples([raw], "frames"))
    except _SAMPLE_ERRORS as err:
        raise _Failed(raw.key, "decode", str(err)) from err
    T, H, W, _ = decoded.frames.shape
    if H % vae.space_stride or W % vae.space_stride:
        raise _Failed(raw.key, "size", f"frame size {W}x{H} is not a multiple of the VAE's {vae.space_stride} pixels")
    return DecodedSample(decoded.sample, decoded.frames[: vae.valid_num_frames(T)])


def _batches(items: Iterator[DecodedSample | _Failed], batch_size: int) -> Iterator[list[DecodedSample] | _Failed]:
    """Group consecutive clips of one frame shape into lists of at most ``batch_size``;
    failures pass straight through."""
    pending: list[DecodedSample] = []
    for item in items:
        if isinstance(item, _Failed):
            yield item
            continue
        if pending and (len(pending) == batch_size or item.frames.shape != pending[0].frames.shape):
            yield pending
            pending = []
        pending.append(item)
    if pending:
        yield pending


def _prepared(raws: Iterator[RawSample], vae: VideoVAE) -> Iterator[DecodedSample | _Failed]:
    for raw in raws:
        try:
            yield _prepare(raw, vae)
        except _Failed as failed:
            yield failed


def _with_latents(item: DecodedSample, z: torch.Tensor, vae: VideoVAE, text: torch.Tensor | None,
                  text_provenance: dict | None) -> Sample:
    """The input sample with its latents member and the VAE (and text encoder) in its json provenance."""
    sample = item.sample
    latents = Latents.from_encoding(z, sample.cameras, vae, text)
    meta = dict(sample.meta)
    meta["provenance"] = {**meta.get("provenance", {}), "vae": latents.vae}
    if text_provenance is not None:
        meta["provenance"]["text_encoder"] = text_provenance
    return replace(sample, meta=meta, latents=latents.to_bytes())


def _caption_embeddings(encoder: TextEncoder | None, batch: list[DecodedSample]) -> list[torch.Tensor | None]:
    """Per clip, the real-token embeddings [L, C_text] of its json caption (None without an encoder)."""
    if encoder is None:
        return [None] * len(batch)
    text, mask = encoder.encode([str(item.sample.meta.get("caption", "")) for item in batch])
    return [t[m] for t, m in zip(text, mask)]


class _StatusTable:
    """Status rows keyed by sample key, saved atomically to ``out_dir/status.parquet``."""

    def __init__(self, out_dir: str) -> None:
        self.path = os.path.join(out_dir, STATUS_FILE)
        self.rows = {r["clip_id"]: r for r in read_status(out_dir).to_dict("records")}

    def set(self, key: str, status: str, stage: str = "", reason: str = "", shard: str = "") -> None:
        now = pd.Timestamp.now(tz="UTC")
        self.rows[key] = dict(clip_id=key, status=status, stage=stage, reason=reason, shard=shard, finished_at=now)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(list(self.rows.values()), columns=list(STATUS_DTYPES)).astype(STATUS_DTYPES)

    def save(self) -> None:
        tmp = self.path + ".tmp"
        self.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path)


def encode_latent_shards(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    vae_path: str | os.PathLike,
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    text_encoder: str | os.PathLike | None = None,
    text_max_length: int = 300,
    prefix: str = "shard",
    max_count: int = 1000,
    max_bytes: int = 1 << 30,
) -> pd.DataFrame:
    """Re-write the video shards of ``in_dir`` into ``out_dir`` with VAE latents; return the status table.

    Args:
        in_dir: video shard directory (anything `list_shards` takes).
        out_dir: latent shard directory; ``index.parquet`` and ``status.parquet`` live there.
        vae_path: local VAE folder (`VideoVAE`).
        batch_size: clips encoded per VAE call (consecutive clips of one frame shape).
        device: where the VAE runs; default CUDA when available, else CPU.
        progress: show a tqdm bar.
        retry_failed: also redo keys that failed in an earlier run.
        text_encoder: local text-encoder folder (`TextEncoder`); when given, each sample's
            json ``caption`` is encoded into ``text``/``text_mask`` (module docstring).
        text_max_length: tokens per caption for the text encoder (the release: 300).
        prefix, max_count, max_bytes: shard naming and limits (`ShardWriter`).

    Running twice does no work twice: keys in ``out_dir/index.parquet`` are skipped.
    Returns every key's row (`wmkit.datasets.ingest.STATUS_DTYPES`; ``clip_id`` is the key).
    """
    if batch_size < 1:
        raise ValueError(f"encode_latent_shards: batch_size must be >= 1, got {batch_size}")
    shards = list_shards(in_dir)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    vae = VideoVAE(vae_path, device=device)
    captions, text_provenance = None, None
    if text_encoder is not None:
        captions = TextEncoder(text_encoder, max_length=text_max_length, device=device)
        text_provenance = {"path": os.fspath(text_encoder), "max_length": text_max_length,
                           "weights": weight_sha256(text_encoder)}
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    table = _StatusTable(out_dir)
    index = read_index(out_dir) if Path(out_dir, INDEX_FILE).exists() else None
    done = dict(zip(index["key"], index["shard"])) if index is not None else {}
    for key, shard in done.items():  # published but not yet recorded (a crash between the two)
        if table.rows.get(key, {}).get("status") != "done":
            table.set(key, "done", shard=shard)
    failed = {k for k, r in table.rows.items() if r["status"] == "failed"}
    skip = set(done) if retry_failed else set(done) | failed
    todo = (raw for raw in tar_samples(shards) if raw.key not in skip)

    def on_publish(shard: str, keys: list[str]) -> None:
        for key in keys:
            table.set(key, "done", shard=shard)
        table.save()

    try:
        with (
            ShardWriter(out_dir, prefix, max_count, max_bytes, on_publish=on_publish) as writer,
            tqdm(desc="latents", unit="clip", disable=not progress) as bar,
        ):
            for batch in _batches(_prepared(todo, vae), batch_size):
                if isinstance(batch, _Failed):
                    table.set(batch.key, "failed", batch.stage, batch.reason)
                    bar.update()
                    continue
                try:
                    z = vae.encode(torch.stack([item.frames for item in batch]))
                    texts = _caption_embeddings(captions, batch)
                except _SAMPLE_ERRORS as err:
                    for item in batch:
                        table.set(item.key, "failed", "encode", str(err))
                    bar.update(len(batch))
                    continue
                for item, z_item, text in zip(batch, z, texts):
                    try:
                        writer.write(_with_latents(item, z_item, vae, text, text_provenance))
                    except SampleError as err:
                        table.set(item.key, "failed", "write", str(err))
                bar.update(len(batch))
    finally:
        table.save()
    return table.frame()
