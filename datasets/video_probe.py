"""Video metadata: what a video file (or a folder of frame images) holds, read with PyAV.

``probe`` reads container and stream headers only, except when the container
does not record a frame count (Matroska/WebM, some AVI): then it demuxes every
packet of the video stream to count frames and measure the duration exactly.
Demuxing reads the whole file but decodes nothing, so it costs about one
sequential read of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av

from wmkit.datasets.video_error import VideoError
from wmkit.datasets.video_folder import probe_frame_folder

__all__ = ["VideoInfo", "probe", "open_video", "stream_fps"]


@dataclass(frozen=True)
class VideoInfo:
    """Headers of one video: rate in frames per second, size in pixels, duration in seconds."""

    path: str
    fps: float
    width: int
    height: int
    num_frames: int
    duration_s: float
    codec: str
    container: str = ""  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"; "" for a frame folder


def open_video(source: str | Path | BinaryIO, name: str) -> av.container.InputContainer:
    """Open ``source`` (a path or a binary file object) with PyAV; ``VideoError`` naming ``name`` if not a video."""
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise VideoError(f"{name}: no such file")
    try:
        container = av.open(str(source) if isinstance(source, Path) else source, mode="r")
    except av.FFmpegError as exc:
        raise VideoError(f"{name}: not a readable video container ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: the container has no video stream")
    return container


def stream_fps(stream: av.VideoStream, name: str) -> float:
    """Frames per second of ``stream``: the average rate, else FFmpeg's guess from timestamps."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoError(f"{name}: the video stream records no frame rate")
    return float(rate)


def probe(path: str | Path, source_fps: float | None = None) -> VideoInfo:
    """Frame rate, size, frame count, duration and codec of a video file or frame folder.

    A folder of images (``.png``/``.jpg``/``.jpeg``) carries no timing, so its
    rate must be given as ``source_fps``; its codec is the image format of its
    first frame. For a file, the frame count comes from the container when it
    records one and is otherwise counted exactly by demuxing (module docstring).
    """
    name = str(path)
    if Path(path).is_dir():
        if source_fps is None:
            raise VideoError(f"{name}: a frame folder has no frame rate; pass source_fps")
        num_frames, width, height, codec = probe_frame_folder(Path(path))
        return VideoInfo(name, float(source_fps), width, height, num_frames, num_frames / source_fps, codec)
    with open_video(path, name) as container:
        stream = container.streams.video[0]
        fps = stream_fps(stream, name)
        if stream.frames:
            num_frames = stream.frames
            if stream.duration and stream.time_base:
                duration_s = float(stream.duration * stream.time_base)
            else:
                duration_s = num_frames / fps
        else:
            num_frames, duration_s = _demux_extent(container, stream, fps, name)
        ctx = stream.codec_context
        if num_frames <= 0 or ctx.width <= 0 or ctx.height <= 0:
            raise VideoError(f"{name}: the video stream is empty ({num_frames} frames, {ctx.width}x{ctx.height})")
        return VideoInfo(name, fps, ctx.width, ctx.height, num_frames, duration_s, ctx.name, container.format.name)


def _demux_extent(
    container: av.container.InputContainer, stream: av.VideoStream, fps: float, name: str
) -> tuple[int, float]:
    """Exact (frame count, duration_s) by demuxing: one packet per frame for every codec wmkit reads.

    The duration runs from the first frame's timestamp to the last one's plus
    one frame period; container-level durations are not used because some
    muxers (Matroska) store the end timestamp there rather than the length.
    """
    count, first, last = 0, None, None
    try:
        for packet in container.demux(stream):
            # Demuxing ends with an empty flush packet per stream; only packets with data are frames.
            if packet.size == 0 or packet.pts is None:
                continue
            count += 1
            first = packet.pts if first is None else min(first, packet.pts)
            last = packet.pts if last is None else max(last, packet.pts)
    except av.FFmpegError as exc:
        raise VideoError(f"{name}: demuxing failed while counting frames ({exc})") from exc
    if count == 0:
        return 0, 0.0
    return count, float((last - first) * stream.time_base) + 1 / fps
