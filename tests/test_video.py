"""Video probe, frame-accurate decode (PyAV and decord, files and frame folders) and H.264 encode.

Fixture videos are generated: 40 frames of 96x64 at 20 fps whose top band
spells the frame index in 6 binary blocks (white = 1), so every decoded frame
says which source frame it is, even after lossy coding and resizing. The rest
of the frame is smooth moving colour, the content the backends compare on.
"""

from __future__ import annotations

import io
import re
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from wmkit.datasets.video import (
    VideoError,
    VideoInfo,
    decode_clip,
    decode_mp4_bytes,
    encode_mp4,
    probe,
    write_mp4,
)
from wmkit.datasets import video_decode
from wmkit.datasets.video_span import resolve_span, select_frames

T, H, W, FPS = 40, 64, 96, 20.0
BITS, BAND = 6, 16  # index bits across the width; height of the index band in pixels
GOPS = [None, 1, 5, 12]  # x264 default (one keyframe here), all-intra, and two GOP lengths
BACKENDS = ["pyav", "decord"]


def index_frames(num_frames: int = T, height: int = H, width: int = W) -> np.ndarray:
    """uint8 (T, H, W, 3): index bits in the top band, smooth moving colour below."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    block = width // BITS
    for i in range(num_frames):
        frames[i, ..., 0] = 128 + 90 * np.sin(2 * np.pi * (x + 3 * i) / 48)
        frames[i, ..., 1] = 128 + 90 * np.cos(2 * np.pi * (y - 2 * i) / 40)
        frames[i, ..., 2] = 40 + 150 * x / width
        frames[i, :BAND] = 0
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, :BAND, b * block : (b + 1) * block] = 255
    return frames


def read_indices(frames: np.ndarray) -> np.ndarray:
    """(T,) int64 source frame index spelled by each frame of uint8 (T, H, W, 3), at any size."""
    height, width = frames.shape[1:3]
    band = frames[:, : max(1, height * BAND // H // 2)].mean(axis=(1, 3))  # upper half of the band
    centres = ((np.arange(BITS) + 0.5) * width / BITS).astype(int)
    bits = band[:, centres] > 128
    return (bits * (1 << np.arange(BITS))).sum(axis=1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return index_frames()


@pytest.fixture(scope="module")
def videos(tmp_path_factory, frames) -> dict[int | None, Path]:
    folder = tmp_path_factory.mktemp("videos")
    paths = {}
    for gop in GOPS:
        paths[gop] = folder / f"gop{gop}.mp4"
        write_mp4(frames, paths[gop], FPS, keyframe_interval=gop)
    return paths


def _write_with_pyav(path: Path, frames: np.ndarray, fmt: str, first_pts: int = 0, faststart: bool = False) -> None:
    """Encode with PyAV directly (not encode_mp4): other containers, a start offset, faststart."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as container:
        stream = container.add_stream("libx264", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"x264-params": "keyint=7:min-keyint=7:scenecut=0"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = first_pts + i, Fraction(1, int(FPS))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# ---------------------------------------------------------------- encode


def test_encode_is_byte_identical_across_runs(frames):
    # With x264's mbtree on, most of 5 reruns differed (video_encode docstring); repeat to catch that.
    first = encode_mp4(frames, FPS)
    assert all(encode_mp4(frames, FPS) == first for _ in range(5))
    assert len({encode_mp4(frames, FPS, threads=3) for _ in range(3)}) == 1
    assert encode_mp4(frames.copy(), FPS, crf=18, preset="medium") == first
    assert encode_mp4(frames, FPS, crf=30) != first  # the knobs do reach the encoder


@pytest.mark.parametrize("num_frames", [1, 3, T])
def test_encode_roundtrip_keeps_every_frame(frames, num_frames):
    decoded = decode_mp4_bytes(encode_mp4(frames[:num_frames], FPS))
    assert decoded.shape == (num_frames, H, W, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(read_indices(decoded), np.arange(num_frames))
    assert np.abs(decoded.astype(int) - frames[:num_frames]).mean() < 3.0  # crf 18 on smooth content


def test_encode_keeps_rate_and_keyframe_interval(frames):
    data = encode_mp4(frames, 30000 / 1001, keyframe_interval=5)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001)
        keyframes = [i for i, packet in enumerate(p for p in container.demux(stream) if p.size) if packet.is_keyframe]
    assert keyframes == list(range(0, T, 5))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (np.zeros((4, 63, 96, 3), np.uint8), "even width and height"),
        (np.zeros((4, 64, 95, 3), np.uint8), "even width and height"),
        (np.zeros((4, 64, 96, 3), np.float32), "uint8"),
        (np.zeros((64, 96, 3), np.uint8), "uint8 (T, H, W, 3)"),
        (np.zeros((0, 64, 96, 3), np.uint8), "no pixels"),
    ],
)
def test_encode_rejects_bad_frames(bad, reason):
    with pytest.raises(VideoError, match=r"clip_7: .*" + re.escape(reason)):
        encode_mp4(bad, FPS, name="clip_7")


def test_encode_rejects_bad_settings(frames):
    with pytest.raises(VideoError, match="fps must be positive"):
        encode_mp4(frames, 0.0)
    with pytest.raises(VideoError, match="crf"):
        encode_mp4(frames, FPS, crf=60)
    with pytest.raises(VideoError, match="preset"):
        encode_mp4(frames, FPS, preset="warp")


def test_write_mp4_leaves_only_the_finished_file(tmp_path, frames):
    path = tmp_path / "clip.mp4"
    write_mp4(frames[:5], path, FPS, crf=23)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    assert path.read_bytes() == encode_mp4(frames[:5], FPS, crf=23)


# ---------------------------------------------------------------- probe


def test_probe_reads_headers(videos):
    info = probe(videos[5])
    assert info == VideoInfo(str(videos[5]), FPS, W, H, T, T / FPS, "h264", "mov,mp4,m4a,3gp,3g2,mj2")


def test_probe_counts_frames_when_the_container_has_no_count(tmp_path, frames):
    path = tmp_path / "clip.mkv"
    _write_with_pyav(path, frames, "matroska", first_pts=10)  # Matroska stores no frame count
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0
    info = probe(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (T, FPS, W, H)
    assert info.duration_s == pytest.approx(T / FPS)


# ---------------------------------------------------------------- frame accuracy


SPANS = [
    # (start_s, end_s, expected source frames); source frame i is at i / 20 s
    (0.0, None, range(0, 40)),
    (0.5, 1.3, range(10, 26)),
    (0.1 + 0.2, 0.7, range(6, 14)),  # 0.30000000000000004: float error must not drop frame 6
    (0.97, 1.5, range(19, 30)),  # a start 0.4 frame after frame 19 snaps back to it
    (1.0, 1.05, range(20, 21)),
    (1.95, 2.0, range(39, 40)),  # the last frame, span ending exactly at the video's end
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gop", GOPS)
def test_span_selects_exact_frames_after_seeking(videos, gop, backend):
    for start_s, end_s, expected in SPANS:
        clip = decode_clip(videos[gop], start_s, end_s, backend=backend)
        assert clip.shape[1:] == (H, W, 3)
        np.testing.assert_array_equal(read_indices(clip), np.array(expected), err_msg=f"span {start_s}-{end_s}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("start_s", "end_s", "fps"),
    [(0.52, None, 7.0), (0.5, 1.0, 30.0), (0.0, 2.0, 8.0), (0.4, 1.6, 16.0)],  # 8 and 16 fps hit exact ties
)
def test_fps_resampling_takes_the_nearest_frame(videos, backend, start_s, end_s, fps):
    stop = 2.0 if end_s is None else end_s
    times = start_s + np.arange(int(np.ceil(round((stop - start_s) * fps, 6)))) / fps
    in_span = [i for i in range(T) if start_s - 0.5 / FPS <= i / FPS < stop - 0.5 / FPS]
    # Nearest source frame, ties to the earlier one, among the frames inside the span.
    expected = np.clip(np.ceil(times * FPS - 0.5).astype(int), in_span[0], in_span[-1])
    clip = decode_clip(videos[5], start_s, end_s, fps=fps, backend=backend)
    np.testing.assert_array_equal(read_indices(clip), expected)


def test_pyav_seeks_to_the_keyframe_before_the_span_and_stops_after_it(videos, monkeypatch):
    decoded_s: list[float] = []
    timed_frames = video_decode._timed_frames

    def recording(*args):
        for t, frame in timed_frames(*args):
            decoded_s.append(t)
            yield t, frame

    monkeypatch.setattr(video_decode, "_timed_frames", recording)
    clip = decode_clip(videos[5], 1.62, 1.78)  # keyframes every 5 frames: frame 30 at 1.5 s
    np.testing.assert_array_equal(read_indices(clip), [32, 33, 34, 35])
    assert decoded_s == pytest.approx(np.arange(30, 37) / FPS)  # from the keyframe to one frame past the span


def test_timestamps_count_from_the_first_frame(tmp_path, frames):
    for fmt, name in [("mp4", "late.mp4"), ("matroska", "late.mkv")]:
        path = tmp_path / name
        _write_with_pyav(path, frames, fmt, first_pts=10)  # first frame at 0.5 s in the container
        for backend in BACKENDS:
            clip = decode_clip(path, 0.5, 1.0, backend=backend)
            np.testing.assert_array_equal(read_indices(clip), np.arange(10, 20), err_msg=f"{name} {backend}")


def test_resize_keeps_frames_and_sets_size(videos):
    clip = decode_clip(videos[12], 0.25, 0.75, size=(48, 32))
    assert clip.shape == (10, 32, 48, 3)
    np.testing.assert_array_equal(read_indices(clip), np.arange(5, 15))


def test_select_frames_tolerates_timestamp_jitter():
    rng = np.random.default_rng(0)
    times = np.arange(T) / FPS + rng.uniform(-0.2, 0.2, T) / FPS  # up to 0.2 frame of error
    span = resolve_span("list", 0.5, 1.0, T / FPS, FPS)
    chosen, last_s = select_frames(zip(times, range(T)), span, None)
    assert [i for _, i in chosen] == list(range(10, 20)) and last_s == times[19]
    chosen, _ = select_frames(zip(times, range(T)), span, 10.0)  # targets on even frames, jitter < half a frame
    assert [i for _, i in chosen] == [10, 12, 14, 16, 18]
    float32_times = (np.arange(T) / FPS).astype(np.float32).astype(np.float64)  # decord's timestamps
    chosen, _ = select_frames(zip(float32_times, range(T)), span, 40.0)  # every other target is a tie
    assert [i for _, i in chosen] == [i for i in range(10, 20) for _ in (0, 1)]


# ---------------------------------------------------------------- backends agree


# Mean absolute difference in levels between PyAV and decord, measured on these videos:
# 0 at source size (same FFmpeg decode and BT.601 conversion), 1.16-1.21 (max 7) when resizing
# (decord resizes inside its own filter graph; PyAV uses swscale bilinear).
AGREE_NATIVE, AGREE_RESIZED = 0.5, 2.0


@pytest.mark.parametrize(
    ("start_s", "end_s", "fps", "size", "tolerance"),
    [
        (0.0, None, None, None, AGREE_NATIVE),
        (0.65, 1.4, None, None, AGREE_NATIVE),
        (0.3, 1.9, 12.0, None, AGREE_NATIVE),
        (0.0, None, None, (64, 40), AGREE_RESIZED),
        (0.4, 1.6, 16.0, (128, 96), AGREE_RESIZED),
    ],
)
def test_backends_agree(videos, start_s, end_s, fps, size, tolerance):
    pyav = decode_clip(videos[5], start_s, end_s, fps=fps, size=size, backend="pyav")
    dec = decode_clip(videos[5], start_s, end_s, fps=fps, size=size, backend="decord")
    assert pyav.shape == dec.shape
    np.testing.assert_array_equal(read_indices(pyav), read_indices(dec))
    assert np.abs(pyav.astype(int) - dec).mean() < tolerance


def test_decord_width_bug_is_reported(videos):
    # decord 0.6 cannot output some widths (dmlc/decord#336); the error says so instead of crashing.
    with pytest.raises(VideoError, match=r"gop5\.mp4: decord could not decode.*decord#336"):
        decode_clip(videos[5], size=(48, 32), backend="decord")


def test_missing_decord_is_a_clear_error(videos, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(VideoError, match="decord is not installed"):
        decode_clip(videos[5], backend="decord")


# ---------------------------------------------------------------- frame folders


@pytest.fixture
def frame_folder(tmp_path, frames) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):  # unpadded names: natural order puts frame_2 before frame_10
        Image.fromarray(frames[i]).save(folder / f"frame_{i + 1}.png")
    (folder / "transforms.json").write_text("{}")  # not a frame
    return folder


def test_frame_folder_decodes_like_a_video(frame_folder, frames):
    np.testing.assert_array_equal(decode_clip(frame_folder, source_fps=FPS), frames[:12])  # PNG is lossless
    np.testing.assert_array_equal(decode_clip(frame_folder, 0.2, 0.5, source_fps=FPS), frames[4:10])
    clip = decode_clip(frame_folder, 0.1, 0.6, fps=10.0, size=(48, 32), source_fps=FPS)
    assert clip.shape == (5, 32, 48, 3)
    np.testing.assert_array_equal(read_indices(clip), [2, 4, 6, 8, 10])
    np.testing.assert_array_equal(decode_clip(frame_folder, 0.0, 0.3, fps=FPS), frames[:6])  # fps is the rate


def test_frame_folder_probe_and_errors(frame_folder, tmp_path):
    assert probe(frame_folder, source_fps=10.0) == VideoInfo(str(frame_folder), 10.0, W, H, 12, 1.2, "png")
    with pytest.raises(VideoError, match="images: a frame folder has no frame rate"):
        decode_clip(frame_folder)
    Image.new("RGB", (32, 32)).save(frame_folder / "frame_13.png")
    with pytest.raises(VideoError, match=r"frame_13\.png: frame size 32x32 differs"):
        decode_clip(frame_folder, source_fps=FPS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="empty: frame folder holds no"):
        decode_clip(tmp_path / "empty", source_fps=FPS)


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    for call in (lambda: probe(path), lambda: decode_clip(path)):
        with pytest.raises(VideoError, match=r"nope\.mp4: no such file"):
            call()


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.mp4"
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    for backend in BACKENDS:
        with pytest.raises(VideoError, match=r"noise\.mp4: not a readable video container"):
            decode_clip(path, backend=backend)
    with pytest.raises(VideoError, match="sample_3: not a readable video container"):
        decode_mp4_bytes(data, name="sample_3")


def test_truncated_mp4(tmp_path, videos):
    data = videos[5].read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    with pytest.raises(VideoError, match=r"half\.mp4: not a readable video container"):
        probe(half)
    with pytest.raises(VideoError, match=r"half\.mp4: not a readable video container"):
        decode_clip(half)
    with pytest.raises(VideoError, match="<bytes>: not a readable video container"):
        decode_mp4_bytes(data[: len(data) // 2])


def test_truncated_mp4_with_index_first(tmp_path, frames):
    # With the index at the front the header promises 40 frames the data no longer holds.
    whole = tmp_path / "whole.mp4"
    _write_with_pyav(whole, frames, "mp4", faststart=True)
    data = whole.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    assert probe(half).num_frames == T
    # PyAV decodes what is there and reports what is missing.
    np.testing.assert_array_equal(read_indices(decode_clip(half, 0.0, 0.3)), range(6))
    with pytest.raises(VideoError, match=r"half\.mp4: frames stop at .* truncated or corrupt"):
        decode_clip(half)
    with pytest.raises(VideoError, match=r"half\.mp4: span \[1\.5, 1\.9\) s holds no frame"):
        decode_clip(half, 1.5, 1.9)
    # decord refuses a partial file whatever the span.
    for span in [(0.0, 0.3), (0.0, None)]:
        with pytest.raises(VideoError, match=r"half\.mp4: decord could not decode the file"):
            decode_clip(half, *span, backend="decord")
    with pytest.raises(VideoError, match="member: decoded .* frames but the container records 40"):
        decode_mp4_bytes(data[: len(data) // 2], name="member")


def test_corrupt_stream_does_not_hang(tmp_path, videos):
    data = bytearray(videos[12].read_bytes())
    rng = np.random.default_rng(2)
    middle = slice(len(data) // 4, len(data) // 2)
    data[middle] = rng.integers(0, 256, middle.stop - middle.start, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(decode_clip(path).shape)
        except VideoError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert outcome, "decoding a corrupt stream did not finish within 20 s"
    # FFmpeg conceals damaged macroblocks: every frame comes back, or a VideoError names the file.
    result = outcome[0]
    assert result == (T, H, W, 3) or "corrupt.mp4" in str(result)


@pytest.mark.parametrize(
    ("start_s", "end_s", "reason"),
    [
        (1.0, 1.0, r"empty span \[1\.0, 1\.0\) s"),
        (1.0, 0.5, r"empty span \[1\.0, 0\.5\) s"),
        (1.01, 1.02, r"span \[1\.01, 1\.02\) s holds no frame"),  # between frames 20 and 21
        (2.0, 2.5, r"starts after the video ends at 2\.0000 s"),
        (5.0, None, r"starts after the video ends"),
        (1.5, 2.1, r"runs past the video's end at 2\.0000 s"),
        (-0.5, 1.0, r"starts at -0\.5 s, before the video starts"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_spans(videos, backend, start_s, end_s, reason):
    with pytest.raises(VideoError, match=r"gop5\.mp4: .*" + reason):
        decode_clip(videos[5], start_s, end_s, backend=backend)


def test_bad_arguments(videos):
    with pytest.raises(VideoError, match="unknown decode backend 'opencv'"):
        decode_clip(videos[5], backend="opencv")
    with pytest.raises(VideoError, match=r"size must be \(width, height\)"):
        decode_clip(videos[5], size=(0, 32))
    with pytest.raises(VideoError, match="output fps must be positive"):
        decode_clip(videos[5], fps=-1.0)
