"""Shared render test data: training images for a DL3DV-layout scene folder.

Example::

    write_scene(scene, tmp_path / "s")
    write_training_images(tmp_path / "s", colours)              # one flat-colour PNG per camera
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_training_images(folder: Path, colours: np.ndarray, size: tuple[int, int] = (40, 20)) -> list[Path]:
    """One flat-colour PNG of ``size`` (W, H) per frame of ``folder/transforms.json``, at its ``file_path``;
    ``colours`` (N, 3) in camera order (sorted file paths). Returns the paths in that order."""
    from PIL import Image

    meta = json.loads((folder / "transforms.json").read_text())
    paths = sorted(folder / f["file_path"] for f in meta["frames"])
    for path, colour in zip(paths, colours):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.broadcast_to(colour, (size[1], size[0], 3)).astype(np.uint8)).save(path)
    return paths
