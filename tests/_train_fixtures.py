"""Shards for the trainer tests: rendered camera-motion clips with latents from the pooling stand-in."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from _shard_fixtures import encode_mp4, make_meta
from wmkit.datasets.sample import Sample
from wmkit.datasets.shard_writer import ShardWriter
from wmkit.datasets.synthetic import render_room_clip
from wmkit.train.pooling_vae import PoolingVAE

WIDTH, HEIGHT, FRAMES, FPS = 128, 96, 17, 8.0  # 4 × 3 latent tokens, 3 latent frames
TEXT_LEN, TEXT_DIM = 4, 32  # the tiny preset's text width


def clip_sample(i: int, *, frames: int = FRAMES, latents: bool = True, z: torch.Tensor | None = None) -> Sample:
    """Clip `i`: a rendered room walk (exact cameras), its mp4 and, with `latents`, the
    pooled latents plus a precomputed caption embedding."""
    clip = render_room_clip(seed=i, num_frames=frames, width=WIDTH, height=HEIGHT, fps=FPS)
    meta = {**make_meta(frames, source_id=f"room-{i}"), "size": [WIDTH, HEIGHT], "caption": f"room walk {i}"}
    blob = None
    if latents:
        if z is None:
            n = 8 * ((frames - 1) // 8) + 1
            z = PoolingVAE().encode(torch.from_numpy(clip.frames[None, :n]))[0]
        text = torch.randn(TEXT_LEN, TEXT_DIM, generator=torch.Generator().manual_seed(i))
        blob = save_safetensors({"z": z.half().contiguous(), "text": text})
    return Sample(f"room-{i:03d}", encode_mp4(clip.frames, FPS), clip.cameras, meta, latents=blob)


def write_shards(out: Path, samples: list[Sample], max_count: int = 4) -> Path:
    """Write `samples` as shards of `max_count` under `out`; return `out`."""
    with ShardWriter(out, max_count=max_count) as writer:
        for sample in samples:
            writer.write(sample)
    return out


def write_raw_shard(path: Path, members: dict[str, dict[str, bytes]]) -> Path:
    """A tar holding `{key: {member: bytes}}` as is, bypassing the writer's checks (bad input)."""
    with tarfile.open(path, "w") as tar:
        for key, parts in members.items():
            for name, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def nan_latents(i: int) -> Sample:
    """Clip `i` whose latents hold a NaN."""
    z = torch.zeros(128, 3, 3, 4)
    z[0, 0, 0, 0] = float("nan")
    return clip_sample(i, z=z)


def mismatched_cameras(i: int) -> Sample:
    """Clip `i` with latents of 3 latent frames but cameras of 9 frames (2 latent frames)."""
    good = clip_sample(i)
    cams = good.cameras.select(slice(0, 9))
    return replace(good, cameras=cams, meta={**good.meta, "num_frames": 9})
