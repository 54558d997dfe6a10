"""MiraData catalogue reader.

Expected layout (``mira-space/MiraData`` README and ``download_data.py``)::

    ROOT/
      miradata_v1_*.csv          one meta file (any ``miradata*.csv`` name; exactly one)
      <file_path>                the cut clip, as the meta file's ``file_path`` names it,
                                 else clip_video/<clip_id>.mp4 (what download_data.py writes)

Meta columns used: ``clip_id`` (``{download_id}.{clip_id}``, so it holds a dot
and is sanitised for ``clip_id``), ``file_path``, ``fps``, ``width``,
``height``, ``seconds`` and ``dense_caption`` (else ``short_caption``). The
clip files are already cut, so the span is ``[0, seconds]`` and the frame
count ``round(seconds * fps)``. Every other column (``video_id``,
``timestamp``, the structured captions, scores) goes to ``extra``. Licence:
the meta files are Apache-2.0 (HuggingFace card of ``TencentARC/MiraData``);
the videos stay under their sources' terms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from wmkit.manifests.readers._common import (
    BadRows,
    RowError,
    collect_rows,
    find_one,
    parse_float,
    parse_int,
    read_csv_rows,
    resolve_under,
)
from wmkit.manifests.schema import extra_json

__all__ = ["LICENSE", "read_miradata"]

LICENSE = "Apache-2.0"
CLIP, PATH, FPS, WIDTH, HEIGHT, SECONDS = "clip_id", "file_path", "fps", "width", "height", "seconds"
DENSE, SHORT = "dense_caption", "short_caption"
_REQUIRED = (CLIP, FPS, WIDTH, HEIGHT, SECONDS)
_MAPPED = (CLIP, PATH, FPS, WIDTH, HEIGHT, SECONDS, DENSE)


def read_miradata(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for every clip of the ``ROOT/miradata*.csv`` meta file (layout: module docstring)."""
    root = Path(root).resolve()
    records = read_csv_rows(find_one(root, ("miradata*.csv",), "miradata"), required=_REQUIRED)
    return collect_rows("miradata", records, lambda r: r[CLIP], lambda r: _clip(root, r), errors)


def _clip(root: Path, record: Mapping[str, str]) -> dict[str, Any]:
    relative = record.get(PATH) or f"clip_video/{record[CLIP]}.mp4"
    video = resolve_under(root, relative)
    if not video.is_file():
        raise RowError(f"missing video file {video}")
    fps = parse_float(record, FPS)
    seconds = parse_float(record, SECONDS)
    if fps <= 0:
        raise RowError(f"column {FPS!r}: {fps} is not positive")
    return {
        "media_uri": str(video),
        "start_s": 0.0,
        "end_s": seconds,
        "fps": fps,
        "width": parse_int(record, WIDTH),
        "height": parse_int(record, HEIGHT),
        "num_frames": round(seconds * fps),
        "caption": record.get(DENSE) or record.get(SHORT, ""),
        "license": LICENSE,
        "extra": extra_json({k: v for k, v in record.items() if k not in _MAPPED}),
    }
