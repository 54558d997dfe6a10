"""DL3DV Gaussian-splat scene reader: one manifest row per trained 3DGS scene.

Expected layout: a folder of scenes as the 3DGS reference trainer
(graphdeco-inria ``gaussian-splatting``, ``train.py``) writes them, optionally
beside the DL3DV scene's nerfstudio ``transforms.json``::

    ROOT/<scene>/
      point_cloud/iteration_<N>/point_cloud.ply   (the highest N is used)
      transforms.json                             (optional: the capture's cameras)

A scene folder holding a single top-level ``*.ply`` instead of
``point_cloud/`` is accepted too (a trainer's ``input.ply`` beside
``point_cloud/`` is not a splat and is ignored); a folder with several
top-level plys and no ``point_cloud/`` is a bad row, since the splat is ambiguous. There is no catalogue file, so the reader
walks ROOT; the source id is the scene folder relative to ROOT (the DL3DV
hash). ``media_uri`` is the ply; ``cameras_uri`` is transforms.json when
present, and then ``num_frames``/``width``/``height`` are its frame count and
``w``/``h``; otherwise they are 0, as is ``fps`` (a splat has no time base).
``extra`` holds the ply's path in the scene, its iteration and vertex count
(read from the PLY header). Licence: CC BY-NC 4.0 (DL3DV-10K ``License.md``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from wmkit.manifests.readers._common import BadRows, RowError, collect_rows
from wmkit.manifests.schema import ManifestError, extra_json

__all__ = ["LICENSE", "ply_vertex_count", "read_dl3dv_gs", "scene_plys"]

LICENSE = "CC-BY-NC-4.0"
_ITERATION = re.compile(r"^iteration_(\d+)$")
_MAX_HEADER_BYTES = 1 << 16


def read_dl3dv_gs(root: Path, errors: BadRows | None = None) -> pd.DataFrame:
    """Manifest rows for every 3DGS scene under ``root`` (layout: module docstring)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError(f"dl3dv_gs: {root} is not a folder")
    scenes = sorted(scene_plys(root).items())
    return collect_rows(
        "dl3dv_gs", scenes, lambda s: s[0].relative_to(root).as_posix(), lambda s: _scene(*s), errors
    )


def ply_vertex_count(path: Path) -> int:
    """Vertex (Gaussian) count from a PLY header; :class:`RowError` if the header is not PLY."""
    with path.open("rb") as f:
        head = f.read(_MAX_HEADER_BYTES)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise RowError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        parts = line.split()
        if parts[:2] == ["element", "vertex"] and len(parts) == 3 and parts[2].isdigit():
            return int(parts[2])
    raise RowError(f"{path}: PLY header has no 'element vertex <count>' line")


def scene_plys(root: Path) -> dict[Path, tuple[Path | None, int | None]]:
    """Scene folder -> (its ply, iteration): highest ``iteration_N``, else a lone top-level ply (None if several)."""
    found: dict[Path, tuple[Path | None, int | None]] = {}
    for ply in root.rglob("point_cloud.ply"):
        match = _ITERATION.match(ply.parent.name)
        if match and ply.parent.parent.name == "point_cloud":
            scene, iteration = ply.parents[2], int(match.group(1))
            if scene not in found or (found[scene][1] or -1) < iteration:
                found[scene] = (ply, iteration)
    for ply in root.rglob("*.ply"):
        scene = ply.parent
        if scene in found or any(p.name == "point_cloud" for p in ply.parents):
            continue
        found[scene] = (ply if len(list(scene.glob("*.ply"))) == 1 else None, None)
    return found


def _scene(scene: Path, ply_iteration: tuple[Path | None, int | None]) -> dict[str, Any]:
    ply, iteration = ply_iteration
    if ply is None:
        raise RowError(f"{scene}: several .ply files and no point_cloud/iteration_*/, so the splat is ambiguous")
    extra: dict[str, Any] = {
        "ply": ply.relative_to(scene).as_posix(),
        "iteration": iteration,
        "num_gaussians": ply_vertex_count(ply),
    }
    transforms = scene / "transforms.json"
    num_frames = width = height = 0
    if transforms.is_file():
        try:
            meta = json.loads(transforms.read_text(encoding="utf-8"))
            num_frames, width, height = len(meta["frames"]), int(meta.get("w", 0)), int(meta.get("h", 0))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise RowError(f"{transforms}: not a nerfstudio transforms.json ({err!r})") from err
    return {
        "media_uri": str(ply),
        "start_s": 0.0,
        "end_s": 0.0,
        "fps": 0.0,
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "license": LICENSE,
        "cameras_uri": str(transforms) if transforms.is_file() else "",
        "extra": extra_json(extra),
    }
