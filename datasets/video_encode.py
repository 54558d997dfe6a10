"""H.264 encoding of RGB frames into mp4 bytes (the ``mp4`` member of a shard, DESIGN §2).

libx264 through PyAV, entirely in memory. The output is deterministic: the
same frames and arguments give byte-identical mp4 bytes on every run, because

- x264's macroblock-tree rate control (``mbtree``) is off: with it on, this
  x264 (core 165) gave 9 different outputs in 25 single-threaded encodes of
  one 96x64 clip, and 6 in 10 at 320x192. Off, files at equal ``crf`` are
  larger (30-50% on the test clips);
- x264 runs with a fixed thread count (its output depends on the count, and
  the automatic count depends on the machine);
- frame timestamps are the frame index and the muxer writes no creation time.

The pixel format is yuv420p tagged as BT.601 limited range, the conversion
PyAV applies to RGB input, so decoders that read the tags convert back the
same way.

H.264 yuv420p needs even width and height; odd sizes are rejected rather than
padded, since padding would change the frame size the cameras' ``K`` refers to.
The moov atom is at the end of the file (moving it to the front needs a second
pass over a real file); readers here load whole members, so it costs nothing.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from wmkit.datasets.video_error import VideoError

__all__ = ["encode_mp4", "write_mp4"]

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)


def _check_frames(frames: np.ndarray, fps: float, crf: int, preset: str, threads: int, name: str) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise VideoError(f"{name}: frames must be uint8 (T, H, W, 3) RGB, got {dtype} {shape}")
    T, H, W, _ = frames.shape
    if T == 0 or H == 0 or W == 0:
        raise VideoError(f"{name}: frames {frames.shape} hold no pixels")
    if H % 2 or W % 2:
        raise VideoError(f"{name}: H.264 yuv420p needs even width and height, got {W}x{H}; resize or crop first")
    if not (np.isfinite(fps) and fps > 0):
        raise VideoError(f"{name}: fps must be positive, got {fps}")
    if not 0 <= crf <= 51:
        raise VideoError(f"{name}: x264 crf must be in [0, 51], got {crf}")
    if preset not in X264_PRESETS:
        raise VideoError(f"{name}: unknown x264 preset {preset!r}; one of {', '.join(X264_PRESETS)}")
    if threads < 1:
        raise VideoError(f"{name}: threads must be >= 1, got {threads}")


def encode_mp4(
    frames: np.ndarray,
    fps: float,
    crf: int = 18,
    preset: str = "medium",
    *,
    keyframe_interval: int | None = None,
    threads: int = 1,
    name: str = "<frames>",
) -> bytes:
    """Encode ``frames`` uint8 (T, H, W, 3) RGB at ``fps`` frames/s into H.264 yuv420p mp4 bytes.

    ``crf`` and ``preset`` are x264's quality and speed knobs. ``keyframe_interval``
    fixes the GOP length in frames (None keeps x264's default, at most 250, with
    scene-cut keyframes). ``threads`` is x264's thread count: the bytes are
    identical for identical inputs and arguments (module docstring). ``name``
    labels the frames in error messages. Decoding the result gives exactly T frames.
    """
    _check_frames(frames, fps, crf, preset, threads, name)
    T, H, W, _ = frames.shape
    # 1001 covers NTSC rates: 29.97 -> 30000/1001 exactly.
    rate = Fraction(fps).limit_denominator(1001)
    x264_params = ["mbtree=0"]  # see the module docstring: mbtree makes reruns differ
    if keyframe_interval is not None:
        if keyframe_interval < 1:
            raise VideoError(f"{name}: keyframe_interval must be >= 1, got {keyframe_interval}")
        x264_params += [f"keyint={keyframe_interval}", f"min-keyint={keyframe_interval}", "scenecut=0"]
    options = {"crf": str(crf), "preset": preset, "x264-params": ":".join(x264_params)}
    buffer = io.BytesIO()
    try:
        with av.open(buffer, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            stream.codec_context.thread_count = threads
            stream.codec_context.colorspace = av.video.reformatter.Colorspace.ITU601
            stream.codec_context.color_range = av.video.reformatter.ColorRange.MPEG
            stream.options = options
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush: x264 holds lookahead frames until told the input ended
    except av.FFmpegError as exc:
        raise VideoError(f"{name}: libx264 encoding failed ({exc})") from exc
    return buffer.getvalue()


def write_mp4(
    frames: np.ndarray,
    path: str | Path,
    fps: float,
    crf: int = 18,
    preset: str = "medium",
    *,
    keyframe_interval: int | None = None,
    threads: int = 1,
) -> None:
    """Encode ``frames`` uint8 (T, H, W, 3) RGB like ``encode_mp4`` and write the mp4 to ``path``.

    The file appears complete or not at all: bytes go to a temporary name in the
    same folder, renamed over ``path`` when written.
    """
    path = Path(path)
    data = encode_mp4(
        frames, fps, crf, preset, keyframe_interval=keyframe_interval, threads=threads, name=str(path)
    )
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
