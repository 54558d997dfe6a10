"""Synthetic clips with exact ground truth for the annotation engine (issue 5, DESIGN §4).

A scene is built in code from triangle meshes and ray-cast on the CPU with
open3d's ``RaycastingScene``; cameras are known exactly, so every stage of the
annotation engine (backends, fusion, bundle adjustment) and its benchmark can
be scored against truth.

Scene (world frame, metres, OpenCV-style: +y is down, the floor is at y = +Y)::

          -z wall                         top view (x right, z up the page)
        +-----------+                     +---------------------------+
        |  o   []   |                     |  []      ___       o      |
        | ( )    |  |   o  sphere         |      .-'     '-.     []   |
        |   [] ( )  |   [] box            |     (  o  ||  [] )  <- camera loop
        |  ||    o  |   || pillar         |      '-.___.-'            |
        +-----------+                     +---------------------------+
          +z wall

- the room: an axis-aligned box [-X, X] x [-Y, Y] x [-Z, Z], seen from inside;
- boxes on the floor, floor-to-ceiling pillars and spheres, placed at random
  away from the camera loop (so no camera is ever inside or against a mesh);
- every surface has its own procedural texture in world coordinates: two
  colours mixed by smooth random noise (two octaves) and a checker, shaded by
  a fixed light (view-independent, so a point looks the same from every frame).
  Checker corners and noise blobs give SIFT features; colour is supersampled
  2x2 per pixel so the texture does not alias into flicker.

Camera path: an ellipse around the room centre (bounded for any clip length,
so 3,600-frame clips stay inside the room), walked at 0.3-0.7 m/s, looking
along the direction of travel with a slow yaw sway, a little pitch and roll
and a vertical bob. ``zoom`` changes the focal length over the clip
(``f(t) = f0 (1 + zoom * ease(t))`` with a cosine ease from 0 to 1), so
per-frame intrinsics are exercised.

Depth is the exact z-depth of the mesh surface at each pixel centre: the
rays are cast with directions ``R K^-1 [u, v, 1]`` (unit camera z), so the
hit distance *is* the z-depth. Pixel (i, j) has its centre at (i + 0.5, j + 0.5)
in K's pixel coordinates, as in :mod:`wmkit.datasets.synthetic`.

On disk (the layout the ``perturbed`` backends read)::

    root/videos/<clip_id>.mp4
    root/gt/<clip_id>/cameras.npz   wmkit Cameras, metric
    root/gt/<clip_id>/depth.npz     depth (T, H, W) float32 metres, valid (T, H, W) bool

Example::

    clip = render_scene_clip(seed=0, num_frames=48, zoom=0.4)
    manifest = write_synthetic_source(Path("/tmp/synth"), num_clips=20)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import pandas as pd
from scipy.ndimage import map_coordinates

from wmkit.datasets.cameras import Cameras
from wmkit.datasets.synthetic import SyntheticClip, write_ground_truth
from wmkit.manifests.schema import extra_json, to_manifest

__all__ = ["render_scene_clip", "write_synthetic_source", "SYNTHETIC_LICENSE"]

SYNTHETIC_LICENSE = "CC0-1.0"  # rendered here from code; no third-party content
DEFAULT_ZOOM = 0.4  # relative focal change of a zooming clip in write_synthetic_source
_BASE_FOCAL_PER_WIDTH = 0.9  # f0 = 0.9 W: a ~58 degree horizontal field of view
_NOISE_LATTICE = 16  # random lattice cells per noise period (noise repeats every 16 / freq metres)
_LIGHT_DIR = np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])  # from above (-y is up)
_CLEARANCE_M = 0.6  # free space between the camera loop and any object


@dataclass(frozen=True)
class _Texture:
    """Procedural texture of one surface: two colours mixed by noise, times a checker."""

    colour_a: np.ndarray  # (3,) RGB in [0, 255]
    colour_b: np.ndarray  # (3,) RGB in [0, 255]
    lattice: np.ndarray  # (L, L, L) random values in [0, 1], tiled periodically
    noise_freq: float  # lattice cells per metre
    checker_m: float  # checker cell size, metres
    offset: np.ndarray  # (3,) texture-space shift, so equal textures still differ


@dataclass(frozen=True)
class _Scene:
    """Meshes ready to ray-cast and one texture per mesh (indexed by open3d geometry id)."""

    raycaster: o3d.t.geometry.RaycastingScene
    textures: list[_Texture]


@dataclass(frozen=True)
class _Loop:
    """The elliptic camera loop around the room centre: radii along x and z, eye height y (metres)."""

    radius_x: float
    radius_z: float
    eye_y: float


def _random_texture(rng: np.random.Generator) -> _Texture:
    """A texture with its own colours, noise lattice, frequency and checker size."""
    hue = rng.uniform(0, 1) + np.array([0.0, rng.uniform(0.25, 0.75)])  # two clearly different hues
    # Saturated colours around the hue circle; the second one darker, so the grey image SIFT sees has contrast.
    phase = 2 * np.pi * (hue[:, None] + np.array([0.0, 1 / 3, 2 / 3])[None, :])
    colours = (128 + 110 * np.cos(phase) * rng.uniform(0.6, 1.0, size=(2, 1))) * np.array([[1.0], [0.45]])
    return _Texture(
        colour_a=colours[0],
        colour_b=colours[1],
        lattice=rng.uniform(0, 1, size=(_NOISE_LATTICE,) * 3),
        noise_freq=rng.uniform(2.5, 5.0),
        checker_m=rng.uniform(0.4, 0.9),
        offset=rng.uniform(0, 100, size=3),
    )


def _shade(texture: _Texture, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Colour of ``points`` (N, 3) world metres with unit ``normals`` (N, 3) -> RGB float (N, 3)."""
    p = points + texture.offset
    coords = (p * texture.noise_freq).T  # lattice units, (3, N)
    noise = 0.6 * map_coordinates(texture.lattice, coords, order=1, mode="grid-wrap")
    noise += 0.4 * map_coordinates(texture.lattice, 2.3 * coords + 5.0, order=1, mode="grid-wrap")
    mix = np.clip((noise - 0.5) * 3.0 + 0.5, 0.0, 1.0)[:, None]  # contrast: blobs with clear edges
    checker = np.floor(p / texture.checker_m).sum(axis=1) % 2
    colour = texture.colour_a * (1 - mix) + texture.colour_b * mix
    # |n.l|: the normals of walls may face outwards. einsum, not @: BLAS threads are slower at this size.
    light = 0.6 + 0.4 * np.abs(np.einsum("nk,k->n", normals, _LIGHT_DIR))
    return colour * ((0.85 + 0.15 * checker) * light)[:, None]


def _add(raycaster: o3d.t.geometry.RaycastingScene, mesh: o3d.geometry.TriangleMesh) -> None:
    raycaster.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))


def _box(size: np.ndarray, centre: np.ndarray, yaw: float = 0.0) -> o3d.geometry.TriangleMesh:
    """Box of ``size`` (3,) metres centred at ``centre`` (3,), turned ``yaw`` radians about the y axis."""
    mesh = o3d.geometry.TriangleMesh.create_box(*size)
    mesh.translate(-np.asarray(size) / 2.0)
    mesh.rotate(o3d.geometry.get_rotation_matrix_from_xyz([0.0, yaw, 0.0]), center=np.zeros(3))
    return mesh.translate(centre)


def _room_walls(room_half: np.ndarray) -> list[o3d.geometry.TriangleMesh]:
    """The six walls of the box [-X, X] x [-Y, Y] x [-Z, Z] as separate quads, so each gets its own texture."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64) * room_half
    walls = []
    for axis in range(3):
        for side in (-1, 1):
            on_wall = np.flatnonzero(np.sign(corners[:, axis]) == side)  # 4 corners, ordered around the quad below
            quad = o3d.geometry.TriangleMesh()
            quad.vertices = o3d.utility.Vector3dVector(corners[on_wall])
            quad.triangles = o3d.utility.Vector3iVector(np.array([[0, 1, 3], [0, 3, 2]]))
            quad.compute_triangle_normals()
            walls.append(quad)
    return walls


def _loop_distance(loop: _Loop, xz: np.ndarray) -> float:
    """Distance (m) in the floor plane from ``xz`` (2,) to the camera loop, sampled finely."""
    angle = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    ring = np.stack([loop.radius_x * np.cos(angle), loop.radius_z * np.sin(angle)], axis=1)
    return float(np.linalg.norm(ring - xz, axis=1).min())


def _build_scene(rng: np.random.Generator, loop: _Loop, room_half: np.ndarray) -> _Scene:
    """The room (half extents ``room_half`` (3,) metres) with 3-5 boxes, 2-3 pillars and 2-4 spheres.

    Objects are rejection-sampled so that each stays ``_CLEARANCE_M`` away from the camera loop.
    """
    raycaster = o3d.t.geometry.RaycastingScene()
    textures = []
    for wall in _room_walls(room_half):
        _add(raycaster, wall)
        textures.append(_random_texture(rng))
    X, Y, Z = room_half
    counts = {"box": rng.integers(3, 6), "pillar": rng.integers(2, 4), "sphere": rng.integers(2, 5)}
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    for kind in kinds:
        for _ in range(200):  # rejection sampling; the room always has space for these sizes
            if kind == "box":
                size = rng.uniform([0.3, 0.3, 0.3], [1.0, 1.2, 1.0])
                reach = 0.5 * np.hypot(size[0], size[2])
            elif kind == "pillar":
                radius = rng.uniform(0.12, 0.3)
                reach = radius
            else:
                radius = rng.uniform(0.2, 0.5)
                reach = radius
            xz = rng.uniform([-X + reach, -Z + reach], [X - reach, Z - reach])
            if _loop_distance(loop, xz) > reach + _CLEARANCE_M:
                break
        else:
            raise RuntimeError(f"synthetic scene: no free place for a {kind} after 200 tries")
        if kind == "box":
            mesh = _box(size, np.array([xz[0], Y - size[1] / 2, xz[1]]), yaw=rng.uniform(0, np.pi))
        elif kind == "pillar":
            mesh = o3d.geometry.TriangleMesh.create_cylinder(radius=radius, height=2 * Y, resolution=24)
            mesh.rotate(o3d.geometry.get_rotation_matrix_from_xyz([np.pi / 2, 0.0, 0.0]), center=np.zeros(3))
            mesh.translate([xz[0], 0.0, xz[1]])
        else:
            mesh = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=20)
            mesh.translate([xz[0], rng.uniform(-0.5 * Y, Y - radius), xz[1]])
        _add(raycaster, mesh)
        textures.append(_random_texture(rng))
    return _Scene(raycaster=raycaster, textures=textures)


def _rotation_yaw_pitch_roll(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Camera-to-world rotations (T, 3, 3): yaw about world y, then pitch about camera x, roll about camera z."""
    c, s = np.cos, np.sin
    T = len(yaw)
    ry, rx, rz = np.zeros((T, 3, 3)), np.zeros((T, 3, 3)), np.zeros((T, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = c(yaw), s(yaw), 1, -s(yaw), c(yaw)
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = 1, c(pitch), -s(pitch), s(pitch), c(pitch)
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c(roll), -s(roll), s(roll), c(roll), 1
    return ry @ rx @ rz


def _camera_path(loop: _Loop, num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Walk the loop with sway, pitch, roll and bob -> c2w (T, 4, 4), OpenCV axes."""
    t = np.arange(num_frames) / fps
    speed = rng.uniform(0.3, 0.7)  # m/s along the loop
    direction = rng.choice([-1.0, 1.0])
    mean_radius = 0.5 * (loop.radius_x + loop.radius_z)
    angle = rng.uniform(0, 2 * np.pi) + direction * speed * t / mean_radius
    x, z = loop.radius_x * np.cos(angle), loop.radius_z * np.sin(angle)
    # Travel direction = derivative of the ellipse point in the angle, times the walking direction.
    dx, dz = -direction * loop.radius_x * np.sin(angle), direction * loop.radius_z * np.cos(angle)
    heading = np.arctan2(dx, dz)  # yaw 0 looks along +z (camera z = world z)
    sway_amp, sway_hz, sway_phase = rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.25), rng.uniform(0, 2 * np.pi)
    yaw = heading + sway_amp * np.sin(2 * np.pi * sway_hz * t + sway_phase)
    pitch = rng.uniform(-0.1, 0.1) + 0.08 * np.sin(2 * np.pi * 0.15 * t + rng.uniform(0, 2 * np.pi))
    roll = 0.03 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
    y = loop.eye_y + 0.04 * np.sin(2 * np.pi * 1.5 * t)  # walking bob, 1.5 steps per second
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    c2w[:, :3, :3] = _rotation_yaw_pitch_roll(yaw, pitch, roll)
    c2w[:, :3, 3] = np.stack([x, y, z], axis=1)
    return c2w


def _intrinsics(num_frames: int, width: int, height: int, zoom: float) -> np.ndarray:
    """K (T, 3, 3) pixels: focal ``0.9 W (1 + zoom * ease)``, principal point at the image centre."""
    ease = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, num_frames))
    focal = _BASE_FOCAL_PER_WIDTH * width * (1.0 + zoom * ease)
    K = np.tile(np.eye(3), (num_frames, 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, 0, 2], K[:, 1, 2] = width / 2.0, height / 2.0
    return K


def _cast(scene: _Scene, c2w: np.ndarray, K: np.ndarray, uv: np.ndarray) -> dict[str, np.ndarray]:
    """Cast rays through pixel coordinates ``uv`` (N, 2) of one camera; return open3d's hit arrays and points."""
    # World ray directions R K^-1 [u, v, 1] with camera z = 1, so t_hit is z-depth. Written as a sum of
    # columns: a (N, 3) @ (3, 3) matmul goes through multi-threaded BLAS and is ~5x slower here.
    M = c2w[:3, :3] @ np.linalg.inv(K)
    directions = uv[:, :1] * M[:, 0] + uv[:, 1:] * M[:, 1] + M[:, 2]
    rays = np.concatenate([np.broadcast_to(c2w[:3, 3], directions.shape), directions], axis=1)
    hits = scene.raycaster.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    out = {key: value.numpy() for key, value in hits.items()}
    out["points"] = c2w[:3, 3] + out["t_hit"][:, None].astype(np.float64) * directions
    return out


def _pixel_samples(width: int, height: int) -> np.ndarray:
    """Sample positions (W*H*5, 2): the pixel centres (row-major), then 2x2 sub-pixel samples of each pixel."""
    cu, cv = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    centres = np.stack([cu.ravel(), cv.ravel()], axis=1)
    offsets = np.array([[-0.25, -0.25], [0.25, -0.25], [-0.25, 0.25], [0.25, 0.25]])
    return np.concatenate([centres, (centres[:, None, :] + offsets[None]).reshape(-1, 2)])


def _render_frame(
    scene: _Scene, c2w: np.ndarray, K: np.ndarray, samples: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """One frame: RGB uint8 (H, W, 3) averaged over 2x2 sub-pixel samples, z-depth float32 (H, W) at pixel centres.

    ``samples`` comes from :func:`_pixel_samples`; depth is inf where a ray misses.
    """
    hits = _cast(scene, c2w, K, samples)
    num_pixels = width * height
    sub = slice(num_pixels, None)
    rgb = np.zeros((len(samples) - num_pixels, 3))
    geometry = hits["geometry_ids"][sub]
    for gid, texture in enumerate(scene.textures):
        on = geometry == gid
        rgb[on] = _shade(texture, hits["points"][sub][on], hits["primitive_normals"][sub][on].astype(np.float64))
    rgb = rgb.reshape(height, width, 4, 3).mean(axis=2)
    depth = hits["t_hit"][:num_pixels].reshape(height, width)
    return np.clip(rgb, 0, 255).round().astype(np.uint8), depth.astype(np.float32)


def render_scene_clip(
    seed: int, num_frames: int = 48, width: int = 160, height: int = 96, fps: float = 16.0, zoom: float = 0.0
) -> SyntheticClip:
    """Render one clip of a random textured scene; the same ``seed`` gives the same clip.

    ``zoom`` is the relative focal change from first to last frame (0.4: the
    focal length grows by 40 %; negative zooms out, above -1). Returns frames
    uint8 (T, H, W, 3), metric :class:`Cameras` with one K per frame (pixels)
    and z-depth float32 (T, H, W) metres (the room is closed, so every pixel hits).
    """
    if num_frames < 1 or width < 2 or height < 2 or not fps > 0 or not zoom > -1.0:
        raise ValueError(
            f"render_scene_clip(seed={seed}): bad size or zoom: {num_frames} frames {width}x{height} "
            f"@ {fps} fps, zoom {zoom}"
        )
    rng = np.random.default_rng(seed)
    room_half = rng.uniform([3.0, 1.3, 4.5], [4.5, 1.7, 6.5])
    loop = _Loop(
        radius_x=0.5 * room_half[0], radius_z=0.5 * room_half[2], eye_y=rng.uniform(-0.4, 0.2)
    )
    scene = _build_scene(rng, loop, room_half)
    c2w = _camera_path(loop, num_frames, fps, rng)
    K = _intrinsics(num_frames, width, height, zoom)
    samples = _pixel_samples(width, height)
    rendered = [_render_frame(scene, c2w[i], K[i], samples, width, height) for i in range(num_frames)]
    index = np.arange(num_frames)
    cameras = Cameras(c2w=c2w, K=K, t=index / fps, frame_index=index, metric=True, scale_confidence=1.0)
    return SyntheticClip(
        frames=np.stack([frame for frame, _ in rendered]),
        cameras=cameras.validate(f"synthetic scene seed={seed}"),
        depth=np.stack([depth for _, depth in rendered]),
    )


def write_synthetic_source(
    root: Path,
    num_clips: int,
    *,
    num_frames: int = 48,
    width: int = 160,
    height: int = 96,
    fps: float = 16.0,
    zoom_every: int = 2,
    seed: int = 0,
    zoom: float = DEFAULT_ZOOM,
) -> pd.DataFrame:
    """Render ``num_clips`` clips under ``root`` and return their manifest (source ``local``).

    Clip ``i`` uses scene seed ``seed + i`` and is named ``synth-<seed+i>``;
    every ``zoom_every``-th clip (i = zoom_every-1, 2*zoom_every-1, ...; none
    when ``zoom_every`` <= 0) zooms by ``zoom``. Writes ``root/videos/<clip_id>.mp4``
    and ``root/gt/<clip_id>/{cameras,depth}.npz``. The manifest leaves
    ``cameras_uri`` empty, so the annotation pipeline never sees ground truth;
    ``extra`` carries ``gt_dir``, ``zoom`` and ``seed`` for the evaluation.
    """
    from wmkit.datasets.video import write_mp4

    if num_clips < 1:
        raise ValueError(f"write_synthetic_source({root}): num_clips must be >= 1, got {num_clips}")
    root = Path(root).resolve()
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_clips):
        clip_seed = seed + i
        clip_id = f"synth-{clip_seed:05d}"
        clip_zoom = zoom if zoom_every > 0 and (i + 1) % zoom_every == 0 else 0.0
        clip = render_scene_clip(clip_seed, num_frames, width, height, fps, zoom=clip_zoom)
        video = root / "videos" / f"{clip_id}.mp4"
        gt_dir = root / "gt" / clip_id
        write_mp4(clip.frames, video, fps=fps)
        write_ground_truth(clip, gt_dir)
        rows.append(
            {
                "clip_id": clip_id,
                "source": "local",
                "source_id": f"synthetic/{clip_id}",
                "media_uri": str(video),
                "start_s": 0.0,
                "end_s": num_frames / fps,
                "fps": fps,
                "width": width,
                "height": height,
                "num_frames": num_frames,
                "caption": "a walk around a room with boxes, pillars and spheres",
                "license": SYNTHETIC_LICENSE,
                "extra": extra_json({"gt_dir": str(gt_dir), "zoom": clip_zoom, "seed": clip_seed}),
            }
        )
    return to_manifest(rows)
