"""OmniWorld-Game catalogue reader: one clip per split of each scene.

Expected layout (``yangzhou24/OmniWorld`` README, ``scripts/utils.py`` and
``scripts/extract_one_game_scene.sh``; HuggingFace ``InternRobotics/OmniWorld``)::

    ROOT/
      metadata/omniworld_game_metadata.csv
      <UID>/                      one extracted scene
        color/                    RGB frames, one image per frame
        depth/                    16-bit depth maps (optional)
        camera/split_<i>.json     quats (w,x,y,z), trans: world-to-camera; focals, cx, cy: pixels
        split_info.json           {"split": [[frame indexes of split 0], ...]}
        fps.txt

Metadata columns used: ``UID``, ``Split Num`` (checked against
split_info.json), ``FPS`` and ``Resolution`` (``1280×720`` with the Unicode
multiplication sign, or ``1280x720``). ``Metric Scale`` (metres per scene
unit) and the rest go to ``extra``, plus ``split_index`` so the camera loader
finds the split. A clip's media is the scene's frame folder; its span is its
frames' range ``[first / fps, (last + 1) / fps]`` and it counts every frame of
that range (``last - first + 1``; cameras of unlisted frames are interpolated). Licence: CC BY-NC-SA 4.0
(README), game assets remain their publishers'.
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
)
from wmkit.manifests.schema import extra_json

__all__ = ["LICENSE", "read_omniworld", "read_split_frames"]

LICENSE = "CC-BY-NC-SA-4.0"
UID, SPLITS, FPS, RESOLUTION = "UID", "Split Num", "FPS", "Resolution"
_MAPPED = (UID, FPS, RESOLUTION)


def read_omniworld(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for every split of every scene listed in the metadata CSV (layout: module docstring)."""
    root = Path(root).resolve()
    catalogue = find_one(root, ("metadata/omniworld_game_metadata.csv", "omniworld_game_metadata.csv"), "omniworld")
    records = read_csv_rows(catalogue, required=(UID, SPLITS, FPS, RESOLUTION))
    return collect_rows("omniworld", records, lambda r: r[UID], lambda r: _clips(root, r), errors)


def read_split_frames(scene: Path) -> list[list[int]]:
    """Frame indexes of each split from ``scene/split_info.json``; :class:`RowError` if malformed."""
    path = scene / "split_info.json"
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))["split"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RowError(f"{path}: unreadable split list ({err!r})") from err
    if not isinstance(splits, list) or not all(isinstance(s, list) and s for s in splits):
        raise RowError(f"{path}: 'split' must be a list of non-empty frame index lists")
    frames = [[int(i) for i in split] for split in splits]
    for i, split in enumerate(frames):
        if split[0] < 0 or any(b <= a for a, b in zip(split, split[1:])):
            raise RowError(f"{path}: split {i} frame indexes are not non-negative and strictly increasing")
    return frames


def _clips(root: Path, record: Mapping[str, str]) -> list[dict[str, Any]]:
    scene = root / record[UID]
    frames_dir = scene / "color"
    if not frames_dir.is_dir():
        raise RowError(f"missing frame folder {frames_dir}")
    fps = parse_float(record, FPS)
    if fps <= 0:
        raise RowError(f"column {FPS!r}: {fps} is not positive")
    width, height = parse_resolution(record, RESOLUTION)
    splits = read_split_frames(scene)
    if len(splits) != parse_int(record, SPLITS):
        raise RowError(f"{scene / 'split_info.json'} lists {len(splits)} splits, catalogue says {record[SPLITS]}")
    depth = scene / "depth"
    clips = []
    for i, frames in enumerate(splits):
        cameras = scene / "camera" / f"split_{i}.json"
        if not cameras.is_file():
            raise RowError(f"missing camera file {cameras}")
        clips.append(
            {
                "source_id": f"{record[UID]}/split_{i}",
                "media_uri": str(frames_dir),
                "start_s": frames[0] / fps,
                "end_s": (frames[-1] + 1) / fps,
                "fps": fps,
                "width": width,
                "height": height,
                "num_frames": frames[-1] - frames[0] + 1,
                "license": LICENSE,
                "cameras_uri": str(cameras),
                "depth_uri": str(depth) if depth.is_dir() else "",
                "extra": extra_json({**{k: v for k, v in record.items() if k not in _MAPPED}, "split_index": i}),
            }
        )
    return clips
