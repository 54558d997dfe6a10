"""Frame-accurate decoding of clip spans into uint8 RGB arrays, with PyAV or decord.

The span rule (which source frames a ``[start_s, end_s)`` span and an output
rate select) lives in ``video_span`` and is shared by all backends, so they
return the same frames. Times count from the stream's first frame.

Backends:

- ``pyav`` (default): seeks to the keyframe at or before the span, decodes
  forward and stops at the first frame past the span. Resizing is swscale's
  bilinear filter, whose tent widens with the shrink factor, so shrinking
  averages over the covered area rather than aliasing (the closest of
  swscale's filters to decord's output); colour conversion is swscale's,
  BT.601 unless the stream is tagged otherwise.
- ``decord`` (optional import): indexes the file, picks frames from its
  timestamps (float32 seconds, hence the tolerances in ``video_span``) and
  reads them with ``get_batch``. At source size its pixels equal PyAV's (same
  FFmpeg decode and conversion); resizing happens in decord's own filter
  graph, whose filter none of swscale's reproduces, so resized frames differ
  from PyAV's by a mean of about 1.2 levels (at most 7) on the test videos.
  decord 0.6 cannot output some widths (e.g. 48, 72: dmlc/decord#336); that
  raises ``VideoError`` saying so. It also refuses partial (truncated) files
  outright, where PyAV decodes the frames that are present.
- a folder of ``.png``/``.jpg``/``.jpeg`` frames (see ``video_folder``) is read
  with Pillow whatever the backend; its rate is ``source_fps`` (default: ``fps``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
import numpy as np

from wmkit.datasets.video_error import VideoError
from wmkit.datasets.video_folder import list_frame_files, probe_frame_folder, read_frame_image
from wmkit.datasets.video_probe import open_video, probe
from wmkit.datasets.video_span import Span, check_span_decoded, resolve_span, select_frames

__all__ = ["decode_clip", "decode_mp4_bytes"]


def _check_size(name: str, size: tuple[int, int] | None) -> None:
    if size is not None and (len(size) != 2 or min(size) < 1 or any(int(v) != v for v in size)):
        raise VideoError(f"{name}: size must be (width, height) in positive whole pixels, got {size}")


def decode_clip(
    path: str | Path,
    start_s: float = 0.0,
    end_s: float | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    backend: Literal["pyav", "decord"] = "pyav",
    *,
    source_fps: float | None = None,
) -> np.ndarray:
    """Frames of the span ``[start_s, end_s)`` seconds of a video as uint8 (T, H, W, 3) RGB.

    Frame i of the source is kept iff ``start_s <= t_i < end_s`` with half a
    frame of tolerance (``video_span``); ``end_s=None`` runs to the video's end.
    ``fps`` None keeps the source frames; otherwise the clip is resampled to
    ``start_s + k / fps`` by nearest source frame. ``size`` = (width, height)
    resizes (module docstring for the filters); None keeps the source size.
    ``path`` may be a folder of frame images, whose rate ``source_fps``
    (default ``fps``) must then be known. Raises ``VideoError`` naming the file
    for a missing or unreadable file, a span outside the video, an empty span,
    or a stream that ends early.
    """
    name = str(path)
    _check_size(name, size)
    if fps is not None and not (fps > 0 and np.isfinite(fps)):
        raise VideoError(f"{name}: output fps must be positive, got {fps}")
    if backend not in ("pyav", "decord"):
        raise VideoError(f"{name}: unknown decode backend {backend!r}; use 'pyav' or 'decord'")
    if Path(path).is_dir():
        return _decode_folder(Path(path), start_s, end_s, fps, size, source_fps or fps)
    # Both backends check the span against the same PyAV headers, so they accept the same spans.
    info = probe(path)
    span = resolve_span(name, start_s, end_s, info.duration_s, info.fps)
    decode = _decode_pyav if backend == "pyav" else _decode_decord
    return decode(Path(path), span, fps, size, info.fps)


def _timed_frames(
    container: av.container.InputContainer, stream: av.VideoStream, seek_s: float, name: str
) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds from the first frame, frame) in presentation order, starting near ``seek_s``."""
    origin = stream.start_time or 0
    try:
        if seek_s > 0:
            # Lands on the keyframe at or before seek_s; frames before the span are decoded and dropped.
            container.seek(origin + int(seek_s / stream.time_base), backward=True, any_frame=False, stream=stream)
        for frame in container.decode(stream):
            if frame.pts is None:
                raise VideoError(f"{name}: decoded a frame without a timestamp; cannot place it in time")
            yield float((frame.pts - origin) * stream.time_base), frame
    except av.FFmpegError as exc:
        raise VideoError(f"{name}: decoding failed, the stream is corrupt ({exc})") from exc


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="BILINEAR").to_ndarray()


def _stack_rgb(chosen: list[tuple[float, av.VideoFrame]], size: tuple[int, int] | None) -> np.ndarray:
    """Convert chosen frames to one array; a frame chosen repeatedly is converted once."""
    arrays: list[np.ndarray] = []
    for i, (_, frame) in enumerate(chosen):
        repeat = i > 0 and frame is chosen[i - 1][1]
        arrays.append(arrays[-1] if repeat else _to_rgb(frame, size))
    return np.stack(arrays)


def _decode_pyav(
    path: Path, span: Span, fps: float | None, size: tuple[int, int] | None, source_fps: float
) -> np.ndarray:
    name = str(path)
    with open_video(path, name) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        chosen, last_s = select_frames(_timed_frames(container, stream, span.lower_s, name), span, fps)
        check_span_decoded(name, span, last_s, source_fps)
        return _stack_rgb(chosen, size)


def _import_decord():
    try:
        import decord
    except ImportError as exc:
        raise VideoError("decord backend requested but decord is not installed (pip install decord)") from exc
    return decord


def _decode_decord(
    path: Path, span: Span, fps: float | None, size: tuple[int, int] | None, source_fps: float
) -> np.ndarray:
    decord = _import_decord()
    name = str(path)
    width, height = size if size is not None else (-1, -1)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=width, height=height)
        stamps = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0].astype(np.float64)
        chosen, last_s = select_frames(zip(stamps - stamps[0], range(len(stamps))), span, fps)
        check_span_decoded(name, span, last_s, source_fps)
        indices = [i for _, i in chosen]
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = reader.get_batch(unique.tolist()).asnumpy()
    except decord.DECORDError as exc:
        # decord 0.6 returns 4-channel rows for some output widths (e.g. 48, 72) and then fails its copy.
        hint = " (decord fails for some widths, dmlc/decord#336: try another size or backend='pyav')" if size else ""
        raise VideoError(f"{name}: decord could not decode the file{hint}: {str(exc).splitlines()[0]}") from exc
    return frames[inverse]


def _decode_folder(
    folder: Path,
    start_s: float,
    end_s: float | None,
    fps: float | None,
    size: tuple[int, int] | None,
    source_fps: float | None,
) -> np.ndarray:
    if source_fps is None or not source_fps > 0:
        raise VideoError(f"{folder}: a frame folder has no frame rate; pass source_fps (or fps)")
    files = list_frame_files(folder)
    _, width, height, _ = probe_frame_folder(folder)
    span = resolve_span(str(folder), start_s, end_s, len(files) / source_fps, source_fps)
    chosen, last_s = select_frames(((i / source_fps, i) for i in range(len(files))), span, fps)
    check_span_decoded(str(folder), span, last_s, source_fps)
    # dict.fromkeys: each distinct frame read once, in order, however often resampling repeats it.
    arrays = {i: read_frame_image(files[i], (width, height), size) for i in dict.fromkeys(i for _, i in chosen)}
    return np.stack([arrays[i] for _, i in chosen])


def decode_mp4_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """All frames of an in-memory video (e.g. a shard's ``mp4`` member) as uint8 (T, H, W, 3) RGB.

    ``name`` labels the data in errors. Raises ``VideoError`` if the bytes are no
    video or decode to fewer frames than the container records.
    """
    with open_video(io.BytesIO(data), name) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [frame.to_ndarray(format="rgb24") for _, frame in _timed_frames(container, stream, 0.0, name)]
        if not frames or (stream.frames and len(frames) != stream.frames):
            raise VideoError(f"{name}: decoded {len(frames)} frames but the container records {stream.frames}: "
                             "the stream is truncated or corrupt")
        return np.stack(frames)
