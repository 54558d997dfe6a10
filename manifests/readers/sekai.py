"""Sekai catalogue readers: ``sekai_walk`` (Sekai-Real walking-HQ) and ``sekai_game`` (Sekai-Game).

Expected layout (``Lixsp11/Sekai-Project`` on HuggingFace and the
``Lixsp11/sekai-codebase`` README; clips cut with its ``clip_extracting`` tools)::

    ROOT/
      train/sekai-real-walking-hq.csv
      train/sekai-game-walking.csv
      train/sekai-game-drone.csv
      sekai-real-walking-hq/<videoFile>               real clips, named <youtube id>_<start frame>_<end frame>.mp4
      sekai-game-walking/<videoFile> + <cameraFile>    game clips with their camera .npz
      sekai-game-drone/<videoFile> + <cameraFile>

Every CSV has ``videoFile, cameraFile, caption, location, scene, crowdDensity,
weather, timeOfDay``. Captions are long enough (hundreds of KB in places) to
break csv's default 128 KiB field limit, which the shared CSV reader raises.
The CSVs record no rate or size, so each clip is probed with PyAV. Game npz
files hold per-frame camera-to-world OpenCV ``extrinsic`` (not metric) and
normalized ``intrinsic`` (read by ``wmkit.datasets.source_cameras``); real
walking clips carry no cameras in wmkit (their MegaSaM trajectories ship in a
separate archive), so ``cameras_uri`` is empty and ``cameraFile`` stays in
``extra``. Licence: Sekai's own non-commercial research licence
(``sekai-codebase/LICENSE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from wmkit.manifests.readers._common import BadRows, RowError, collect_rows, probe_video, read_csv_rows
from wmkit.manifests.schema import ManifestError, extra_json

__all__ = ["LICENSE", "read_sekai_game", "read_sekai_walk"]

LICENSE = "LicenseRef-Sekai-NonCommercial-Research"
VIDEO, CAMERA, CAPTION = "videoFile", "cameraFile", "caption"
WALK_SPLITS = ("sekai-real-walking-hq",)
GAME_SPLITS = ("sekai-game-walking", "sekai-game-drone")


def read_sekai_walk(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for Sekai-Real walking-HQ clips (no cameras); layout in the module docstring."""
    return _read("sekai_walk", Path(root).resolve(), WALK_SPLITS, with_cameras=False, errors=errors)


def read_sekai_game(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for Sekai-Game walking and drone clips, with their camera npz; layout in the module docstring."""
    return _read("sekai_game", Path(root).resolve(), GAME_SPLITS, with_cameras=True, errors=errors)


def _read(source: str, root: Path, splits: tuple[str, ...], with_cameras: bool, errors: BadRows | None) -> pd.DataFrame:
    present = [s for s in splits if (root / "train" / f"{s}.csv").is_file()]
    if not present:
        raise ManifestError(f"{source}: no catalogue under {root} (looked for train/{{{','.join(splits)}}}.csv)")
    required = (VIDEO, CAMERA, CAPTION) if with_cameras else (VIDEO, CAPTION)
    records = [
        {"split": split, **row}
        for split in present
        for row in read_csv_rows(root / "train" / f"{split}.csv", required=required)
    ]
    return collect_rows(
        source, records, lambda r: f"{r['split']}/{r[VIDEO]}", lambda r: _clip(root, r, with_cameras), errors
    )


def _clip(root: Path, record: Mapping[str, str], with_cameras: bool) -> dict[str, Any]:
    folder = root / record["split"]
    video = folder / record[VIDEO]
    header = probe_video(video)
    cameras = ""
    if with_cameras:
        npz = folder / record[CAMERA]
        if not record[CAMERA] or not npz.is_file():
            raise RowError(f"missing camera file {npz}")
        cameras = str(npz)
    mapped = (VIDEO, CAPTION, CAMERA) if with_cameras else (VIDEO, CAPTION)
    return {
        "media_uri": str(video),
        "start_s": 0.0,
        "end_s": header.duration_s,
        "fps": header.fps,
        "width": header.width,
        "height": header.height,
        "num_frames": header.num_frames,
        "caption": record[CAPTION],
        "license": LICENSE,
        "cameras_uri": cameras,
        "depth_uri": "",
        "extra": extra_json({k: v for k, v in record.items() if k not in mapped}),
    }
