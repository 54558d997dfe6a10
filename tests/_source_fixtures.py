"""Tiny source catalogues in each source's real on-disk layout, for reader, camera and ingest tests.

Each ``write_<source>(root, ...) -> Path`` writes a catalogue under ``root``
exactly where ``wmkit.manifests.readers.<source>`` expects it (see each
reader's module docstring) and returns ``root``. Videos are 64x48 H.264 mp4s
of :data:`FRAMES` frames at :data:`FPS`, encoded with PyAV; frame folders hold
64x48 PNGs. Camera files are written with the ``to_*`` converters of
``wmkit.datasets.cameras`` from :func:`truth_cameras`, so a test can compare
what it reads back with ``truth_cameras(source_id, ...)`` where ``source_id``
is the manifest row's ``source_id``.

Example::

    root = write_spatialvid(tmp_path / "svid")
    df = build_manifest("spatialvid", root)
    cams = load_source_cameras(df.iloc[0])
    np.testing.assert_allclose(cams.c2w, truth_cameras(df.source_id[0]).c2w, atol=1e-4)
"""

from __future__ import annotations

import csv
import json
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from wmkit.datasets.cameras import Cameras, to_nerfstudio, to_omniworld, to_sekai_game, to_spatialvid

__all__ = [
    "FPS",
    "FRAMES",
    "HEIGHT",
    "WIDTH",
    "set_csv_cell",
    "truth_cameras",
    "write_dl3dv",
    "write_dl3dv_gs",
    "write_frames",
    "write_local",
    "write_miradata",
    "write_omniworld",
    "write_sekai_game",
    "write_sekai_walk",
    "write_spatialvid",
    "write_video",
]

WIDTH, HEIGHT, FPS, FRAMES = 64, 48, 24.0, 13
#: SpatialVID annotates every int(fps/5) frames; with 13 frames a stride of 3 ends on the last frame.
SPATIALVID_STRIDE = 3
#: DL3DV transforms.json describe the full-resolution capture; the fixture's frames are images_4.
DL3DV_DOWNSCALE = 4
OMNIWORLD_METRIC_SCALE = 2.0
#: nerfstudio colmap_to_json's default applied_transform (swap world y/z, negate the new z).
NERFSTUDIO_APPLIED = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]
SEKAI_BIG_CAPTION_BYTES = 210_000


def truth_cameras(
    key: str, num_frames: int = FRAMES, width: int = WIDTH, height: int = HEIGHT, fps: float = FPS, metric: bool = False
) -> Cameras:
    """Ground-truth cameras for fixture item ``key`` (deterministic in ``key``).

    Constant angular velocity about a fixed axis and a linear camera path, so
    slerp/linear interpolation between sparse keys reproduces every frame
    exactly; one constant K with ``fx == fy`` (OmniWorld stores one focal).
    """
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.linspace(0.0, 0.3, num_frames)
    R = (Rotation.from_rotvec(rng.normal(size=3)) * Rotation.from_rotvec(angle[:, None] * axis)).as_matrix()
    start, velocity = rng.normal(size=3), rng.normal(scale=0.1, size=3)
    c2w = np.zeros((num_frames, 4, 4))
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = start + np.arange(num_frames)[:, None] * velocity
    c2w[:, 3, 3] = 1.0
    focal = width * rng.uniform(0.8, 1.2)
    cx, cy = width * rng.uniform(0.45, 0.55), height * rng.uniform(0.45, 0.55)
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    index = np.arange(num_frames)
    return Cameras(c2w=c2w, K=np.repeat(K[None], num_frames, 0), t=index / fps, frame_index=index, metric=metric)


def write_video(
    path: Path, num_frames: int = FRAMES, width: int = WIDTH, height: int = HEIGHT, fps: float = FPS
) -> Path:
    """Encode a moving-gradient H.264 video with PyAV (container from the suffix: .mp4, .mkv, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(_pattern(i, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_frames(
    folder: Path, num_frames: int, width: int = WIDTH, height: int = HEIGHT, name: str = "{:06d}.png"
) -> Path:
    """Write ``num_frames`` PNG frames named ``name.format(i)`` (i from 0) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(_pattern(i, width, height)).save(folder / name.format(i))
    return folder


def set_csv_cell(path: Path, row: int, column: str, value: str) -> None:
    """Overwrite one cell of a catalogue CSV (``row`` counts data rows from 0), keeping its header."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[row + 1][rows[0].index(column)] = value
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def write_spatialvid(root: Path, n_clips: int = 2, with_videos: bool = True) -> Path:
    """SpatialVID-HQ: metadata CSV (space-separated column names), videos, annotations; depth zip for clip 0.

    Source ids are ``"svid-clip-<i>"``; poses are stored every :data:`SPATIALVID_STRIDE` frames.
    """
    header = [
        "id", "group id", "video path", "annotation path", "num frames", "fps", "resolution",
        "aesthetic score", "luminance score", "motion score", "ocr score",
        "moveDist", "distLevel", "rotAngle", "trajTurns", "dynamicRatio", "motionTags",
        "sceneType", "brightness", "timeOfDay", "weather", "crowdDensity",
    ]  # fmt: skip
    rows = []
    for i in range(n_clips):
        clip = f"svid-clip-{i}"
        video = Path("videos/group_0001") / f"{clip}.mp4"
        annotation = root / "annotations/group_0001" / clip
        if with_videos:
            write_video(root / video)
        annotation.mkdir(parents=True, exist_ok=True)
        indexes = np.arange(0, FRAMES, SPATIALVID_STRIDE)
        poses, intrinsics = to_spatialvid(truth_cameras(clip), indexes, WIDTH, HEIGHT)
        np.save(annotation / "poses.npy", poses.astype(np.float32))
        np.save(annotation / "intrinsics.npy", intrinsics.astype(np.float32))
        (annotation / "indexes.txt").write_text("".join(f"{row} {frame}\n" for row, frame in enumerate(indexes)))
        caption = {"SceneSummary": f"summary {i}", "SceneDescription": f"a street, clip {i}", "CameraMotion": "pan"}
        (annotation / "caption.json").write_text(json.dumps(caption))
        rows.append([
            clip, "1", video.as_posix(), f"annotations/group_0001/{clip}", str(FRAMES), str(FPS), f"{WIDTH}x{HEIGHT}",
            "5.1", "120.5", "3.2", "0.01", "1.5", "2", "12.0", "0.5", "0.1", "pan right",
            "Urban;Street Scene", "Bright", "Daytime", "Sunny", "Moderate",
        ])  # fmt: skip
    depth = root / "depths/group_0001/svid-clip-0.zip"
    depth.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(depth, "w") as z:
        z.writestr("00000.png", b"")
    _write_csv(root / "data/train/SpatialVID_HQ_metadata.csv", header, rows)
    return root


def write_sekai_walk(root: Path, n_clips: int = 2, with_videos: bool = True) -> Path:
    """Sekai-Real walking-HQ: train/sekai-real-walking-hq.csv (clip 0's caption > 200 KB) and clips.

    Source ids are ``"sekai-real-walking-hq/<ytid>_<start>_<end>.mp4"``.
    """
    rows = []
    for i in range(n_clips):
        name = f"yt{i:09d}_{i * 100:07d}_{i * 100 + FRAMES:07d}"
        if with_videos:
            write_video(root / "sekai-real-walking-hq" / f"{name}.mp4")
        caption = ("A long walk through an old town. " * (SEKAI_BIG_CAPTION_BYTES // 33 + 1)) if i == 0 else "A walk."
        rows.append([f"{name}.mp4", f"{name}.npz", caption, "Kyoto, Japan", "street", "moderate", "sunny", "day"])
    _write_csv(root / "train/sekai-real-walking-hq.csv", _SEKAI_HEADER, rows)
    return root


def write_sekai_game(root: Path, n_clips: int = 2, with_videos: bool = True) -> Path:
    """Sekai-Game walking: train/sekai-game-walking.csv, clips and per-clip camera npz.

    Source ids are ``"sekai-game-walking/<name>.mp4"``; the npz holds per-frame
    c2w ``extrinsic`` (N, 4, 4) and one normalized ``intrinsic`` matrix (3, 3).
    """
    rows = []
    for i in range(n_clips):
        name = f"game{i:04d}"
        folder = root / "sekai-game-walking"
        if with_videos:
            write_video(folder / f"{name}.mp4")
        cams = truth_cameras(f"sekai-game-walking/{name}.mp4")
        c2w, fxfycxcy = to_sekai_game(cams, np.arange(FRAMES), WIDTH, HEIGHT)
        fx, fy, cx, cy = fxfycxcy[0]
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{name}.npz", extrinsic=c2w, intrinsic=np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]))
        rows.append([f"{name}.mp4", f"{name}.npz", f"A game walk {i}.", "Lushfoil", "forest", "none", "clear", "day"])
    _write_csv(root / "train/sekai-game-walking.csv", _SEKAI_HEADER, rows)
    return root


def write_miradata(root: Path, n_clips: int = 2, with_videos: bool = True) -> Path:
    """MiraData: ``miradata_v1_9k.csv`` (dotted clip ids ``"<download id>.<n>"``, trailing empty columns) and clips."""
    header = [
        "clip_id", "source", "video_url", "video_id", "width", "height", "fps", "seconds", "timestamp",
        "frame_number", "framestamp", "file_path", "main_object_caption", "background_caption", "style_caption",
        "camera_caption", "short_caption", "dense_caption", "camera_motion", "", "",
    ]  # fmt: skip
    rows = []
    for i in range(n_clips):
        clip = f"{1234 + i}.{5678 + i}"
        path = f"clip_video/000000001/{clip}.mp4"
        if with_videos:
            write_video(root / path)
        rows.append([
            clip, "youtube_city", f"https://youtu.be/vid{i}", f"vid{i}", str(WIDTH), str(HEIGHT), str(FPS),
            repr(FRAMES / FPS), "['0:00:00.000', '0:00:00.541']", str(FRAMES), "[0, 13]", path,
            "people walking", "a plaza", "documentary", "steady forward", f"A plaza {i}.",
            f"A dense plaza caption {i}.", "forward", "", "",
        ])  # fmt: skip
    _write_csv(root / "miradata_v1_9k.csv", header, rows)
    return root


def write_omniworld(root: Path, n_scenes: int = 1, n_splits: int = 2, with_frames: bool = True) -> Path:
    """OmniWorld-Game: metadata CSV (``Resolution`` as ``64×48``) and extracted scenes.

    Each split has :data:`FRAMES` consecutive frames; source ids are
    ``"<UID>/split_<i>"``; truth is metric (``truth_cameras(id, metric=True)``)
    while files store scene units (metres / :data:`OMNIWORLD_METRIC_SCALE`).
    """
    rows = []
    for s in range(n_scenes):
        uid = f"{0xB04F88D1F85A + s:012x}"
        scene = root / uid
        splits = [list(range(i * FRAMES, (i + 1) * FRAMES)) for i in range(n_splits)]
        if with_frames:
            write_frames(scene / "color", n_splits * FRAMES)
        write_frames(scene / "depth", 1)
        (scene / "camera").mkdir(parents=True, exist_ok=True)
        (scene / "split_info.json").write_text(json.dumps({"split_num": n_splits, "split": splits}))
        (scene / "fps.txt").write_text(f"{FPS}\n")
        for i in range(n_splits):
            quats, trans, K = to_omniworld(truth_cameras(f"{uid}/split_{i}", metric=True), np.arange(FRAMES))
            camera = {
                "focals": K[:, 0, 0].tolist(),
                "cx": float(K[0, 0, 2]),
                "cy": float(K[0, 1, 2]),
                "quats": quats.tolist(),
                "trans": (trans / OMNIWORLD_METRIC_SCALE).tolist(),
            }
            (scene / "camera" / f"split_{i}.json").write_text(json.dumps(camera))
        rows.append([uid, str(n_splits), "0", str(FPS), str(OMNIWORLD_METRIC_SCALE), f"{WIDTH}×{HEIGHT}"])
    _write_csv(
        root / "metadata/omniworld_game_metadata.csv",
        ["UID", "Split Num", "Test Split Index", "FPS", "Metric Scale", "Resolution"],
        rows,
    )
    return root


def write_dl3dv(root: Path, n_scenes: int = 2, with_frames: bool = True) -> Path:
    """DL3DV-10K: ``.cache/DL3DV-valid.csv`` and scenes ``1K/<hash>/`` with images_4 frames and transforms.json.

    transforms.json describes the capture at :data:`DL3DV_DOWNSCALE` x the
    stored frame size; the scene lasts ``FRAMES / FPS`` s, so its rate is FPS.
    """
    rows = []
    for s in range(n_scenes):
        scene_hash = f"{zlib.crc32(f'dl3dv-{s}'.encode()):08x}" * 8
        scene = root / "1K" / scene_hash
        if with_frames:
            write_frames(scene / "images_4", FRAMES, name="frame_{:05d}.png")
        cams = truth_cameras(scene_hash)
        K_full = cams.K.copy()
        K_full[:, :2] *= DL3DV_DOWNSCALE  # fx, cx and fy, cy of the full-resolution capture
        full = Cameras(c2w=cams.c2w, K=K_full, t=cams.t, frame_index=cams.frame_index)
        transforms = to_nerfstudio(
            full,
            WIDTH * DL3DV_DOWNSCALE,
            HEIGHT * DL3DV_DOWNSCALE,
            applied_transform=np.array(NERFSTUDIO_APPLIED),
            file_paths=[f"images/frame_{i + 1:05d}.png" for i in range(FRAMES)],
            distortion=np.tile([0.01, -0.002, 0.0001, 0.0002], (FRAMES, 1)),
        )
        (scene / "transforms.json").write_text(json.dumps(transforms))
        rows.append([scene_hash, "Without any sensitivity information", "1K", repr(FRAMES / FPS)])
    _write_csv(root / ".cache/DL3DV-valid.csv", ["hash", "sensibility label", "batch", "duration"], rows)
    return root


def write_dl3dv_gs(root: Path, n_scenes: int = 2) -> Path:
    """3DGS scenes: scene 0 ``<hash>/point_cloud/iteration_{7000,30000}/point_cloud.ply`` + transforms.json,
    later scenes a lone ``<hash>/scene.ply`` without cameras. Source ids are the hashes."""
    for s in range(n_scenes):
        scene = root / f"{zlib.crc32(f'gs-{s}'.encode()):08x}"
        if s == 0:
            for iteration in (7000, 30000):
                _write_ply(scene / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply", 3 + iteration // 7000)
            transforms = to_nerfstudio(truth_cameras(scene.name), WIDTH, HEIGHT)
            (scene / "transforms.json").write_text(json.dumps(transforms))
        else:
            _write_ply(scene / "scene.ply", 5)
    return root


def write_local(root: Path, n_clips: int = 2) -> Path:
    """A plain folder: ``clips/clip_<i>.mp4`` and, for the second clip on, ``more/clip_<i>.mkv`` (no frame count
    in the container), plus a ``notes.txt`` readers must ignore."""
    for i in range(n_clips):
        write_video(root / ("clips" if i == 0 else "more") / f"clip_{i}.{'mp4' if i == 0 else 'mkv'}")
    (root / "notes.txt").write_text("not a video\n")
    return root


_SEKAI_HEADER = ["videoFile", "cameraFile", "caption", "location", "scene", "crowdDensity", "weather", "timeOfDay"]


def _pattern(i: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 gradient that shifts with frame ``i``."""
    x = (np.arange(width)[None, :] * 4 + i * 8) % 256
    y = (np.arange(height)[:, None] * 4) % 256
    return np.stack(np.broadcast_arrays(x, y, (x + y) % 256), axis=-1).astype(np.uint8)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _write_ply(path: Path, n_vertices: int) -> None:
    """A binary little-endian 3DGS-style PLY with ``n_vertices`` zero Gaussians (x, y, z, opacity)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    props = ("x", "y", "z", "opacity")
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n_vertices}\n"
    header += "".join(f"property float {p}\n" for p in props) + "end_header\n"
    path.write_bytes(header.encode() + np.zeros((n_vertices, len(props)), "<f4").tobytes())
