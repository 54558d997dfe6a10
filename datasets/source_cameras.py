"""Cameras that a source ships with its clips, read into wmkit :class:`Cameras` (DESIGN §2).

For a manifest row of a camera-carrying source, read the files at
``row["cameras_uri"]`` (laid out as the matching reader in
``wmkit.manifests.readers`` documents) and convert them with the converters of
``wmkit.datasets.cameras``: one camera per video frame of the clip
(``num_frames`` of them, ``t`` from the clip start), ``K`` in pixels of the
row's ``width`` x ``height``.

==========  =======================================  ==========================================
source      cameras_uri                              poses
==========  =======================================  ==========================================
spatialvid  annotation folder                        poses.npy/intrinsics.npy at indexes.txt frames
sekai_game  clip's .npz                              ``extrinsic`` c2w + ``intrinsic``, every frame
omniworld   scene/camera/split_<i>.json              w2c quats/trans at split_info.json frames
dl3dv       scene/transforms.json                    nerfstudio, one per frame image
dl3dv_gs    scene/transforms.json                    nerfstudio, one per training view
==========  =======================================  ==========================================

Sources that annotate only some frames (SpatialVID every ``int(fps/5)``-th,
OmniWorld's listed frames) are interpolated to every frame; poses must cover
the clip to within one annotation interval at each end, else the clip is
rejected rather than padded with a still camera.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from wmkit.datasets.cameras import (
    CameraError,
    Cameras,
    from_nerfstudio,
    from_omniworld,
    from_sekai_game,
    from_spatialvid,
    intrinsics_from_normalized,
    intrinsics_to_normalized,
)
from wmkit.manifests.readers.omniworld import read_split_frames

__all__ = ["CAMERA_SOURCES", "has_source_cameras", "load_source_cameras"]

#: rate for nerfstudio scenes without a time base (3DGS scenes have fps 0 in the manifest).
_NERFSTUDIO_DEFAULT_FPS = 30.0


def has_source_cameras(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` belongs to a camera-carrying source and names its camera files."""
    return row.get("source") in CAMERA_SOURCES and bool(row.get("cameras_uri"))


def load_source_cameras(row: Mapping[str, Any]) -> Cameras:
    """Validated cameras of every frame of the clip in manifest ``row``.

    Args:
        row: a manifest row (mapping with the ``wmkit.manifests.schema`` columns).

    Returns:
        :class:`Cameras` with ``row["num_frames"]`` frames, ``t = frame / fps``
        from the clip start, K in pixels of ``row["width"]`` x ``row["height"]``.

    Raises:
        CameraError: naming ``row["clip_id"]``: no camera source, missing or
            unreadable files, wrong shapes, non-finite values, non-positive
            focal lengths, or poses that cannot cover ``num_frames`` frames.
    """
    clip = str(row.get("clip_id", "?"))
    if not has_source_cameras(row):
        raise CameraError(
            f"{clip}: source {row.get('source')!r} has no source cameras (cameras_uri={row.get('cameras_uri')!r})"
        )
    try:
        cams = _LOADERS[row["source"]](row, Path(row["cameras_uri"]), clip)
    except CameraError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        reason = f"missing field {err.args[0]!r}" if isinstance(err, KeyError) else str(err)
        raise CameraError(f"{clip}: cannot read cameras at {row['cameras_uri']} ({reason})") from err
    if len(cams) != int(row["num_frames"]):
        raise CameraError(f"{clip}: {len(cams)} cameras for a clip of {row['num_frames']} frames")
    return cams.validate(clip)


def _spatialvid(row: Mapping[str, Any], folder: Path, clip: str) -> Cameras:
    poses = _load_npy(folder / "poses.npy", clip)
    intrinsics = _load_npy(folder / "intrinsics.npy", clip)
    indexes = _read_indexes(folder / "indexes.txt", clip)
    num_frames = int(row["num_frames"])
    _check_coverage(indexes, num_frames, clip)
    return from_spatialvid(
        poses, intrinsics, indexes, int(row["width"]), int(row["height"]), float(row["fps"]), num_frames, name=clip
    )


def _sekai_game(row: Mapping[str, Any], path: Path, clip: str) -> Cameras:
    _require(path, clip)
    with np.load(path, allow_pickle=False) as z:
        if "extrinsic" not in z or "intrinsic" not in z:
            raise CameraError(f"{clip}: {path} lacks 'extrinsic'/'intrinsic' (has {sorted(z.files)})")
        c2w, intrinsic = z["extrinsic"], z["intrinsic"]
    num_frames = int(row["num_frames"])
    if len(c2w) != num_frames:
        raise CameraError(f"{clip}: {path} has {len(c2w)} poses for a clip of {num_frames} frames")
    fxfycxcy = _sekai_normalized_intrinsics(intrinsic, len(c2w), clip)
    width, height, fps = int(row["width"]), int(row["height"]), float(row["fps"])
    return from_sekai_game(c2w, fxfycxcy, np.arange(len(c2w)), width, height, fps, num_frames, name=clip)


def _sekai_normalized_intrinsics(intrinsic: np.ndarray, n: int, clip: str) -> np.ndarray:
    """(n, 4) ``[fx/W, fy/H, cx/W, cy/H]`` from Sekai's normalized K (3,3)/(n,3,3) or vectors (4,)/(n,4)."""
    intrinsic = np.asarray(intrinsic, dtype=np.float64)
    if intrinsic.shape[-2:] == (3, 3):
        fx, fy = intrinsic[..., 0, 0], intrinsic[..., 1, 1]
        intrinsic = np.stack([fx, fy, intrinsic[..., 0, 2], intrinsic[..., 1, 2]], -1)
    if intrinsic.shape == (4,):
        return np.repeat(intrinsic[None], n, axis=0)
    if intrinsic.shape != (n, 4):
        raise CameraError(f"{clip}: intrinsic has shape {intrinsic.shape}, expected (3,3), ({n},3,3), (4,) or ({n},4)")
    return intrinsic


def _omniworld(row: Mapping[str, Any], path: Path, clip: str) -> Cameras:
    _require(path, clip)
    extra = json.loads(row["extra"])
    frames = np.asarray(read_split_frames(path.parent.parent)[int(extra["split_index"])], dtype=np.int64)
    camera = json.loads(path.read_text(encoding="utf-8"))
    n = len(frames)
    focals = np.broadcast_to(np.asarray(camera["focals"], dtype=np.float64), (n,))
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focals
    K[:, 0, 2] = np.broadcast_to(np.asarray(camera["cx"], dtype=np.float64), (n,))
    K[:, 1, 2] = np.broadcast_to(np.asarray(camera["cy"], dtype=np.float64), (n,))
    K[:, 2, 2] = 1.0
    scale = extra.get("Metric Scale")
    trans = np.asarray(camera["trans"], dtype=np.float64)
    if scale not in (None, ""):
        trans = trans * float(scale)  # scene units -> metres, the catalogue's per-scene factor
    indexes = frames - frames[0]
    num_frames = int(row["num_frames"])
    _check_coverage(indexes, num_frames, clip)
    return from_omniworld(
        camera["quats"], trans, K, indexes, float(row["fps"]), num_frames, metric=scale not in (None, ""), name=clip
    )


def _nerfstudio(row: Mapping[str, Any], path: Path, clip: str) -> Cameras:
    _require(path, clip)
    transforms = json.loads(path.read_text(encoding="utf-8"))
    fps = float(row["fps"]) or _NERFSTUDIO_DEFAULT_FPS
    cams = from_nerfstudio(transforms, fps=fps, name=clip)
    width, height = int(row["width"]), int(row["height"])
    file_w, file_h = int(transforms.get("w", width)), int(transforms.get("h", height))
    if (file_w, file_h) == (width, height):
        return cams
    # DL3DV ships transforms.json for the full-resolution capture beside
    # downscaled frame folders (images_4, ...): rescale K to the stored frames.
    K = intrinsics_from_normalized(intrinsics_to_normalized(cams.K, file_w, file_h), width, height)
    return Cameras(c2w=cams.c2w, K=K, t=cams.t, frame_index=cams.frame_index, metric=cams.metric)


_LOADERS: dict[str, Callable[[Mapping[str, Any], Path, str], Cameras]] = {
    "spatialvid": _spatialvid,
    "sekai_game": _sekai_game,
    "omniworld": _omniworld,
    "dl3dv": _nerfstudio,
    "dl3dv_gs": _nerfstudio,
}
CAMERA_SOURCES = tuple(_LOADERS)


def _require(path: Path, clip: str) -> None:
    if not path.is_file():
        raise CameraError(f"{clip}: missing camera file {path}")


def _load_npy(path: Path, clip: str) -> np.ndarray:
    _require(path, clip)
    return np.load(path, allow_pickle=False)


def _read_indexes(path: Path, clip: str) -> np.ndarray:
    """Frame indexes of the annotated rows from SpatialVID's indexes.txt.

    Accepts one index per line, or ``<row> <frame>`` pairs (the released
    files), whose second column is the frame index.
    """
    _require(path, clip)
    table = np.loadtxt(path, dtype=np.int64, ndmin=2)
    if table.shape[1] not in (1, 2) or len(table) == 0:
        raise CameraError(f"{clip}: {path} has shape {table.shape}, expected one or two integer columns")
    return table[:, -1]


def _check_coverage(indexes: np.ndarray, num_frames: int, clip: str) -> None:
    """Reject poses that leave more than one annotation interval uncovered at either end of the clip."""
    if len(indexes) == 0:
        raise CameraError(f"{clip}: no annotated frames")
    gap = int(np.diff(indexes).max()) if len(indexes) > 1 else 1
    if indexes[0] >= max(gap, 1) or indexes[-1] < num_frames - max(gap, 1):
        raise CameraError(
            f"{clip}: poses at frames {int(indexes[0])}..{int(indexes[-1])} cannot cover the clip's {num_frames} frames"
        )
