"""Which source frames a clip span selects: the frame-accuracy rule shared by every decode backend.

Times are seconds from the video's first frame. A span ``[start_s, end_s)``
selects source frame ``i`` iff ``start_s <= t_i < end_s``, evaluated with a
tolerance of half a source frame period ``h`` so float error in catalogued
bounds or in timestamps (decord reports float32) never flips a frame::

    source frames    0     1     2     3     4     5        t_i = i / fps
                     |     |     |     |     |     |
    span                  [start_s ........ end_s)
    tested as          [start_s - h ... end_s - h)          h = 0.5 / fps
    selected                 1     2     3

So a bound lying on a frame's timestamp (within h) includes that frame at the
start and excludes it at the end, and a bound between two frames goes to the
nearer one. For a constant-rate video the span holds ``round((end_s - start_s) * fps)``
frames. With an output rate ``fps`` the clip is resampled to the times
``start_s + k / fps`` (k = 0, 1, ... while below ``end_s``), each taking the
selected source frame nearest in time (ties, within ``TIE_S``, go to the earlier frame).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from wmkit.datasets.video_error import VideoError

__all__ = ["Span", "resolve_span", "output_times", "select_frames", "check_span_decoded"]

Item = TypeVar("Item")

# A target this close to the midpoint of two frames is a tie and goes to the earlier frame. 1 ms is
# far above timestamp rounding (decord's float32 seconds err by 0.2 ms after an hour) and far below
# any frame period, so exact ties resolve the same in every backend.
TIE_S = 1e-3


@dataclass(frozen=True)
class Span:
    """A checked span ``[start_s, end_s)`` in seconds and its tolerance ``tol_s`` (half a source frame)."""

    start_s: float
    end_s: float
    tol_s: float

    @property
    def lower_s(self) -> float:
        """Smallest frame time the span selects (inclusive)."""
        return self.start_s - self.tol_s

    @property
    def upper_s(self) -> float:
        """Frame times at or past this are outside the span (exclusive)."""
        return self.end_s - self.tol_s


def resolve_span(name: str, start_s: float, end_s: float | None, duration_s: float, source_fps: float) -> Span:
    """Check a requested span against a video of ``duration_s`` seconds at ``source_fps``; None end = video end."""
    tol_s = 0.5 / source_fps
    end = duration_s if end_s is None else float(end_s)
    if not (math.isfinite(start_s) and math.isfinite(end)):
        raise VideoError(f"{name}: span [{start_s}, {end}) s is not finite")
    if start_s < 0:
        raise VideoError(f"{name}: span starts at {start_s} s, before the video starts at 0 s")
    if start_s >= duration_s - tol_s:
        raise VideoError(f"{name}: span [{start_s}, {end}) s starts after the video ends at {duration_s:.4f} s")
    if end <= start_s:
        raise VideoError(f"{name}: empty span [{start_s}, {end}) s")
    if end > duration_s + tol_s:
        raise VideoError(f"{name}: span [{start_s}, {end}) s runs past the video's end at {duration_s:.4f} s")
    return Span(float(start_s), end, tol_s)


def output_times(span: Span, fps: float) -> np.ndarray:
    """Output frame times (K,) float64 seconds: ``start_s + k / fps`` for k while below ``end_s``."""
    # Rounding the product first keeps e.g. 1.0 s at 8 fps at 8 frames, not 9, under float error.
    count = math.ceil(round((span.end_s - span.start_s) * fps, 6))
    return span.start_s + np.arange(count, dtype=np.float64) / fps


def select_frames(
    frames: Iterable[tuple[float, Item]], span: Span, fps: float | None
) -> tuple[list[tuple[float, Item]], float | None]:
    """Pick the output frames of ``span`` from (time_s, item) pairs in presentation order.

    Returns the chosen pairs (one per output frame; a source frame repeats when
    ``fps`` exceeds the source rate) and the time of the last source frame seen
    inside the span (None if none). Stops consuming ``frames`` at the first one
    past the span, so a decoder feeding it stops decoding there.
    """
    targets = None if fps is None else output_times(span, fps)
    chosen: list[tuple[float, Item]] = []
    previous: tuple[float, Item] | None = None
    last_s: float | None = None
    k = 0
    for t, item in frames:
        if t < span.lower_s:
            continue
        if t >= span.upper_s:
            break
        last_s = t
        if targets is None:
            chosen.append((t, item))
            continue
        if previous is not None:
            # Targets up to the midpoint of two consecutive frames are nearer the earlier one.
            midpoint = (previous[0] + t) / 2 + TIE_S
            while k < len(targets) and targets[k] <= midpoint:
                chosen.append(previous)
                k += 1
        previous = (t, item)
    if targets is not None and previous is not None:
        chosen.extend([previous] * (len(targets) - k))
    return chosen, last_s


def check_span_decoded(name: str, span: Span, last_s: float | None, source_fps: float) -> None:
    """Raise if decoding yielded no frame in ``span`` or stopped more than a frame short of its end.

    ``resolve_span`` has already checked the span against the container's
    duration, so frames missing here mean the stream is truncated or corrupt.
    """
    if last_s is None:
        raise VideoError(
            f"{name}: span [{span.start_s}, {span.end_s}) s holds no frame "
            "(shorter than a frame, or the stream is truncated)"
        )
    if last_s < span.upper_s - 1.5 / source_fps:
        raise VideoError(
            f"{name}: frames stop at {last_s:.4f} s, before the span's end {span.end_s} s "
            "although the container's duration covers it: the stream is truncated or corrupt"
        )
