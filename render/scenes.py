"""Splat scenes: a 3DGS PLY plus the capture's training cameras, and the scene frame derived from them.

A DL3DV Gaussian-splat scene folder is what ``wmkit.manifests.readers.dl3dv_gs``
catalogues (its discovery rule picks the PLY; see that module)::

    <scene>/point_cloud/iteration_<N>/point_cloud.ply     (highest N)
    <scene>/transforms.json                               (nerfstudio, OpenGL c2w)
    <scene>/<frame file_path>, e.g. images/frame_00001.png  (training images, optional)

Training images are the frames' ``file_path`` resolved against the folder of
transforms.json (as nerfstudio's dataparser does), kept on :class:`Scene` in
camera order. A scene with none of them on disk (a generated room written by
:func:`write_scene`) has no images; one with only some of them loads (rendering
needs none), and :class:`TrainingImages` refuses to read any, naming the first
missing file, so a reference is never chosen among a partial set.

The scene frame (:class:`SceneFrame`) is what the path planner needs to move
a camera like a person would, measured from the data rather than assumed:

- **up**: the mean of the training cameras' up axes. OpenCV cameras have y
  down, so a camera's up is ``-c2w[:, :3, 1]``; people hold cameras roughly
  level, so the mean over a capture is the gravity up (DL3DV worlds are COLMAP
  worlds with an arbitrary orientation).
- **align**: a rotation world -> aligned frame whose z is ``up`` and whose x is
  the horizontal part of the mean viewing direction when the cameras agree on
  one (norm >= 0.1), else the world x axis made level (world y if x is
  near-vertical): a ring of cameras looking in or out has no mean direction.
- **bounds**: per aligned axis, the 2nd and 98th opacity-weighted percentiles
  of the Gaussian centres: floaters and far background splats are few or
  faint, so they do not stretch the box the way a min/max would.
- **scale**: the median distance of the training camera centres from their
  median centre (the capture radius, in scene units): speeds and clearances
  of paths are set relative to it for non-metric scenes.

Reference views (:func:`nearest_training_views`): for each novel camera, the
training camera of least ``|Δcentre| / scale + turn_weight · angle(view axes)``
(angle in radians between the optical axes, roll ignored; ties go to the lowest
training index). It is DiFix3D's rule (nv-tlabs/Difix3D ``examples/utils.py``:
translation + rotation angle, weights 1) with the distance in capture radii, so
the balance between moving and turning is the same in every scene's units.
:class:`TrainingImages` reads the chosen images once per scene, fitted to the
render size: scaled to cover it (aspect kept, bicubic), then centre-cropped, so a
reference has no padding borders and shows what the capture saw around its centre.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from wmkit.datasets.cameras import CameraError, Cameras, from_nerfstudio, to_nerfstudio
from wmkit.manifests.readers.dl3dv_gs import scene_plys
from wmkit.render.splats import Splats, SplatError, read_ply, write_ply

__all__ = [
    "Scene",
    "SceneError",
    "SceneFrame",
    "TrainingImages",
    "load_scene",
    "load_scene_files",
    "nearest_training_views",
    "scene_frame",
    "write_scene",
]

_BOUNDS_PERCENTILES = (2.0, 98.0)


class SceneError(ValueError):
    """A scene cannot be loaded or is degenerate; the message names the scene and the reason."""


@dataclass(frozen=True)
class SceneFrame:
    """Up direction, aligned frame, robust bounds and scale of a scene (method: module docstring).

    Attributes:
        up: (3,) unit world up vector.
        align: (3, 3) rotation world -> aligned frame (rows: aligned x, y, z = up).
        lo, hi: (3,) robust bounds of the Gaussian centres in the aligned frame.
        scale: capture radius in scene units (> 0).
    """

    up: np.ndarray
    align: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    scale: float

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) in the aligned frame (z = up)."""
        return np.asarray(points, dtype=np.float64) @ self.align.T

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Aligned-frame points (..., 3) back in world coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.align


@dataclass(frozen=True)
class Scene:
    """A splat scene ready for planning and rendering.

    Attributes:
        name: scene id used in every error and record.
        splats: the Gaussians.
        cameras: the capture's training cameras (OpenCV c2w, K in pixels).
        width, height: image size in pixels the training K refer to.
        frame: up, bounds and scale (:func:`scene_frame`).
        metric: True when scene units are metres (generated scenes); DL3DV
            (COLMAP) scenes are not metric.
        images: the training image files listed in transforms.json, one per camera in
            camera order; empty when none of them is on disk (module docstring).
    """

    name: str
    splats: Splats
    cameras: Cameras
    width: int
    height: int
    frame: SceneFrame
    metric: bool = False
    images: tuple[Path, ...] = ()


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, q: tuple[float, float]) -> np.ndarray:
    """(2, D) percentiles ``q`` of each column of ``values`` (M, D) under ``weights`` (M,)."""
    return np.stack(
        [np.percentile(values[:, d], q, weights=weights, method="inverted_cdf") for d in range(values.shape[1])],
        axis=1,
    )


def scene_frame(splats: Splats, cameras: Cameras, name: str = "scene") -> SceneFrame:
    """Up, aligned frame, robust bounds and scale of ``splats`` seen by ``cameras`` (module docstring).

    Raises:
        SceneError: naming ``name`` if there are no cameras, the cameras' up
            axes cancel out, all opacities are ~0, or the bounds or the
            capture radius are degenerate.
    """
    if len(cameras) == 0:
        raise SceneError(f"{name}: no training cameras to derive the up direction from")
    up = -cameras.c2w[:, :3, 1].mean(axis=0)
    if np.linalg.norm(up) < 1e-6:
        raise SceneError(f"{name}: training cameras' up axes cancel out; cannot tell up")
    up /= np.linalg.norm(up)
    forward = cameras.c2w[:, :3, 2].mean(axis=0)
    x = forward - up * (forward @ up)
    if np.linalg.norm(x) < 0.1:  # no agreed viewing direction (a ring looking in or out): world x, else y, made level
        x = next(h for e in np.eye(3) if np.linalg.norm(h := e - up * (e @ up)) >= 0.5)
    x /= np.linalg.norm(x)
    align = np.stack([x, np.cross(up, x), up])
    weights = splats.opacities.astype(np.float64)
    if weights.sum() <= 1e-6:
        raise SceneError(f"{name}: every Gaussian is transparent (opacity sum {weights.sum():.2e})")
    lo, hi = _weighted_percentiles(splats.means.astype(np.float64) @ align.T, weights, _BOUNDS_PERCENTILES)
    if (hi - lo <= 1e-9).any():
        raise SceneError(f"{name}: degenerate scene, robust bounds {lo.round(4).tolist()}..{hi.round(4).tolist()}")
    centres = cameras.c2w[:, :3, 3]
    scale = float(np.median(np.linalg.norm(centres - np.median(centres, axis=0), axis=1)))
    if scale <= 1e-9:
        # a tripod capture turning on the spot: fall back to the splats' extent
        scale = float(np.linalg.norm(hi - lo)) / 4.0
    return SceneFrame(up=up, align=align, lo=lo, hi=hi, scale=scale)


def _training_images(meta: dict, transforms: Path) -> tuple[Path, ...]:
    """The frames' image files in camera order (sorted by ``file_path``, as ``from_nerfstudio``), resolved
    against the folder of ``transforms``; () when none of them is on disk."""
    paths = tuple(transforms.parent / p for p in sorted(str(f["file_path"]) for f in meta["frames"]))
    return paths if any(p.is_file() for p in paths) else ()


def load_scene_files(ply: str | Path, transforms: str | Path, name: str | None = None, fps: float = 30.0) -> Scene:
    """A :class:`Scene` from a splat PLY and a nerfstudio ``transforms.json`` (a manifest row's
    ``media_uri`` and ``cameras_uri``) with its training image paths; errors name ``name``
    (default: the PLY's scene folder)."""
    ply, transforms = Path(ply), Path(transforms)
    name = name or str(ply)
    try:
        splats = read_ply(ply)
        meta = json.loads(transforms.read_text(encoding="utf-8"))
        cameras = from_nerfstudio(meta, fps=fps, name=str(transforms))
        width, height = int(meta["w"]), int(meta["h"])
    except (SplatError, CameraError) as err:
        raise SceneError(f"{name}: {err}") from err
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise SceneError(f"{name}: unreadable {transforms} ({err!r})") from err
    images = _training_images(meta, transforms)
    return Scene(name, splats, cameras, width, height, scene_frame(splats, cameras, name), images=images)


def load_scene(folder: str | Path, fps: float = 30.0) -> Scene:
    """Load a DL3DV scene folder (layout: module docstring), the PLY found by the dl3dv_gs reader's rule."""
    folder = Path(folder).resolve()
    found = scene_plys(folder).get(folder)
    if found is None or found[0] is None:
        raise SceneError(f"{folder}: no splat PLY (point_cloud/iteration_*/point_cloud.ply or a lone *.ply)")
    if not (folder / "transforms.json").is_file():
        raise SceneError(f"{folder}: no transforms.json with the training cameras")
    return load_scene_files(found[0], folder / "transforms.json", name=folder.name, fps=fps)


def write_scene(scene: Scene, folder: str | Path, iteration: int = 30000) -> Path:
    """Write ``scene`` as a DL3DV scene folder (binary PLY + transforms.json); return the PLY path."""
    folder = Path(folder)
    ply = folder / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply"
    ply.parent.mkdir(parents=True, exist_ok=True)
    write_ply(scene.splats, ply)
    meta = to_nerfstudio(scene.cameras, scene.width, scene.height)
    (folder / "transforms.json").write_text(json.dumps(meta), encoding="utf-8")
    return ply


def nearest_training_views(training: Cameras, c2w: np.ndarray, scale: float, turn_weight: float = 1.0) -> np.ndarray:
    """(T,) index of the nearest training camera for each novel camera ``c2w`` (T, 4, 4) (rule: module docstring).

    Args:
        training: the scene's training cameras (OpenCV c2w: the optical axis is column 2).
        c2w: novel camera-to-world poses.
        scale: length that one unit of ``turn_weight`` (one radian) is worth (the capture radius).
        turn_weight: weight of the angle between optical axes, per radian.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    centres = np.linalg.norm(c2w[:, None, :3, 3] - training.c2w[None, :, :3, 3], axis=-1) / scale
    cosine = np.einsum("ti,ni->tn", c2w[:, :3, 2], training.c2w[:, :3, 2])
    cost = centres + turn_weight * np.arccos(np.clip(cosine, -1.0, 1.0))
    return np.argmin(cost, axis=1)  # first minimum: ties go to the lowest training index


class TrainingImages:
    """A scene's training images as uint8 (H, W, 3) at one render size, each file read once (fit: module docstring).

    Args:
        scene: the scene whose ``images`` are read.
        size: (width, height) of the rendered frames.
    """

    def __init__(self, scene: Scene, size: tuple[int, int]) -> None:
        self.scene = scene
        self.size = (int(size[0]), int(size[1]))
        self._cache: dict[int, np.ndarray] = {}
        self._missing: list[Path] | None = None  # checked on the first read

    def get(self, index: int) -> np.ndarray:
        """Training image ``index`` fitted to the size; SceneError naming the scene and the file if it is
        unreadable, or if any listed image is missing (then naming the first)."""
        if index not in self._cache:
            if not self.scene.images:
                raise SceneError(f"{self.scene.name}: no training images on disk")
            if self._missing is None:
                self._missing = [p for p in self.scene.images if not p.is_file()]
            if self._missing:
                absent = f"{len(self._missing)} of {len(self.scene.images)} listed images absent"
                raise SceneError(f"{self.scene.name}: training image {self._missing[0]} is missing ({absent})")
            path = self.scene.images[index]
            try:
                with Image.open(path) as image:
                    fitted = ImageOps.fit(image.convert("RGB"), self.size, method=Image.Resampling.BICUBIC)
            except (OSError, ValueError) as err:  # missing, truncated or not an image (UnidentifiedImageError)
                raise SceneError(f"{self.scene.name}: training image {path} unreadable ({err})") from err
            self._cache[index] = np.asarray(fitted, dtype=np.uint8)
        return self._cache[index]

    def stack(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 (len(indices), H, W, 3) of the images ``indices``, in that order."""
        return np.stack([self.get(int(i)) for i in indices])
