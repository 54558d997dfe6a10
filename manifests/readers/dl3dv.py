"""DL3DV-10K catalogue reader (real-video scenes stored as frame folders).

Expected layout (``DL3DV-10K/Dataset`` ``scripts/download.py`` with
``--file_type images+poses``, which unzips each scene to ``<batch>/<hash>``)::

    ROOT/
      .cache/DL3DV-valid.csv     (or ROOT/DL3DV-valid.csv) columns: hash, sensibility label, batch, duration
      <batch>/<hash>/
        transforms.json          nerfstudio: OpenGL camera-to-world, applied_transform, fl_x.., k1,k2,p1,p2, w, h
        images*/frame_00001.png  the frames (images, images_2, images_4 or images_8 by resolution)

One clip per scene; ``media_uri`` is the frame folder (the highest-resolution
``images*`` folder present), ``cameras_uri`` the scene's transforms.json. The
frames are a time-ordered subsample of a capture of ``duration`` seconds, so
the clip's rate is ``frames / duration``. Frame size is read from the first
image. Licence: CC BY-NC 4.0 with the DL3DV-10K terms of use (``License.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from PIL import Image, UnidentifiedImageError

from wmkit.manifests.readers._common import BadRows, RowError, collect_rows, find_one, parse_float, read_csv_rows
from wmkit.manifests.schema import extra_json

__all__ = ["FRAME_FOLDERS", "FRAME_SUFFIXES", "LICENSE", "frame_files", "image_size", "read_dl3dv"]

LICENSE = "CC-BY-NC-4.0"
HASH, BATCH, DURATION = "hash", "batch", "duration"
#: frame folders by decreasing resolution (DL3DV ships 4K, 2K, 960P and 480P).
FRAME_FOLDERS = ("images", "images_2", "images_4", "images_8")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_dl3dv(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for every scene of ``DL3DV-valid.csv`` (layout: module docstring).

    A listed scene that was not downloaded is a bad row (``missing scene folder``).
    """
    root = Path(root).resolve()
    catalogue = find_one(root, (".cache/DL3DV-valid.csv", "DL3DV-valid.csv"), "dl3dv")
    records = read_csv_rows(catalogue, required=(HASH, BATCH, DURATION))
    return collect_rows("dl3dv", records, lambda r: r[HASH], lambda r: _clip(root, r), errors)


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, sorted by name (DL3DV names are zero-padded)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header; :class:`RowError` if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise RowError(f"{path}: unreadable image ({err})") from err


def _clip(root: Path, record: Mapping[str, str]) -> dict[str, Any]:
    scene = root / record[BATCH] / record[HASH]
    if not scene.is_dir():
        raise RowError(f"missing scene folder {scene}")
    transforms = scene / "transforms.json"
    if not transforms.is_file():
        raise RowError(f"missing camera file {transforms}")
    folder = next((scene / name for name in FRAME_FOLDERS if (scene / name).is_dir()), None)
    if folder is None:
        raise RowError(f"no frame folder {list(FRAME_FOLDERS)} in {scene}")
    frames = frame_files(folder)
    if not frames:
        raise RowError(f"frame folder {folder} holds no {FRAME_SUFFIXES} images")
    duration = parse_float(record, DURATION)
    if duration <= 0:
        raise RowError(f"column {DURATION!r}: {duration} is not positive")
    width, height = image_size(frames[0])
    return {
        "media_uri": str(folder),
        "start_s": 0.0,
        "end_s": duration,
        "fps": len(frames) / duration,
        "width": width,
        "height": height,
        "num_frames": len(frames),
        "license": LICENSE,
        "cameras_uri": str(transforms),
        "extra": extra_json({k: v for k, v in record.items() if k not in (HASH, DURATION)}),
    }
