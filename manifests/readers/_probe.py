"""Read a video's rate, size, frame count and duration from its headers with PyAV.

Used by readers whose catalogue does not record these (Sekai, plain folders).
When the container records no frame count (Matroska/WebM, some AVI) the video
packets are demuxed and counted: no decoding, one sequential read of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from wmkit.manifests.readers._common import RowError

__all__ = ["VideoHeader", "probe_video"]


@dataclass(frozen=True)
class VideoHeader:
    """Headers of a video file: frames per second, pixels, frames, seconds, codec and container names."""

    fps: float
    width: int
    height: int
    num_frames: int
    duration_s: float
    codec: str
    container: str


def probe_video(path: Path) -> VideoHeader:
    """Probe ``path``; :class:`RowError` naming the file if it is missing, unreadable or empty."""
    if not path.is_file():
        raise RowError(f"missing video file {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise RowError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise RowError(f"{path}: the video stream records no frame rate")
            num_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size > 0)
            if stream.duration and stream.time_base:
                duration_s = float(stream.duration * stream.time_base)
            elif container.duration:
                duration_s = container.duration / av.time_base
            else:
                duration_s = num_frames / float(rate)
            header = VideoHeader(
                fps=float(rate),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                num_frames=num_frames,
                duration_s=duration_s,
                codec=stream.codec_context.name,
                container=container.format.name,
            )
    except av.FFmpegError as err:
        raise RowError(f"{path}: unreadable video ({err})") from err
    if header.num_frames <= 0 or header.width <= 0 or header.height <= 0:
        raise RowError(f"{path}: empty video stream ({header.num_frames} frames, {header.width}x{header.height})")
    return header
