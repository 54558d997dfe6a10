"""Training batches straight from shards, with a checkpointable position.

::

    shards ─ resample_shards (or order_shards → split by rank → split by worker)     per (seed, epoch, rank, worker)
           ─ tar samples (a broken shard becomes one bad item, the stream goes on)
           ─ shuffle buffer (raw bytes, seeded)
           ─ numbered: ordinal 0, 1, 2 … of this worker's stream
           ─ parse_clip: latents.safetensors (data="latents") or decoded mp4 (data="video")
               bad sample → logged, counted by reason, skipped
           ─ buckets by (T', H', W'): a batch holds one shape
           ─ Batch(… , worker, position)

Resume by replay (STYLE §6): a worker's stream is a pure function of (seed, epoch, rank,
worker), so its position is the number of raw samples it has drawn plus the ordinals of
those still waiting in a bucket. A resumed worker rebuilds the stream, skips drawn samples
without parsing them, re-parses only the waiting ones, and continues where it stopped.
Each batch carries its worker's position right after it was made, so batches prefetched
but not yet trained on are not counted; `ShardLoader` keeps the latest position per
worker and rotates workers on resume so the DataLoader's round-robin order continues.

Video clips are cropped to 8·k + 1 frames and centrally to multiples of 32 pixels (K's
principal point follows the crop); the VAE and the text encoder run in the training
process (`model_inputs`), on the accelerator, not in loader workers.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import shuffle as wds_shuffle

from wmkit.datasets.sample import Sample, SampleError
from wmkit.datasets.shard_format import RawSample, ShardFormatError, iter_tar_samples
from wmkit.datasets.shard_reader import list_shards, order_shards, resample_shards, split_by_node
from wmkit.model.camera_rays import CameraInputs, camera_inputs
from wmkit.model.config import VAE_SPACE_STRIDE, VAE_TIME_STRIDE

log = logging.getLogger(__name__)

DataKind = Literal["latents", "video"]


class BadSample(ValueError):
    """A sample the trainer cannot use; `reason` is its counter's name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class VideoEncoder(Protocol):
    """The VAE interface the trainer needs."""

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 [B, T, H, W, 3] → latents [B, 128, T', H', W']."""


class CaptionEncoder(Protocol):
    """The text-encoder interface the trainer needs (`wmkit.model.text_encoder.TextEncoder`)."""

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions → embeddings [B, L, C_text] and mask [B, L] bool."""


@dataclass(frozen=True)
class Clip:
    """One usable sample, cut to whole latent frames."""

    key: str
    bucket: tuple[int, int, int]  # (T', H', W')
    c2w: np.ndarray  # [T, 4, 4] float64, T = 8·(T' − 1) + 1
    K: np.ndarray  # [T, 3, 3] float64, pixels of image_hw
    image_hw: tuple[int, int]
    caption: str
    latents: torch.Tensor | None  # [128, T', H', W'] float32 (data="latents")
    frames: torch.Tensor | None  # [T, H, W, 3] uint8 (data="video")
    text: torch.Tensor | None  # [L, C_text] precomputed caption embeddings
    text_mask: torch.Tensor | None  # [L] bool


@dataclass
class StreamPosition:
    """Where one worker's stream stands; enough to replay it exactly."""

    epoch: int = 0
    consumed: int = 0
    """Raw samples drawn from this epoch's stream."""
    pending: list[int] = field(default_factory=list)
    """Ordinals of drawn samples still waiting in a bucket."""
    bad: dict[str, int] = field(default_factory=dict)
    """Skipped samples by reason."""
    bad_in_a_row: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"epoch": self.epoch, "consumed": self.consumed, "pending": list(self.pending),
                "bad": dict(self.bad), "bad_in_a_row": self.bad_in_a_row}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StreamPosition":
        """Inverse of `to_dict`."""
        return cls(int(data["epoch"]), int(data["consumed"]), [int(o) for o in data["pending"]],
                   {str(k): int(v) for k, v in data["bad"].items()}, int(data["bad_in_a_row"]))


@dataclass(frozen=True)
class Batch:
    """Clips of one bucket, stacked; `position` is the producing worker's after this batch."""

    keys: list[str]
    c2w: torch.Tensor  # [B, T, 4, 4] float64
    K: torch.Tensor  # [B, T, 3, 3] float64
    image_hw: tuple[int, int]
    captions: list[str]
    latents: torch.Tensor | None  # [B, 128, T', H', W'] float32
    frames: torch.Tensor | None  # [B, T, H, W, 3] uint8
    text: torch.Tensor | None  # [B, L, C_text]
    text_mask: torch.Tensor | None  # [B, L] bool
    worker: int
    position: StreamPosition


@dataclass(frozen=True)
class _BrokenShard:
    """Stands in the stream for the unreadable rest of a shard (counts as one bad item)."""

    shard: str
    reason: str


def _shard_samples(shards: Iterator[str]) -> Iterator[RawSample | _BrokenShard]:
    for shard in shards:
        try:
            with open(shard, "rb") as f:
                yield from iter_tar_samples(f, shard)
        except (ShardFormatError, OSError) as err:
            yield _BrokenShard(shard, str(err))


def _whole_latent_frames(num_frames: int, max_latent_frames: int) -> int:
    latent = (num_frames - 1) // VAE_TIME_STRIDE + 1 if num_frames >= 1 else 0
    return min(latent, max_latent_frames) if max_latent_frames else latent


def _image_hw(sample: Sample) -> tuple[int, int]:
    size = sample.meta.get("size")
    if not (isinstance(size, list | tuple) and len(size) == 2):
        raise BadSample("bad json", f"size {size!r} is not [width, height]")
    return int(size[1]), int(size[0])


def _latent_clip(sample: Sample, max_latent_frames: int) -> Clip:
    from safetensors import SafetensorError
    from safetensors.torch import load

    if sample.latents is None:
        raise BadSample("missing members", "no latents.safetensors (data='latents')")
    try:
        tensors = load(bytes(sample.latents))
    except (SafetensorError, ValueError) as err:
        raise BadSample("unreadable latents", str(err)) from err
    z = tensors["z"].float()
    if not bool(torch.isfinite(z).all()):
        raise BadSample("non-finite latents", f"z {tuple(z.shape)} holds NaN or inf")
    Tl = z.shape[1]
    T = len(sample.cameras)
    if _whole_latent_frames(T, 0) != Tl:
        raise BadSample("camera/frame mismatch", f"{T} camera frames do not make the latents' {Tl} latent frames")
    Tl = _whole_latent_frames(T, max_latent_frames)
    z = z[:, :Tl]
    text = tensors.get("text")
    mask = tensors.get("text_mask")
    if text is not None:
        mask = torch.ones(text.shape[0], dtype=torch.bool) if mask is None else mask.bool()
        if text.dim() != 2 or mask.shape != text.shape[:1] or not bool(mask.any()):
            raise BadSample("bad text", f"text {tuple(text.shape)} / mask {tuple(mask.shape)}: need [L, C], [L], one token")
        text = text.float()
    frames = VAE_TIME_STRIDE * (Tl - 1) + 1
    cams = sample.cameras
    return Clip(sample.key, (Tl, z.shape[2], z.shape[3]), cams.c2w[:frames], cams.K[:frames], _image_hw(sample),
                str(sample.meta.get("caption", "")), z.contiguous(), None, text, mask)


def _video_clip(sample: Sample, max_latent_frames: int) -> Clip:
    from wmkit.datasets.video import decode_mp4_bytes
    from wmkit.datasets.video_error import VideoError

    try:
        frames = decode_mp4_bytes(sample.mp4, f"{sample.key}.mp4")
    except VideoError as err:
        raise BadSample("unreadable video", str(err)) from err
    T = len(sample.cameras)
    if len(frames) != T:
        raise BadSample("camera/frame mismatch", f"mp4 decodes to {len(frames)} frames, cameras.npz has {T}")
    Tl = _whole_latent_frames(T, max_latent_frames)
    H, W = frames.shape[1:3]
    Hl, Wl = H // VAE_SPACE_STRIDE, W // VAE_SPACE_STRIDE
    if Tl < 1 or Hl < 1 or Wl < 1:
        raise BadSample("too small", f"{T} frames of {W}x{H} px make no whole latent frame of 32x32 px")
    top, left = (H - Hl * VAE_SPACE_STRIDE) // 2, (W - Wl * VAE_SPACE_STRIDE) // 2
    n = VAE_TIME_STRIDE * (Tl - 1) + 1
    crop = frames[:n, top : top + Hl * VAE_SPACE_STRIDE, left : left + Wl * VAE_SPACE_STRIDE]
    K = sample.cameras.K[:n].copy()
    K[:, 0, 2] -= left  # the principal point moves with the crop
    K[:, 1, 2] -= top
    return Clip(sample.key, (Tl, Hl, Wl), sample.cameras.c2w[:n], K, (Hl * VAE_SPACE_STRIDE, Wl * VAE_SPACE_STRIDE),
                str(sample.meta.get("caption", "")), None, torch.from_numpy(np.ascontiguousarray(crop)), None, None)


def parse_clip(raw: RawSample | _BrokenShard, kind: DataKind, max_latent_frames: int = 0,
               min_latent_frames: int = 1) -> Clip:
    """A training `Clip` from a raw shard sample; raises `BadSample` (with a counter reason),
    also for a clip of fewer than `min_latent_frames` latent frames."""
    if isinstance(raw, _BrokenShard):
        raise BadSample("broken shard", f"{raw.shard}: {raw.reason}")
    try:
        sample = Sample.from_members(raw.key, raw.members)
    except SampleError as err:
        reason = "missing members" if "missing members" in str(err) else "invalid sample"
        raise BadSample(reason, f"{raw.shard}: {err}") from err
    clip = _latent_clip(sample, max_latent_frames) if kind == "latents" else _video_clip(sample, max_latent_frames)
    if clip.bucket[0] < min_latent_frames:
        raise BadSample("too few latent frames", f"{raw.key}: {clip.bucket[0]} latent frames, "
                        f"context parallelism gives each of {min_latent_frames} ranks one at least")
    return clip


def _pad_text(clips: Sequence[Clip]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if any(c.text is None for c in clips):
        return None, None
    L = max(c.text.shape[0] for c in clips)
    text = torch.zeros(len(clips), L, clips[0].text.shape[1])
    mask = torch.zeros(len(clips), L, dtype=torch.bool)
    for i, c in enumerate(clips):
        text[i, : c.text.shape[0]], mask[i, : c.text.shape[0]] = c.text, c.text_mask
    return text, mask


def collate(clips: Sequence[Clip], worker: int, position: StreamPosition) -> Batch:
    """Stack clips of one bucket into a `Batch`."""
    text, mask = _pad_text(clips)
    latents = torch.stack([c.latents for c in clips]) if clips[0].latents is not None else None
    frames = torch.stack([c.frames for c in clips]) if clips[0].frames is not None else None
    return Batch([c.key for c in clips], torch.from_numpy(np.stack([c.c2w for c in clips])),
                 torch.from_numpy(np.stack([c.K for c in clips])), clips[0].image_hw, [c.caption for c in clips],
                 latents, frames, text, mask, worker, position)


class ShardBatches(IterableDataset):
    """Bucketed training batches of one rank, endless, split over `num_workers` workers.

    Args:
        source: shards (anything `list_shards` accepts).
        kind: "latents" or "video".
        batch_size: clips per batch.
        seed, rank, world_size: the stream of worker w of this rank derives from (seed, epoch, rank, w).
        num_workers: DataLoader workers that will iterate this (0 = the calling process).
        shuffle_buffer: raw samples in the shuffle buffer (0/1: none).
        resampled: draw shards with replacement (default) instead of epochs of one pass.
        max_latent_frames: crop clips to this many latent frames (0: none).
        min_latent_frames: skip (and count) clips shorter than this (context parallelism: cp).
        max_consecutive_bad: raise after this many bad samples in a row.
    """

    def __init__(self, source: Any, *, kind: DataKind, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle_buffer: int = 0, resampled: bool = True,
                 max_latent_frames: int = 0, min_latent_frames: int = 1, max_consecutive_bad: int = 1000) -> None:
        super().__init__()
        self.shards = list_shards(source)
        self.kind, self.batch_size, self.seed = kind, batch_size, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.shuffle_buffer, self.resampled = shuffle_buffer, resampled
        self.max_latent_frames, self.max_consecutive_bad = max_latent_frames, max_consecutive_bad
        self.min_latent_frames = min_latent_frames
        self.start: dict[int, StreamPosition] = {}
        self.worker_offset = 0

    @property
    def streams(self) -> int:
        """Workers (streams) per rank."""
        return max(self.num_workers, 1)

    def _raw_stream(self, worker: int, epoch: int) -> Iterator[RawSample | _BrokenShard]:
        if self.resampled:
            shards = resample_shards(self.shards, seed=self.seed, epoch=epoch, rank=self.rank, worker=worker)
        else:
            ordered = order_shards(self.shards, seed=self.seed, epoch=epoch, shuffle=self.shuffle_buffer > 1)
            shards = split_by_node(split_by_node(ordered, self.rank, self.world_size), worker, self.streams)
        samples = _shard_samples(shards)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"train-shuffle:{self.seed}:{epoch}:{self.rank}:{worker}")
            samples = wds_shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
        return samples

    def _skip(self, pos: StreamPosition, bad: BadSample, ordinal: int) -> None:
        pos.bad[bad.reason] = pos.bad.get(bad.reason, 0) + 1
        pos.bad_in_a_row += 1
        log.warning("rank %d: skipping sample #%d (%s)", self.rank, ordinal, bad)
        if pos.bad_in_a_row >= self.max_consecutive_bad:
            raise RuntimeError(f"rank {self.rank}: {pos.bad_in_a_row} bad samples in a row (last: {bad}); "
                               f"the shards under {self.shards[0]}… look broken, counts {pos.bad}")

    def worker_batches(self, worker: int) -> Iterator[Batch]:
        """Endless batches of stream `worker`, starting from `self.start[worker]`."""
        if not self.resampled and len(self.shards) < self.world_size * self.streams:
            raise ValueError(f"{len(self.shards)} shards cannot feed {self.world_size} ranks × {self.streams} workers "
                             "without resampling; set resampled=true or write more shards")
        pos = replace(self.start.get(worker, StreamPosition()))
        pos.pending, pos.bad = list(pos.pending), dict(pos.bad)
        buckets: dict[tuple[int, int, int], list[tuple[int, Clip]]] = {}
        replay_until, replay = pos.consumed, set(pos.pending)
        while True:
            drawn = 0
            for ordinal, raw in enumerate(self._raw_stream(worker, pos.epoch)):
                drawn += 1
                if ordinal < replay_until:  # resume: re-parse only the clips that were waiting
                    if ordinal in replay:
                        clip = parse_clip(raw, self.kind, self.max_latent_frames, self.min_latent_frames)
                        buckets.setdefault(clip.bucket, []).append((ordinal, clip))
                    continue
                pos.consumed = ordinal + 1
                try:
                    clip = parse_clip(raw, self.kind, self.max_latent_frames, self.min_latent_frames)
                except BadSample as bad:
                    self._skip(pos, bad, ordinal)
                    continue
                pos.bad_in_a_row = 0
                bucket = buckets.setdefault(clip.bucket, [])
                bucket.append((ordinal, clip))
                if len(bucket) == self.batch_size:
                    del buckets[clip.bucket]
                    pos.pending = sorted(o for waiting in buckets.values() for o, _ in waiting)
                    snapshot = StreamPosition.from_dict(pos.to_dict())
                    yield collate([c for _, c in bucket], worker, snapshot)
            if drawn == 0:
                raise ValueError(f"rank {self.rank} worker {worker}: no samples in {len(self.shards)} shards")
            left = sum(len(b) for b in buckets.values())
            if left:
                log.info("rank %d worker %d: epoch %d ends with %d clips short of a batch", self.rank, worker,
                         pos.epoch, left)
            buckets.clear()
            pos = StreamPosition(pos.epoch + 1, 0, [], pos.bad, pos.bad_in_a_row)
            replay_until, replay = 0, set()

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        if info is None:
            return self.worker_batches(self.worker_offset % self.streams)
        if info.num_workers != self.streams:
            raise ValueError(f"ShardBatches built for {self.streams} workers runs in {info.num_workers}")
        return self.worker_batches((info.id + self.worker_offset) % self.streams)


class ShardLoader:
    """A DataLoader over `ShardBatches` that remembers how far training got (`state_dict`)."""

    def __init__(self, dataset: ShardBatches) -> None:
        self.dataset = dataset
        self.batches = 0
        self.positions: dict[int, StreamPosition] = {}

    def __iter__(self) -> Iterator[Batch]:
        workers = self.dataset.num_workers
        loader = DataLoader(self.dataset, batch_size=None, num_workers=workers,
                            prefetch_factor=2 if workers else None, persistent_workers=False)
        for batch in loader:
            self.positions[batch.worker] = batch.position
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Batches delivered and each worker's stream position (JSON-able)."""
        return {"batches": self.batches, "positions": {str(w): p.to_dict() for w, p in self.positions.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batches of `state` (call before iterating)."""
        self.batches = int(state["batches"])
        self.positions = {int(w): StreamPosition.from_dict(p) for w, p in state["positions"].items()}
        self.dataset.start = dict(self.positions)
        # DataLoader worker 0 serves first: make it play the stream whose turn is next.
        self.dataset.worker_offset = self.batches % self.dataset.streams

    def bad_counts(self) -> dict[str, int]:
        """Skipped samples by reason, summed over this rank's workers."""
        total: Counter[str] = Counter()
        for p in self.positions.values():
            total.update(p.bad)
        return dict(total)


@dataclass(frozen=True)
class ModelInputs:
    """What `GDNDiT` takes besides the noise: clean latents, cameras, caption embeddings."""

    latents: torch.Tensor  # [B, 128, T', H', W'] float32
    cameras: CameraInputs
    text: torch.Tensor  # [B, L, C_text]
    text_mask: torch.Tensor  # [B, L] bool


def model_inputs(batch: Batch, device: torch.device, *, vae: VideoEncoder | None = None,
                 text_encoder: CaptionEncoder | None = None, translation_scale: float = 1.0) -> ModelInputs:
    """Move a batch to `device`, encode frames with `vae` and captions with `text_encoder`
    when the shards do not carry latents / text embeddings."""
    if batch.latents is not None:
        latents = batch.latents.to(device)
    elif vae is None:
        raise ValueError(f"batch {batch.keys} holds frames but no VAE is configured (vae=)")
    else:
        with torch.no_grad():
            latents = vae.encode(batch.frames.to(device)).float()
    if batch.text is not None:
        text, mask = batch.text.to(device), batch.text_mask.to(device)
    elif text_encoder is None:
        raise ValueError(f"batch {batch.keys} has no precomputed text embeddings and no text_encoder is configured")
    else:
        text, mask = text_encoder.encode(batch.captions)
        text, mask = text.to(device).float(), mask.to(device)
    Hl, Wl = latents.shape[-2:]
    cams = camera_inputs(batch.c2w.to(device), batch.K.to(device), (Hl, Wl), batch.image_hw,
                         translation_scale=translation_scale)
    return ModelInputs(latents, cams, text, mask)


__all__ = ["BadSample", "Batch", "CaptionEncoder", "Clip", "ModelInputs", "ShardBatches", "ShardLoader",
           "StreamPosition", "VideoEncoder", "collate", "model_inputs", "parse_clip"]
