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
    5 annotate  (with the `annotate` extra) wmkit annotate on the same manifest with the
                perturbed test backends (noisy up-to-scale geometry + noisy metric depth
                derived from the clips' ground truth): fusion, SIFT tracks, per-frame-K
                bundle adjustment, quality -> shards; the annotated cameras are scored
                against the ground truth (wmkit eval cameras)
    6 render    a generated Gaussian-splat room written as a DL3DV scene folder ->
                wmkit render (collision-free path, plain-torch reference rasterizer on
                CPU, refiner off) -> shards with exact cameras and rendered depth,
                verified like the ingested ones
    7 train     (with the `text` and `vae` extras) save a random-weight LTX VAE and caption
                encoder in their real layouts, wmkit train encode-latents, train the tiny
                GDN DiT for a few steps, wmkit train export, wmkit generate a clip from
                clip 0's first frame and cameras

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
from wmkit.datasets.synthetic import render_room_clip, write_ground_truth

DEMO_CLIPS = 4
DEMO_FRAMES = 33  # 33 frames @ 8 fps: a 4-s clip, long enough for key poses every 4th frame
DEMO_SIZE = (160, 96)
DEMO_FPS = 8.0
DEMO_TRAIN_STEPS = 30
DEMO_RENDER_FRAMES = 17  # one second of path at 16 fps: the CPU reference rasterizer is the slow step
KEY_POSE_STRIDE = 4  # SpatialVID stores poses on a subset of frames; the reader interpolates the rest


def write_synthetic_spatialvid(root: Path, num_clips: int = DEMO_CLIPS) -> dict[str, Cameras]:
    """Render ``num_clips`` clips and write them in the SpatialVID-HQ layout; return the true cameras by id.

    The exact cameras and depth also go to ``root/gt/<clip_id>/`` (the layout the
    perturbed annotation backends read)."""
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
        write_ground_truth(clip, root / "gt" / clip_id)
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


def _missing(*modules: str) -> list[str]:
    """The optional modules of ``modules`` that are not installed."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def annotate_and_score(out: Path, truth: dict[str, Cameras]) -> dict | str:
    """Stage 5: annotate the demo manifest with the perturbed backends and score the cameras
    against the truth; a summary dict, or the reason it was skipped (no `annotate` extra)."""
    missing = _missing("pycolmap")
    if missing:
        reason = f"skipped: {', '.join(missing)} not installed (pip install 'wmkit[annotate]')"
        print(f"[5/7] annotate: {reason}")
        return reason
    import pycolmap

    from wmkit.annotate.config import apply_overrides, preset
    from wmkit.annotate.evaluate import evaluate_cameras
    from wmkit.annotate.pipeline import annotate_manifest
    from wmkit.datasets.ingest import status_summary
    from wmkit.datasets.shard_reader import ShardDataset

    pycolmap.logging.minloglevel = pycolmap.logging.WARNING  # one SIFT start-up line per clip is noise here
    print(f"[5/7] annotate: perturbed backends -> fusion -> tracks -> BA (per-frame K) -> {out / 'annotated'}")
    gt = out / "source/gt"
    config = apply_overrides(preset("cpu_test"), [f"geometry_options.gt_root={gt}", f"metric_options.gt_root={gt}"])
    status = annotate_manifest(out / "manifest.parquet", out / "annotated", config, runner="local", progress=False)
    print(status_summary(status))
    scores = {s.key: evaluate_cameras(s.cameras, truth[s.key]) for s in ShardDataset(str(out / "annotated"))}
    for key, m in sorted(scores.items()):
        print(f"  {key}: ATE {m['ate_sim3_m']:.3f} m (Sim3), metric scale error {100 * m['scale_err']:.1f} %, "
              f"focal error {100 * m['focal_err_rel_mean']:.1f} %")
    worst = {k: round(max(m[k] for m in scores.values()), 4) for k in ("ate_sim3_m", "scale_err", "focal_err_rel_mean")}
    return {"annotated": len(scores), "failed": int((status["status"] == "failed").sum()), **worst}


def render_and_verify(out: Path) -> dict:
    """Stage 6: one short path through a generated splat room into shards; verify them."""
    from wmkit.datasets.ingest import status_summary
    from wmkit.datasets.shard_index import verify_shards
    from wmkit.render.pipeline import render_demo

    print(f"[6/7] render: generated splat room -> path -> reference rasterizer -> {out / 'render/shards'}")
    made = render_demo(out / "render", num_frames=DEMO_RENDER_FRAMES, size=DEMO_SIZE)
    print(status_summary(made.status))
    report = verify_shards(made.shard_dir, check_video=True)
    print(report.summary())
    return {"paths": int((made.status["status"] == "done").sum()), "failed": int((made.status["status"] == "failed").sum()),
            "shards_ok": bool(report.ok)}


def train_and_generate(out: Path, truth: dict[str, Cameras]) -> dict | str:
    """Stage 5: latents -> a few training steps -> export -> one generated clip; a summary dict,
    or the reason it was skipped (the optional `text`/`vae` extras are not installed)."""
    missing = _missing("transformers", "diffusers")
    if missing:
        reason = f"skipped: {', '.join(missing)} not installed (pip install 'wmkit[text,vae]')"
        print(f"[7/7] train: {reason}")
        return reason
    import warnings

    import diffusers
    import torch
    import transformers
    from PIL import Image

    from wmkit.model.generate import GenerateConfig, generate
    from wmkit.model.random_weights import LATENT_CHANNELS, save_tiny_text_encoder, save_tiny_vae
    from wmkit.train.config import run_preset
    from wmkit.train.export import export_model_weights
    from wmkit.train.latents import encode_latent_shards
    from wmkit.train.trainer import train

    print(f"[7/7] train: random-weight VAE and caption encoder in {out / 'models'} (no weights are downloaded)")
    for library in (transformers, diffusers):  # their per-load progress bars and hints drown the demo's lines
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process: expected
    vae, text = save_tiny_vae(out / "models/vae"), save_tiny_text_encoder(out / "models/text")
    status = encode_latent_shards(out / "shards", out / "latents", vae, text_encoder=text, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is several times faster than two here
    try:
        cfg = run_preset("tiny_cpu", shards=str(out / "latents"), out=str(out / "run"), steps=DEMO_TRAIN_STEPS,
                         ckpt_every=DEMO_TRAIN_STEPS, progress=False, model_overrides={"latent_channels": LATENT_CHANNELS})
        rows = train(cfg)
        weights = export_model_weights(out / "run", out / "run/model.safetensors")
        first = next(iter(truth))
        Image.fromarray(_first_frame(out / "source", first)).save(out / "first_frame.png")
        truth[first].save(str(out / "cameras_clip0.npz"))
        video = generate(weights, vae, text, out / "first_frame.png", out / "cameras_clip0.npz",
                         "a camera walks through the room", out / "generated.mp4", GenerateConfig(steps=4), device="cpu")
    finally:
        torch.set_num_threads(threads)
    losses = [r["loss"] for r in rows]  # empty when the run had already finished (a second demo run)
    first5, last5 = (round(sum(x) / len(x), 4) if x else None for x in (losses[:5], losses[-5:]))
    done = int((status["status"] == "done").sum())
    print(f"  latents: {done} clips; trained {len(rows)} steps (loss {first5} first 5 -> {last5} last 5); "
          f"wrote {video}")
    return {"latent_clips": done, "steps": len(rows), "loss_first5": first5, "loss_last5": last5,
            "generated": str(video)}


def _first_frame(source: Path, clip_id: str) -> np.ndarray:
    """The first frame of a demo clip as uint8 (H, W, 3)."""
    from wmkit.datasets.video import decode_clip

    return decode_clip(source / "videos/group_0001" / f"{clip_id}.mp4", end_s=1.0 / DEMO_FPS)[0]


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
    print(f"[1/7] source: rendering {DEMO_CLIPS} synthetic clips as a SpatialVID-HQ release in {out / 'source'}")
    truth = write_synthetic_spatialvid(out / "source")

    print("[2/7] manifest: build, split, stats")
    manifest = split_manifest(build_manifest("spatialvid", out / "source"), val_fraction=0.25)
    write_manifest(manifest, out / "manifest.parquet")
    stats = manifest_stats(manifest)
    print(format_table(stats))
    plot_stats(stats, out / "manifest_stats.png")

    print(f"[3/7] shards: ingest into {out / 'shards'}")
    status = ingest_manifest(out / "manifest.parquet", out / "shards", max_count=2, progress=False)
    print(status_summary(status))

    print("[4/7] verify: checksums, cameras, frame counts; stream back and compare with ground truth")
    report = verify_shards(out / "shards", check_video=True)
    print(report.summary())
    print(shard_stats(out / "shards").to_string())
    worst = np.zeros(3)
    frames_seen = 0
    for sample in ShardDataset(str(out / "shards"), decode="frames", verify=True):
        frames_seen += len(sample.frames)
        worst = np.maximum(worst, camera_errors(sample.sample.cameras, truth[sample.key]))
    summary = {"annotate": annotate_and_score(out, truth), "render": render_and_verify(out),
               "train": train_and_generate(out, truth)}
    summary.update({
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
    })
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
        ok = summary["shards_ok"] and summary["failed"] == 0 and summary["render"]["shards_ok"]
        return 0 if ok and summary["render"]["failed"] == 0 else 1

    parser.set_defaults(run=run)
