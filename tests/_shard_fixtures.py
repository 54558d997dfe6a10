"""Tiny generated shard inputs: PyAV-encoded clips, valid cameras, samples, manifest rows.

Shared by the shard writer, reader, ingest and CLI tests. Everything is a few
KB and made on the fly; nothing is read from the network.
"""

from __future__ import annotations

import io
import os

import av
import numpy as np

from wmkit import __version__
from wmkit.datasets.cameras import Cameras
from wmkit.datasets.sample import Sample

WIDTH, HEIGHT, FPS = 32, 24, 8.0


def clip_frames(num_frames: int, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Flat-colour frames that change every frame: uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(20, 235, size=(num_frames, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (num_frames, height, width, 3)).copy()


def encode_mp4(frames: np.ndarray, fps: float = FPS) -> bytes:
    """H.264 mp4 bytes of ``frames`` (T, H, W, 3) uint8, one keyframe every 8 frames."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": "8"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buf.getvalue()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = FPS) -> str:
    """Write :func:`encode_mp4` bytes to ``path``; return it as str."""
    with open(path, "wb") as f:
        f.write(encode_mp4(frames, fps))
    return os.fspath(path)


def make_cameras(num_frames: int, fps: float = FPS, width: int = WIDTH, height: int = HEIGHT) -> Cameras:
    """A camera walking forward along +z, slowly yawing; K in pixels of (width, height)."""
    yaw = np.linspace(0.0, 0.3, num_frames)
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = np.cos(yaw), np.sin(yaw), -np.sin(yaw), np.cos(yaw)
    c2w[:, 2, 3] = 0.1 * np.arange(num_frames)
    K = np.tile(np.array([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]]), (num_frames, 1, 1))
    return Cameras(c2w, K, np.arange(num_frames) / fps, np.arange(num_frames), metric=True, scale_confidence=1.0)


def make_meta(num_frames: int, source: str = "local", source_id: str = "clip") -> dict:
    """The json member of a hand-made sample."""
    return {
        "source": source,
        "source_id": source_id,
        "caption": "a tiny test clip",
        "license": "CC-BY-4.0",
        "fps": FPS,
        "size": [WIDTH, HEIGHT],
        "num_frames": num_frames,
        "provenance": {"wmkit_version": __version__, "backends": {}, "weights": {}, "config_hash": "0" * 64},
        "quality": {},
    }


_MP4_CACHE: dict[tuple[int, int], bytes] = {}


def make_sample(key: str, num_frames: int = 6, seed: int = 0, depth: bool = False, source: str = "local") -> Sample:
    """A valid sample with a real H.264 clip (cached per (T, seed) to keep tests fast)."""
    if (num_frames, seed) not in _MP4_CACHE:
        _MP4_CACHE[num_frames, seed] = encode_mp4(clip_frames(num_frames, seed))
    depth_m = depth_valid = None
    if depth:
        depth_m = np.full((num_frames, HEIGHT // 4, WIDTH // 4), 2.5, dtype=np.float16)
        depth_valid = np.ones(depth_m.shape, dtype=bool)
    return Sample(
        key=key,
        mp4=_MP4_CACHE[num_frames, seed],
        cameras=make_cameras(num_frames),
        meta=make_meta(num_frames, source=source, source_id=key),
        depth=depth_m,
        depth_valid=depth_valid,
    )
