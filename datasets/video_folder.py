"""Frame folders: a video stored as one image per frame (DL3DV scenes keep frames this way).

Frames are the folder's ``.png``/``.jpg``/``.jpeg`` files in natural name order
(digit runs compare as numbers, so ``frame_2`` precedes ``frame_10``; for the
zero-padded names sources use this equals plain sorting). Images carry no
timing: frame ``i`` is at ``i / source_fps`` seconds, with the rate given by the
caller. Pixels are read with Pillow and converted to RGB.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from wmkit.datasets.video_error import VideoError

__all__ = ["FRAME_SUFFIXES", "list_frame_files", "probe_frame_folder", "read_frame_image"]

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def _natural_key(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` in frame order; ``VideoError`` if it holds none."""
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key
    )
    if not files:
        raise VideoError(f"{folder}: frame folder holds no {'/'.join(FRAME_SUFFIXES)} images")
    return files


def probe_frame_folder(folder: Path) -> tuple[int, int, int, str]:
    """(num_frames, width, height, codec) of a frame folder; size and codec from its first image."""
    files = list_frame_files(folder)
    try:
        with Image.open(files[0]) as image:
            width, height = image.size
            codec = (image.format or files[0].suffix.lstrip(".")).lower()
    except (OSError, UnidentifiedImageError) as exc:
        raise VideoError(f"{files[0]}: not a readable image ({exc})") from exc
    return len(files), width, height, codec


def read_frame_image(path: Path, source_size: tuple[int, int], size: tuple[int, int] | None) -> np.ndarray:
    """One frame image as uint8 (H, W, 3) RGB, resized to ``size`` = (width, height) if given.

    ``source_size`` (width, height) is the folder's frame size: an image of
    another size is an error, as one clip has one camera sensor. Resizing uses
    Pillow's bilinear filter, whose support widens with the shrink factor, so
    shrinking averages over the covered area (no aliasing).
    """
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise VideoError(f"{path}: not a readable image ({exc})") from exc
    if rgb.size != source_size:
        raise VideoError(
            f"{path}: frame size {rgb.size[0]}x{rgb.size[1]} differs from the folder's "
            f"{source_size[0]}x{source_size[1]} (its first frame)"
        )
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)

