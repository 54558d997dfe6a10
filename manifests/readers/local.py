"""Reader for a plain folder of videos: one clip per file, headers probed with PyAV.

Layout: any tree under ROOT; every file ending in ``.mp4``, ``.mkv``,
``.mov``, ``.webm`` or ``.avi`` (any case) is a clip. The source id is the
path relative to ROOT; the clip spans the whole file. ``extra`` records the
codec, the container format and the file size. The licence is unknown, so
the tag is ``unspecified``: set it before sharing shards built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from wmkit.manifests.readers._common import BadRows, collect_rows, probe_video
from wmkit.manifests.schema import ManifestError, extra_json

__all__ = ["LICENSE", "VIDEO_SUFFIXES", "read_local"]

LICENSE = "unspecified"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")


def read_local(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for every video file under ``root`` (recursive, sorted by path)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError(f"local: {root} is not a folder")
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return collect_rows("local", videos, lambda p: p.relative_to(root).as_posix(), _clip, errors)


def _clip(path: Path) -> dict[str, Any]:
    header = probe_video(path)
    return {
        "media_uri": str(path),
        "start_s": 0.0,
        "end_s": header.duration_s,
        "fps": header.fps,
        "width": header.width,
        "height": header.height,
        "num_frames": header.num_frames,
        "license": LICENSE,
        "extra": extra_json({"codec": header.codec, "container": header.container, "bytes": path.stat().st_size}),
    }
