"""wmkit video I/O: probe, frame-accurate decode (PyAV or decord) and deterministic H.264 encode.

One import point for the pieces, each in its own module:

- ``video_probe``: ``VideoInfo`` and ``probe`` (headers; exact frame count by demuxing when missing),
- ``video_span``: the rule for which frames a ``[start_s, end_s)`` span and an output rate select,
- ``video_decode``: ``decode_clip`` (file or frame folder) and ``decode_mp4_bytes`` (shard members),
- ``video_folder``: frame folders (DL3DV) read with Pillow,
- ``video_encode``: ``encode_mp4`` / ``write_mp4`` (libx264, yuv420p, byte-identical reruns).

Every failure raises ``VideoError`` (a ``ValueError``) naming the file and the reason.

Example::

    frames = decode_clip("clip.mp4", start_s=2.0, end_s=4.0, fps=16, size=(320, 192))  # (32, 192, 320, 3)
    data = encode_mp4(frames, fps=16)
    assert decode_mp4_bytes(data).shape == frames.shape
"""

from wmkit.datasets.video_decode import decode_clip, decode_mp4_bytes
from wmkit.datasets.video_encode import encode_mp4, write_mp4
from wmkit.datasets.video_error import VideoError
from wmkit.datasets.video_probe import VideoInfo, probe

__all__ = ["VideoError", "VideoInfo", "probe", "decode_clip", "decode_mp4_bytes", "encode_mp4", "write_mp4"]
