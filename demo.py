"""``wmkit demo``: the whole data path on a tiny synthetic source, on CPU, in seconds.

Stages (each is the library function the real CLI verb calls)::

    1 source    render clips inside a textured room (exact cameras), encode H.264,
                lay them out as a SpatialVID-HQ release (CSV with spaced column
                names, poses.npy w2c [t, q_xyzw] at every 4th frame, normalized
                intrinsics), so the real reader and camera conversion run
    2 manifest  wmkit manifest build + split + stats (table and bar chart PNG)
    3 shards    wmkit shards ingest -> webdataset tars + index.parquet + status.parquet
    4 verify    wmkit shards verify, then stream the shards back and compare the
                cameras with the ground truth the clips were rendered from

Later issues add annotation, rendering and training stages here.

Usage::

    wmkit demo --out /tmp/wmkit-demo
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from wmkit.datasets.cameras import Cameras, intrinsics_to_normalized, to_spatialvid
from wmkit.datasets.synthetic import render_room_clip

DEMO_CLIPS = 4
DEMO_FRAMES = 33  # 33 frames @ 8 fps: a 4-s clip, long enough for key poses every 4th frame
DEMO_SIZE = (160, 96)
DEMO_FPS = 8.0
KEY_POSE_STRIDE = 4  # SpatialVID stores poses on a subset of frames; the reader interpolates the rest


def write_synthetic_spatialvid(root: Path, num_clips: int = DEMO_CLIPS) -> dict[str, Cameras]:
    """Render ``num_clips`` clips and write them in the SpatialVID-HQ layout; return the true cameras by id."""
    from wmkit.datasets.video import write_mp4

    width, height = DEMO_SIZE
    header = ["id", "video path", "annotation path", "num frames", "fps", "resolution", "aesthetic score"]
    lines, truth = [",".join(f'"{h}"' for h in header)], {}
    for i in range(num_clips):
        clip_id = f"demo-room-{i}"
        clip = render_room_clip(seed=i, num_frames=DEMO_FRAMES, width=width, height=height, fps=DEMO_FPS,
                                zoom=0.25 * (i % 2))  # every other clip zooms in: per-frame intrinsics
        video = Path("videos/group_0001") / f"{clip_id}.mp4"
        annotation = Path("annotations/group_0001") / clip_id
        (root / video).parent.mkdir(parents=True, exist_ok=True)
        (root / annotation).mkdir(parents=True, exist_ok=True)
        write_mp4(clip.frames, root / video, fps=DEMO_FPS)
        indexes = np.arange(0, DEMO_FRAMES, KEY_POSE_STRIDE)
        poses, intrinsics = to_spatialvid(clip.cameras, indexes, width, height)
        np.save(root / annotation / "poses.npy", poses)
        np.save(root / annotation / "intrinsics.npy", intrinsics)
        (root / annotation / "indexes.txt").write_text("".join(f"{r} {f}\n" for r, f in enumerate(indexes)))
        caption = {"SceneSummary": "a walk through a chequered room", "SceneDescription": f"room walk {i}"}
        (root / annotation / "caption.json").write_text(json.dumps(caption))
        lines.append(f"{clip_id},{video.as_posix()},{annotation.as_posix()},{DEMO_FRAMES},{DEMO_FPS},"
                     f"{width}x{height},{5.0 + 0.1 * i:.1f}")
        truth[clip_id] = clip.cameras
    catalogue = root / "data/train/SpatialVID_HQ_metadata.csv"
    catalogue.parent.mkdir(parents=True, exist_ok=True)
    catalogue.write_text("\n".join(lines) + "\n")
    return truth


def camera_errors(stored: Cameras, truth: Cameras) -> tuple[float, float, float]:
    """Max position error (m), max rotation error (deg) and max focal error (px) of ``stored`` vs ``truth``."""
    pos = np.linalg.norm(stored.c2w[:, :3, 3] - truth.c2w[:, :3, 3], axis=1).max()
    rel = np.einsum("tji,tjk->tik", stored.c2w[:, :3, :3], truth.c2w[:, :3, :3])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    rot = np.degrees(np.arccos(cos)).max()
    focal = np.abs(stored.K[:, 0, 0] - truth.K[:, 0, 0]).max()
    return float(pos), float(rot), float(focal)


def run_demo(out: Path) -> dict:
    """Run every stage under ``out``; return the summary printed by the CLI."""
    from wmkit.datasets.ingest import ingest_manifest, status_summary
    from wmkit.datasets.shard_index import shard_stats, verify_shards
    from wmkit.datasets.shard_reader import ShardDataset
    from wmkit.manifests.ops import split_manifest
    from wmkit.manifests.readers import build_manifest
    from wmkit.manifests.schema import write_manifest
    from wmkit.manifests.stats import format_table, manifest_stats, plot_stats

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] source: rendering {DEMO_CLIPS} synthetic clips as a SpatialVID-HQ release in {out / 'source'}")
    truth = write_synthetic_spatialvid(out / "source")

    print("[2/4] manifest: build, split, stats")
    manifest = split_manifest(build_manifest("spatialvid", out / "source"), val_fraction=0.25)
    write_manifest(manifest, out / "manifest.parquet")
    stats = manifest_stats(manifest)
    print(format_table(stats))
    plot_stats(stats, out / "manifest_stats.png")

    print(f"[3/4] shards: ingest into {out / 'shards'}")
    status = ingest_manifest(out / "manifest.parquet", out / "shards", max_count=2, progress=False)
    print(status_summary(status))

    print("[4/4] verify: checksums, cameras, frame counts; stream back and compare with ground truth")
    report = verify_shards(out / "shards", check_video=True)
    print(report.summary())
    print(shard_stats(out / "shards").to_string())
    worst = np.zeros(3)
    frames_seen = 0
    for sample in ShardDataset(str(out / "shards"), decode="frames", verify=True):
        frames_seen += len(sample.frames)
        worst = np.maximum(worst, camera_errors(sample.sample.cameras, truth[sample.key]))
    summary = {
        "clips": DEMO_CLIPS,
        "done": int((status["status"] == "done").sum()),
        "failed": int((status["status"] == "failed").sum()),
        "shards_ok": bool(report.ok),
        "frames_streamed": frames_seen,
        "max_position_error_m": round(float(worst[0]), 4),
        "max_rotation_error_deg": round(float(worst[1]), 3),
        "max_focal_error_px": round(float(worst[2]), 3),
        "seconds": round(time.perf_counter() - start, 1),
        "out": str(out),
    }
    print("summary: " + json.dumps(summary))
    return summary


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = verbs.add_parser(
        "demo",
        help="run the data path end to end on generated data (CPU, seconds)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("wmkit-demo"), help="output folder (default: ./wmkit-demo)")

    def run(args: argparse.Namespace) -> int:
        summary = run_demo(args.out)
        return 0 if summary["shards_ok"] and summary["failed"] == 0 else 1

    parser.set_defaults(run=run)
