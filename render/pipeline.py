"""Render a manifest of splat scenes into shards: (scene, path) tasks on Ray GPU actors or in-process.

One run::

    1 manifest.parquet (dl3dv_gs rows) ──► tasks: each scene x ``paths_per_scene``,
        key ``{clip_id}_p{index:03d}``, seed from (config.seed, clip_id, index)
        (:func:`path_seed`); skip keys in index.parquet (done) and, unless
        retry_failed, keys status.parquet marks failed
    2 render (one :class:`PathRenderer` per worker: rasterizer and refiner set up once,
      the last scene kept on the device), per task (:func:`render_task`):
        scene    load_scene_files(ply, transforms.json)        SceneError (bad PLY, degenerate)
        path     plan_path(scene, seed, config.path)           PathError (every attempt's reason)
        render   render_frames: uint8 RGB, expected depth, alpha (gsplat on CUDA, else reference)
        reference  with the refiner and config.refiner_reference "nearest": each frame's
                 nearest training view (scenes.nearest_training_views), its image fitted to
                 the render size and read once per scene (scenes.TrainingImages); a scene
                 without training images on disk gets none; json render.reference records it
        refine   refiner.refine(frames, views, index) when config.refiner is set, else skipped
                 ("off"); flicker before/after (render.flicker) at the depth's resolution -> json quality
        encode   encode_mp4 (libx264, fixed threads: same bytes on every run)
        sample   Sample(mp4, cameras = the planned path, depth.npz, json).validate()
      runner="local": one worker in this process, tasks in order
      runner="ray":   Ray Data actor pool of ``num_actors`` workers, one task per batch,
                      ``num_gpus_per_actor`` GPUs each (None: 1 when the cluster has GPUs)
    3 driver: ShardWriter (temporary name, renamed when complete) + status.parquet
      (steps 1-3 run through :mod:`wmkit.datasets.item_runner`, shared with annotate)

A failing task becomes a ``failed`` status row with its stage and a reason that
names the scene, and never reaches the writer: no partial sample or shard is
published. The cameras stored are the planned path's, exactly (float64 c2w, K
in pixels of the stored frames); ``metric`` is the scene's (generated rooms are
metric; DL3DV scenes are in COLMAP units), and so are the depth units.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from wmkit import __version__
from wmkit.datasets.cameras import scale_intrinsics
from wmkit.datasets.item_runner import (
    ClipError,
    ItemResult,
    ItemWorker,
    RayResources,
    clip_stage,
    local_results,
    ray_results,
    run_to_shards,
)
from wmkit.datasets.sample import Sample
from wmkit.datasets.status import StatusTable
from wmkit.manifests.schema import read_manifest, validate
from wmkit.render.frames import (
    Frames,
    Rasterizer,
    RasterizerChoice,
    SceneTensors,
    host_rasterize,
    pick_rasterizer,
    render_frames,
)
from wmkit.render.path_planner import PathConfig, PlannedPath, plan_path
from wmkit.render.reference_rasterizer import Rasterize
from wmkit.render.scenes import Scene, SceneError, TrainingImages, load_scene_files, nearest_training_views

__all__ = [
    "DemoRender",
    "PathRenderer",
    "RenderConfig",
    "Refine",
    "load_task_scene",
    "path_seed",
    "planner_rasterize",
    "render_demo",
    "render_manifest",
    "render_task",
    "scene_tasks",
]

_FLOAT16_MAX = 65000.0  # depth beyond float16's range is marked invalid, not stored as inf
_MIN_VALID_ALPHA = 0.5  # expected depth of a mostly transparent pixel is a blend of surfaces: not stored
_RUNTIME_FIELDS = ("prefix", "max_count", "max_bytes", "num_actors", "num_cpus_per_actor", "num_gpus_per_actor")


@dataclass(frozen=True)
class RenderConfig:
    """What a render run produces (hashed into every sample's provenance) and how it is spread."""

    path: PathConfig = PathConfig()  # frames, fps, size (width x height), fov, caps, checks
    paths_per_scene: int = 1
    seed: int = 0  # mixed into every path's seed: another value gives other paths
    rasterizer: RasterizerChoice = "auto"  # gsplat on CUDA when importable, else the CPU reference
    batch_size: int = 16  # views per rasterizer call
    depth_stride: int = 4  # depth.npz at size / stride (720p: 320 x 180)
    alpha_check: bool | None = None  # planner's rendered-alpha check; None: on with gsplat, off on the CPU reference
    refiner: str | None = None  # DiFix3D-style refiner folder (render.refiner); None: off
    refiner_batch_size: int = 8
    # the refiner's reference view: "nearest" training image per frame (none for scenes without images), or "none"
    refiner_reference: Literal["nearest", "none"] = "nearest"
    crf: int = 18  # x264 quality
    preset: str = "veryfast"  # x264 speed preset: 961 frames at 720p must not dominate the run
    encode_threads: int = 8  # x264 threads; the bytes depend on it, so it is part of the config
    # runtime only (not hashed): shard limits and the Ray actor pool
    prefix: str = "render"
    max_count: int = 1000
    max_bytes: int = 1 << 30
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float | None = None  # None: 1 when the Ray cluster has GPUs, else 0

    def __post_init__(self) -> None:
        if self.paths_per_scene < 1 or self.batch_size < 1 or self.depth_stride < 1 or self.refiner_batch_size < 1:
            raise ValueError(
                f"RenderConfig: paths_per_scene ({self.paths_per_scene}), batch_size ({self.batch_size}), "
                f"depth_stride ({self.depth_stride}) and refiner_batch_size ({self.refiner_batch_size}) must be >= 1"
            )
        if self.path.width % (2 * self.depth_stride) or self.path.height % (2 * self.depth_stride):
            raise ValueError(
                f"RenderConfig: size {self.path.width}x{self.path.height} must be even (H.264) and a multiple "
                f"of depth_stride {self.depth_stride}"
            )
        if self.refiner_reference not in ("nearest", "none"):
            raise ValueError(
                f"RenderConfig: refiner_reference must be 'nearest' or 'none', got {self.refiner_reference!r}"
            )
        if self.num_actors < 1 or self.encode_threads < 1:
            raise ValueError(f"RenderConfig: num_actors ({self.num_actors}) and encode_threads "
                             f"({self.encode_threads}) must be >= 1")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The output-determining fields as JSON-ready values (runtime fields left out)."""
        return {k: v for k, v in asdict(self).items() if k not in _RUNTIME_FIELDS}

    def config_hash(self) -> str:
        """sha256 of :meth:`to_dict` as sorted JSON."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


class Refine(Protocol):
    """What the pipeline needs of a refiner (``wmkit.render.refiner.Refiner`` is one)."""

    def refine(
        self, frames: np.ndarray, reference: np.ndarray | None = None, reference_index: np.ndarray | None = None
    ) -> np.ndarray:
        """uint8 (T, H, W, 3) frames in, refined frames of the same shape and dtype out; frame t's
        reference view, when given, is ``reference[reference_index[t]]`` (U, H, W, 3)."""

    def provenance(self) -> dict:
        """JSON-ready record of what refined the frames (folder, weight sha256s, ...)."""


def path_seed(clip_id: str, path_index: int, base_seed: int = 0) -> int:
    """The planner seed of path ``path_index`` of scene ``clip_id``: 31 bits of sha256, stable across runs and machines."""
    digest = hashlib.sha256(f"{base_seed}/{clip_id}/{path_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def scene_tasks(manifest: pd.DataFrame, config: RenderConfig) -> list[dict[str, Any]]:
    """One task row per (scene, path): the manifest row plus ``key``, ``path_index`` and ``seed``.

    Raises:
        ValueError: naming the rows whose source is not ``dl3dv_gs`` (not splat scenes).
    """
    wrong = manifest.loc[manifest["source"] != "dl3dv_gs", "clip_id"].tolist()
    if wrong:
        raise ValueError(f"render: rows {wrong[:5]}{' ...' if len(wrong) > 5 else ''} are not dl3dv_gs splat scenes")
    return [
        dict(row, key=f"{row['clip_id']}_p{index:03d}", path_index=index,
             seed=path_seed(row["clip_id"], index, config.seed))  # fmt: skip
        for row in manifest.to_dict("records")
        for index in range(config.paths_per_scene)
    ]


def load_task_scene(task: Mapping[str, Any]) -> Scene:
    """The task's scene from its PLY (``media_uri``) and transforms.json (``cameras_uri``), named by ``clip_id``."""
    name = str(task["clip_id"])
    if not task["cameras_uri"]:
        raise SceneError(f"{name}: no transforms.json (cameras_uri is empty); the planner needs the training cameras")
    return load_scene_files(task["media_uri"], task["cameras_uri"], name=name)


def _path_stats(path: PlannedPath, frames: Frames, scene: Scene) -> dict[str, Any]:
    """Length, speeds, turn rates, clearance, coverage and rendered alpha of a path (units: the scene's)."""
    from scipy.spatial.transform import Rotation

    cams = path.cameras
    fps = 1.0 / float(np.diff(cams.t).mean())
    step = np.linalg.norm(np.diff(cams.c2w[:, :3, 3], axis=0), axis=1)
    R = Rotation.from_matrix(cams.c2w[:, :3, :3])
    turn = np.degrees((R[:-1].inv() * R[1:]).magnitude()) * fps
    return {
        "units": "m" if scene.metric else "scene",
        "length": float(step.sum()),
        "mean_speed": float(step.mean() * fps),
        "max_speed": float(step.max() * fps),
        "max_turn_rate_deg": float(turn.max()),
        "min_clearance": float(path.clearance.min()),
        "min_coverage": float(path.coverage.min()),
        "mean_alpha": float(frames.alpha.mean()),
        "min_frame_alpha": float(frames.alpha.mean(axis=(1, 2)).min()),
    }


def _depth_member(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """Pooled expected depth -> (float16 depth, 0 where invalid; valid bool)."""
    valid = np.isfinite(frames.depth) & (frames.depth > 0) & (frames.depth < _FLOAT16_MAX)
    valid &= frames.alpha >= _MIN_VALID_ALPHA
    return np.where(valid, frames.depth, 0.0).astype(np.float16), valid


def _flicker(frames: Frames, refined: np.ndarray, path: PlannedPath, device: str) -> dict[str, float]:
    """Warped-frame flicker before and after the refiner, at the depth's resolution (frames area-pooled to it)."""
    from wmkit.render.flicker import flicker_before_after

    s = frames.depth_stride

    def pooled(rgb: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(rgb, device=device).permute(0, 3, 1, 2).float()
        return F.avg_pool2d(x, s).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    H, W = frames.rgb.shape[1:3]
    K = scale_intrinsics(path.cameras.K, (W, H), (W // s, H // s))
    return flicker_before_after(pooled(frames.rgb), pooled(refined), frames.depth, path.cameras.c2w, K,
                                frames.alpha, device=device)  # fmt: skip


def _reference_views(
    scene: Scene, path: PlannedPath, config: RenderConfig, images: TrainingImages
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """The refiner's reference views (U distinct images, each frame's index into them) and the json record:
    ``frames`` = the training camera index per frame, ``files`` = those indices' image files."""
    if config.refiner_reference == "none":
        return None, None, {"mode": "none", "reason": "refiner_reference is 'none'"}
    if not scene.images:
        return None, None, {"mode": "none", "reason": "the scene has no training images on disk"}
    nearest = nearest_training_views(scene.cameras, path.cameras.c2w, scene.frame.scale)
    used, per_frame = np.unique(nearest, return_inverse=True)
    record = {"mode": "nearest", "frames": nearest.tolist(), "files": {str(i): str(scene.images[i]) for i in used}}
    return images.stack(used), per_frame, record


def planner_rasterize(config: RenderConfig, rasterizer: Rasterizer) -> Rasterize | None:
    """The rasterizer for the planner's alpha check, or None when ``config.alpha_check`` (resolved) is off."""
    on = config.alpha_check if config.alpha_check is not None else rasterizer.name != "reference"
    return host_rasterize(rasterizer) if on else None


def render_task(
    task: Mapping[str, Any],
    config: RenderConfig,
    rasterizer: Rasterizer,
    refiner: Refine | None = None,
    scene: tuple[Scene, SceneTensors] | None = None,
    images: TrainingImages | None = None,
) -> Sample:
    """Render one (scene, path) task into a validated :class:`Sample`, or raise :class:`ClipError` naming the stage.

    Args:
        task: a row of :func:`scene_tasks`.
        config: the run's config.
        rasterizer: from :func:`~wmkit.render.frames.pick_rasterizer`.
        refiner: applied to the rendered frames when given.
        scene: the task's scene and its device tensors when already loaded (else loaded here).
        images: the scene's training images at the render size when a worker keeps them across
            paths (else read here); used for the refiner's reference views.
    """
    key, cfg = str(task["key"]), config.path
    size = (cfg.width, cfg.height)
    with clip_stage(key, "scene"):
        if scene is None:
            loaded = load_task_scene(task)
            scene = (loaded, SceneTensors.from_splats(loaded.splats, rasterizer.device))
    splat_scene, tensors = scene
    with clip_stage(key, "path"):
        path = plan_path(splat_scene, int(task["seed"]), cfg, planner_rasterize(config, rasterizer))
    with clip_stage(key, "render"):
        frames = render_frames(tensors, path.cameras, size, rasterizer=rasterizer, batch_size=config.batch_size,
                               depth_stride=config.depth_stride)  # fmt: skip
    rgb, quality, reference = frames.rgb, {}, "off"
    if refiner is not None:
        with clip_stage(key, "reference"):
            images = images if images is not None else TrainingImages(splat_scene, size)
            views, index, reference = _reference_views(splat_scene, path, config, images)
        with clip_stage(key, "refine"):
            rgb = refiner.refine(rgb, views, index)
            quality["flicker"] = _flicker(frames, rgb, path, rasterizer.device)
    with clip_stage(key, "encode"):
        from wmkit.datasets.video import encode_mp4

        mp4 = encode_mp4(rgb, cfg.fps, config.crf, config.preset, threads=config.encode_threads, name=key)
    with clip_stage(key, "sample"):
        depth, valid = _depth_member(frames)
        meta = _meta(task, config, path, frames, splat_scene, rasterizer, refiner, reference, quality)
        return Sample(key, mp4, path.cameras, meta, depth=depth, depth_valid=valid).validate()


def _meta(task: Mapping[str, Any], config: RenderConfig, path: PlannedPath, frames: Frames, scene: Scene,
          rasterizer: Rasterizer, refiner: Refine | None, reference: dict[str, Any] | str,
          quality: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The sample's json: manifest fields, the render record (scene, seed, attempt, refiner and its reference
    views, path stats), provenance."""
    cfg = config.path
    refined = refiner.provenance() if refiner is not None else "off"
    return {
        "source": str(task["source"]),
        "source_id": str(task["source_id"]),
        "caption": str(task["caption"]),
        "license": str(task["license"]),
        "fps": float(cfg.fps),
        "size": [cfg.width, cfg.height],
        "num_frames": len(path.cameras),
        "media_uri": str(task["media_uri"]),
        "cameras_uri": str(task["cameras_uri"]),
        "extra": json.loads(task["extra"]),
        "render": {
            "scene": str(task["clip_id"]),
            "path_index": int(task["path_index"]),
            "seed": int(task["seed"]),
            "attempt": path.attempt,
            "rejected_attempts": list(path.failures),
            "num_gaussians": len(scene.splats),
            "rasterizer": rasterizer.name,
            "refiner": refined,
            "reference": reference,
            "depth_size": [cfg.width // frames.depth_stride, cfg.height // frames.depth_stride],
            "depth_units": "m" if scene.metric else "scene",
            "path_stats": _path_stats(path, frames, scene),
        },
        "provenance": {
            "wmkit_version": __version__,
            "stage": "render",
            "backends": {"rasterizer": rasterizer.name, "encode": "libx264",
                         "refiner": "off" if refiner is None else "difix3d"},  # fmt: skip
            "weights": {} if refiner is None else refined.get("weights", {}),
            "config": config.to_dict(),
            "config_hash": config.config_hash(),
        },
        "quality": quality,
    }


class PathRenderer(ItemWorker):
    """Rasterizer and refiner set up once; renders tasks one by one, keeping the last scene loaded with its
    training images read so far (one per Ray actor)."""

    def __init__(self, config: RenderConfig) -> None:
        self.config = config
        self.setup_error = ""
        self._scene: tuple[str, tuple[Scene, SceneTensors], TrainingImages] | None = None
        self.refiner: Refine | None = None
        try:
            self.rasterizer = pick_rasterizer(config.rasterizer)
            if config.refiner is not None:
                from wmkit.render.refiner import load_refiner

                self.refiner = load_refiner(config.refiner, device=self.rasterizer.device,
                                            batch_size=config.refiner_batch_size)  # fmt: skip
        except Exception as err:  # a missing refiner folder or no gsplat fails every task with its reason, not the run
            self.setup_error = f"{type(err).__name__}: {err}"

    def _scene_of(self, task: Mapping[str, Any]) -> tuple[tuple[Scene, SceneTensors], TrainingImages]:
        """The task's scene and its training images, loaded (and uploaded) once for consecutive paths of one scene."""
        uri = str(task["media_uri"])
        if self._scene is None or self._scene[0] != uri:
            self._scene = None  # free the previous scene's device memory before loading the next
            with clip_stage(str(task["key"]), "scene"):
                scene = load_task_scene(task)
                tensors = SceneTensors.from_splats(scene.splats, self.rasterizer.device)
                images = TrainingImages(scene, (self.config.path.width, self.config.path.height))
                self._scene = (uri, (scene, tensors), images)
        return self._scene[1], self._scene[2]

    def process(self, row: Mapping[str, Any]) -> ItemResult:
        """Render one task; every failure comes back as a result naming the stage."""
        key = str(row["key"])
        if self.setup_error:
            return ItemResult(key, None, "setup", self.setup_error)
        try:
            scene, images = self._scene_of(row)
            sample = render_task(row, self.config, self.rasterizer, self.refiner, scene, images)
            return ItemResult(key, sample.to_members())
        except ClipError as err:
            return ItemResult(key, None, err.stage, err.reason)


def _ray_gpus(config: RenderConfig) -> float:
    """GPUs per actor: the config's, else 1 when the Ray cluster has GPUs."""
    import ray

    if config.num_gpus_per_actor is not None:
        return config.num_gpus_per_actor
    if not ray.is_initialized():
        ray.init()
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def render_manifest(
    manifest: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike,
    config: RenderConfig = RenderConfig(),
    *,
    runner: Literal["ray", "local"] = "ray",
    retry_failed: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Render ``paths_per_scene`` paths through each scene of the manifest into shards; return the status table.

    Args:
        manifest: a manifest frame or ``manifest.parquet`` path of ``dl3dv_gs`` rows.
        out_dir: shard directory; ``index.parquet`` and ``status.parquet`` live there.
        config: path, size, rasterizer, refiner, encoder, shard limits and actors.
        runner: ``"ray"`` (Ray Data actor pool) or ``"local"`` (in-process, same stages).
        retry_failed: also redo tasks that failed in an earlier run.
        progress: show a progress bar.

    Returns the full status table (one row per task key ever rendered into ``out_dir``).
    """
    if runner not in ("ray", "local"):
        raise ValueError(f"render_manifest: runner must be 'ray' or 'local', got {runner!r}")
    df = read_manifest(os.fspath(manifest)) if isinstance(manifest, str | os.PathLike) else manifest
    validate(df)
    tasks = scene_tasks(df, config)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    table = StatusTable(out_dir)
    skip = table.resume(retry_failed)
    todo = [task for task in tasks if task["key"] not in skip]

    def results(rows: list[dict[str, Any]]) -> Iterator[ItemResult]:
        if runner == "local":
            return local_results(rows, lambda: PathRenderer(config))
        resources = RayResources(config.num_actors, config.num_cpus_per_actor, _ray_gpus(config))
        return ray_results(rows, PathRenderer, (config,), resources, progress)

    return run_to_shards(
        out_dir, todo, results, table, prefix=config.prefix, max_count=config.max_count,
        max_bytes=config.max_bytes, desc=f"render ({runner})", unit="path", progress=progress,
    )  # fmt: skip


@dataclass(frozen=True)
class DemoRender:
    """What :func:`render_demo` made: the scene folder, its manifest, the shard directory and the status table."""

    scene_dir: Path
    manifest: pd.DataFrame
    shard_dir: Path
    status: pd.DataFrame = field(repr=False)


def render_demo(
    out_dir: str | os.PathLike,
    *,
    num_frames: int = 33,
    size: tuple[int, int] = (160, 96),
    fps: float = 16.0,
    seed: int = 0,
    num_gaussians: int = 2000,
    progress: bool = False,
) -> DemoRender:
    """Render one short path through a generated room on CPU into shards, the way a DL3DV scene goes.

    Writes the room (``make_room_scene(seed)``) as a DL3DV scene folder
    ``out_dir/scenes/room-{seed}``, catalogues it with the ``dl3dv_gs`` reader
    (``out_dir/manifest.parquet``) and renders ``num_frames`` frames at ``size``
    with the reference rasterizer, in-process, into ``out_dir/shards``. The
    reference renders about 1 frame/s at 160 x 96 on a 2-core CPU (bench/render.py --smoke).
    """
    from wmkit.manifests.readers.dl3dv_gs import read_dl3dv_gs
    from wmkit.manifests.schema import write_manifest
    from wmkit.render.scenes import write_scene
    from wmkit.render.synthetic_room import make_room_scene

    out = Path(out_dir)
    scene, _ = make_room_scene(seed=seed, num_gaussians=num_gaussians)
    scene_dir = out / "scenes" / scene.name
    write_scene(scene, scene_dir)
    manifest = read_dl3dv_gs(out / "scenes")
    write_manifest(manifest, str(out / "manifest.parquet"))
    path = PathConfig(num_frames=num_frames, fps=fps, width=size[0], height=size[1])
    config = RenderConfig(path=path, rasterizer="reference", depth_stride=2, seed=seed)
    status = render_manifest(manifest, out / "shards", config, runner="local", progress=progress)
    return DemoRender(scene_dir, manifest, out / "shards", status)
