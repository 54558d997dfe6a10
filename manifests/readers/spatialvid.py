"""SpatialVID / SpatialVID-HQ catalogue reader.

Expected layout (the HuggingFace dataset card of ``SpatialVID/SpatialVID-HQ``,
after unpacking the per-group tarballs)::

    ROOT/
      data/train/SpatialVID_HQ_metadata.csv     (SpatialVID: SpatialVID_metadata.csv)
      videos/group_0001/<id>.mp4
      annotations/group_0001/<id>/{poses.npy, intrinsics.npy, indexes.txt, caption.json, ...}
      depths/group_0001/<id>.zip                 (optional)

The metadata CSV names its columns with spaces (``"video path"``,
``"annotation path"``, ``"num frames"``, ``"aesthetic score"``, ...; camelCase
for the motion statistics ``moveDist``, ``rotAngle``, ...). ``video path`` and
``annotation path`` are relative to ROOT, or to ``ROOT/videos`` and
``ROOT/annotations`` in releases that drop that level; both are accepted.
``resolution`` is ``WIDTHxHEIGHT``. The caption is ``SceneDescription`` from
the clip's ``caption.json`` (falling back to ``SceneSummary``); the CSV has no
caption column. ``cameras_uri`` is the annotation folder (read by
``wmkit.datasets.source_cameras``). Licence: CC BY-NC-SA 4.0 (dataset card).
"""

from __future__ import annotations

import json
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
    parse_resolution,
    read_csv_rows,
    resolve_under,
)
from wmkit.manifests.schema import extra_json

__all__ = ["LICENSE", "read_spatialvid"]

LICENSE = "CC-BY-NC-SA-4.0"
CATALOGUES = ("data/train/SpatialVID_HQ_metadata.csv", "data/train/SpatialVID_metadata.csv")
ID, VIDEO, ANNOTATION = "id", "video path", "annotation path"
FRAMES, FPS, RESOLUTION = "num frames", "fps", "resolution"
_MAPPED = (ID, VIDEO, ANNOTATION, FRAMES, FPS, RESOLUTION)


def read_spatialvid(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for every clip in ``ROOT/data/train/SpatialVID*_metadata.csv`` (layout: module docstring).

    Bad rows (missing video or annotation folder, unparsable numbers) raise
    :class:`ManifestError` when ``errors`` is None, else are appended to it as
    ``(id, reason)``.
    """
    root = Path(root).resolve()
    catalogue = find_one(root, CATALOGUES, "spatialvid")
    records = read_csv_rows(catalogue, required=_MAPPED)
    return collect_rows("spatialvid", records, lambda r: r[ID], lambda r: _clip(root, r), errors)


def _clip(root: Path, record: Mapping[str, str]) -> dict[str, Any]:
    video = resolve_under(root, record[VIDEO], "videos")
    if not video.is_file():
        raise RowError(f"missing video file {video}")
    annotation = resolve_under(root, record[ANNOTATION], "annotations")
    if not (annotation / "poses.npy").is_file():
        raise RowError(f"missing camera annotation {annotation / 'poses.npy'}")
    fps = parse_float(record, FPS)
    num_frames = parse_int(record, FRAMES)
    if fps <= 0:
        raise RowError(f"column {FPS!r}: {fps} is not positive")
    width, height = parse_resolution(record, RESOLUTION)
    depth = root / "depths" / annotation.parent.name / f"{annotation.name}.zip"
    return {
        "source_id": record[ID],
        "media_uri": str(video),
        "start_s": 0.0,
        "end_s": num_frames / fps,
        "fps": fps,
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "caption": _caption(annotation / "caption.json"),
        "license": LICENSE,
        "cameras_uri": str(annotation),
        "depth_uri": str(depth) if depth.is_file() else "",
        "extra": extra_json({k: v for k, v in record.items() if k not in _MAPPED}),
    }


def _caption(path: Path) -> str:
    """``SceneDescription`` (else ``SceneSummary``) of a clip's caption.json; empty when the file is absent."""
    if not path.is_file():
        return ""
    try:
        caption = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RowError(f"{path}: not JSON ({err})") from err
    if not isinstance(caption, dict):
        raise RowError(f"{path}: expected a JSON object")
    return str(caption.get("SceneDescription") or caption.get("SceneSummary") or "")
