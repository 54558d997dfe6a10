"""Annotation accuracy, memory and throughput on synthetic clips with exact ground truth (issue 5).

Accuracy: ``--clips`` synthetic clips (every second one zooms, focal length
changing by ``DEFAULT_ZOOM`` over the clip) from
``annotate.synthetic_scenes.write_synthetic_source``, fed by the ``perturbed``
(geometry) and ``perturbed_metric`` (metric depth) backends at the noise levels
of :data:`NOISE`. Per clip, against the ground truth (``annotate.evaluate``):

    input   the geometry backend's own cameras (up to scale, Sim(3)-aligned)
    a       pycolmap SfM, one shared K (``colmap`` backend), the classical baseline
    b       our BA with one K per video (``per_frame_intrinsics=False``, the VIPE setting)
    c       our BA with per-frame K (the default)

Memory: peak RSS (VmHWM, see :func:`peak_rss_mb`) of ``bundle_adjust`` on a 600- and
a 3,600-frame synthetic track problem, each in a fresh subprocess. The problem
is a camera walking past a wall (:func:`track_problem`) with SIFT-like tracks
of 4-24 frames; its depth maps are kept small (32 x 20 px, 5 KB a frame) so
that the RSS measures the BA and its tracks rather than a T x H x W input.

Throughput: frames per second of the whole per-clip path of (c) (decode,
backends, fusion, tracks, BA) on this machine, one process.

Throughput on a GPU machine without open3d and av (:func:`write_clips`,
:func:`measure_throughput`): ``--write-clips DIR`` renders and decodes clips
here and stores the decoded frames and ground truth; ``--read-clips DIR``
times the same path of (c) without decode (BA on cuda when present), checks
its ATE, and needs pycolmap but neither open3d nor av.

Usage::

    python bench/annotate.py                       # 20 clips x 48 frames, ~10 min on 2 CPU cores
    python bench/annotate.py --smoke               # 2 short clips, 120/240-frame RSS: for a test
    python bench/annotate.py --clips 40 --json bench/results/annotate_h100.json --md bench/results/annotate_h100.md
    python bench/annotate.py --write-clips .clips  # 6 clips x 48 frames at 160x96, ~11 MB
    python bench/annotate.py --read-clips .clips   # -> bench/results/annotate_throughput.json + .md

Writes JSON with a ``summary`` (the issue's four numbers, throughput, goals)
and a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import operator
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the pipeline modules load lazily: --read-clips needs neither open3d nor av
    from wmkit.annotate.bundle_adjust import BAResult
    from wmkit.annotate.config import AnnotateConfig
    from wmkit.annotate.fusion import FusedGeometry
    from wmkit.annotate.tracks import Tracks
    from wmkit.annotate.types import Prediction

#: Noise levels of the perturbed backends (their option names; relative sizes are fractions).
NOISE = {
    "geometry": {  # perturbed (Pi3X role): unknown scale with drift, pose noise, focal bias
        "scale_drift": 0.005,
        "rot_noise_deg": 0.3,
        "trans_noise_rel": 0.005,
        "depth_noise_rel": 0.02,
        "outlier_fraction": 0.02,
        "focal_bias_rel": 0.05,
        "focal_noise_rel": 0.01,
    },
    "metric": {  # perturbed_metric (MoGe-2 role): metric depth, per-frame K with bias
        "scale_bias_rel": 0.0,
        "depth_noise_rel": 0.02,
        "outlier_fraction": 0.02,
        "focal_bias_rel": -0.03,
        "focal_noise_rel": 0.02,
    },
}

#: The issue's goals: name -> (summary key, comparison, bound).
_COMPARE = {">=": operator.ge, "<": operator.lt, "<=": operator.le}
GOALS = {
    "per-frame K cuts focal error on zoom clips >= 5x vs one K": ("focal_err_ratio_single_k_over_per_frame_k", ">=", 5.0),
    "metric scale error < 5 %": ("metric_scale_err", "<", 0.05),
    "BA at least halves the backend's ATE": ("ate_after_ba_over_input", "<=", 0.5),
    "peak RSS 3,600 frames within 1.25x of 600": ("rss_ratio_3600_over_600", "<=", 1.25),
}


def _cameras(c2w: np.ndarray, K: np.ndarray, fps: float, metric: bool):
    from wmkit.datasets.cameras import Cameras

    T = len(c2w)
    return Cameras(c2w, K, np.arange(T) / fps, np.arange(T), metric=metric)


@dataclasses.dataclass(frozen=True)
class PathResult:
    """What the timed per-clip path of (c) produced, and its seconds per stage."""

    geo: Prediction
    met: Prediction
    fused: FusedGeometry
    tracks: Tracks
    per_frame: BAResult
    stage_s: dict[str, float]


def annotate_path(frames: np.ndarray, clip_id: str, gt_root: Path, config: AnnotateConfig) -> PathResult:
    """(c) on decoded ``frames`` uint8 (T, H, W, 3): backends, fusion, SIFT tracks, BA (cuda when present)."""
    from wmkit.annotate.backends import make_backend
    from wmkit.annotate.bundle_adjust import bundle_adjust
    from wmkit.annotate.fusion import fuse_depth
    from wmkit.annotate.tracks import extract_tracks

    marks = [time.perf_counter()]
    geo = make_backend("perturbed", gt_root=gt_root, **NOISE["geometry"]).predict(frames, clip_id)
    met = make_backend("perturbed_metric", gt_root=gt_root, **NOISE["metric"]).predict(frames, clip_id)
    marks.append(time.perf_counter())
    fused = fuse_depth(geo, met, config.fusion)
    marks.append(time.perf_counter())
    tracks = extract_tracks(frames, max_features=config.max_features, match_window=config.match_window)
    marks.append(time.perf_counter())
    per_frame = bundle_adjust(tracks, fused, config.ba, clip_id=clip_id)  # returns numpy: cuda work is done
    marks.append(time.perf_counter())
    stage_s = dict(zip(("backends", "fusion", "tracks", "bundle_adjust"), np.diff(marks).tolist()))
    return PathResult(geo, met, fused, tracks, per_frame, stage_s)


def evaluate_clip(row: dict, gt_root: Path, config: AnnotateConfig) -> dict:
    """Run input / a / b / c on one clip; return their camera errors and the timed path of (c)."""
    from wmkit.annotate.backends import make_backend
    from wmkit.annotate.bundle_adjust import bundle_adjust
    from wmkit.annotate.evaluate import evaluate_cameras
    from wmkit.annotate.stages import decode_stage
    from wmkit.datasets.cameras import Cameras

    clip_id = row["clip_id"]
    extra = json.loads(row["extra"])
    truth = Cameras.load(str(Path(extra["gt_dir"]) / "cameras.npz"))
    started = time.perf_counter()
    frames, fps = decode_stage(row, config)
    path = annotate_path(frames, clip_id, gt_root, config)
    geo, fused, tracks, per_frame = path.geo, path.fused, path.tracks, path.per_frame
    path_s = time.perf_counter() - started
    single = bundle_adjust(tracks, fused, dataclasses.replace(config.ba, per_frame_intrinsics=False), clip_id=clip_id)
    out = {
        "clip_id": clip_id,
        "zoom": float(extra["zoom"]),
        "frames": len(frames),
        "path_s": path_s,
        "input": evaluate_cameras(_cameras(geo.c2w, geo.K, fps, False), truth),
        "fused": evaluate_cameras(_cameras(fused.c2w, fused.K, fps, True), truth),
        "b_single_k": evaluate_cameras(_cameras(single.c2w, single.K, fps, True), truth),
        "c_per_frame_k": evaluate_cameras(_cameras(per_frame.c2w, per_frame.K, fps, True), truth),
        "reproj_error_px": {"b_single_k": single.reproj_error_px, "c_per_frame_k": per_frame.reproj_error_px},
    }
    try:
        sfm = make_backend("colmap").predict(frames, clip_id)
        out["a_colmap"] = evaluate_cameras(_cameras(sfm.c2w, sfm.K, fps, False), truth)
    except Exception as err:  # the classical baseline may not register a clip: counted, not fatal
        out["a_colmap"] = {"error": f"{type(err).__name__}: {err}"}
    return out


# --- memory: a synthetic track problem in a fresh process --------------------------------------


def track_problem(num_frames: int, seed: int = 0, width: int = 32, height: int = 20):
    """Tracks and a perturbed fused geometry of a camera walking past a wall (module docstring).

    Returns ``(tracks, fused, true_c2w)``. The wall is the plane z = 4 m; the
    camera moves 2 cm per frame along x, sways in y and yaws +-5 degrees (so
    the problem is not the planar pure-translation degeneracy), fx = fy = 25 px.
    The fused depth is the exact z-depth of the wall with 2 % noise, K is 3 %
    too long, the poses carry 2 cm of noise; observations 0.3 px.
    """
    from scipy.spatial.transform import Rotation

    from wmkit.annotate.fusion import FusedGeometry
    from wmkit.annotate.tracks import Tracks

    rng = np.random.default_rng(seed)
    T, wall_z, f = num_frames, 4.0, 25.0
    cx, cy = width / 2, height / 2
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, :3] = Rotation.from_euler("y", 5.0 * np.sin(np.arange(T) / 40.0)[:, None], degrees=True).as_matrix()
    c2w[:, 0, 3] = 0.02 * np.arange(T)
    c2w[:, 1, 3] = 0.1 * np.sin(np.arange(T) / 50.0)
    K = np.tile(np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]]), (T, 1, 1))
    # Exact z-depth of the wall at every pixel centre: the ray R d (d = camera ray with z = 1) hits z = wall_z.
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([(u - cx) / f, (v - cy) / f, np.ones_like(u)], -1)  # (H, W, 3)
    world_z = np.einsum("tj,hwj->thw", c2w[:, 2, :3], rays)  # z component of R d, per frame
    depth = ((wall_z - c2w[:, 2, 3])[:, None, None] / world_z).astype(np.float32)
    frame, point, uv, num_points = [], [], [], 0
    for t0 in range(T):  # 8 new tracks start at every frame, each 4-24 frames long
        for _ in range(8):
            frames = np.arange(t0, min(T, t0 + int(rng.integers(4, 25))))
            ray = c2w[t0, :3, :3] @ np.array([(rng.uniform(1, width - 1) - cx) / f, (rng.uniform(1, height - 1) - cy) / f, 1.0])
            X = c2w[t0, :3, 3] + ray * (wall_z - c2w[t0, 2, 3]) / ray[2]
            cam = np.einsum("tji,tj->ti", c2w[frames, :3, :3], X - c2w[frames, :3, 3])  # R^T (X - c)
            obs = f * cam[:, :2] / cam[:, 2:] + np.array([cx, cy]) + rng.normal(0, 0.3, (len(frames), 2))
            inside = (obs[:, 0] >= 0) & (obs[:, 0] < width) & (obs[:, 1] >= 0) & (obs[:, 1] < height)
            if inside.sum() < 2:
                continue
            frame.append(frames[inside])
            point.append(np.full(int(inside.sum()), num_points))
            uv.append(obs[inside])
            num_points += 1
    tracks = Tracks(np.concatenate(frame), np.concatenate(point), np.concatenate(uv), num_points, T)
    noisy = c2w.copy()
    noisy[:, :3, 3] += rng.normal(0, 0.02, (T, 3))
    noisy_depth = (depth * (1 + rng.normal(0, 0.02, depth.shape))).astype(np.float32)
    conf = np.full(depth.shape, 0.9, dtype=np.float32)
    fused = FusedGeometry(noisy, noisy_depth, K * np.array([[1.03], [1.03], [1.0]]), conf, np.ones(T), 0.9)
    return tracks, fused, c2w


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) in MiB.

    Not ``resource.getrusage(...).ru_maxrss``: a child started by fork + exec
    reports its parent's high-water mark there when that was higher, which
    hid the BA's memory under the benchmark driver's in a first run.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: the memory case needs Linux")


def _rss_case(num_frames: int) -> dict:
    """Build the track problem, run the windowed BA, report peak RSS (run in a fresh process)."""
    from wmkit.annotate.bundle_adjust import BAConfig, bundle_adjust

    tracks, fused, truth = track_problem(num_frames)
    before = peak_rss_mb()
    started = time.perf_counter()
    result = bundle_adjust(tracks, fused, dataclasses.replace(BAConfig(), iterations=3, device="cpu"))
    seconds = time.perf_counter() - started
    err = np.linalg.norm(result.c2w[:, :3, 3] - truth[:, :3, 3], axis=1)
    return {
        "frames": num_frames,
        "observations": int(len(tracks.frame)),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_before_ba_mb": before,
        "ba_s": seconds,
        "ba_frames_per_s": num_frames / seconds,
        "centre_err_median_m": float(np.median(err)),
        "reproj_error_px": float(result.reproj_error_px),
        "peak_window_bytes": int(result.stats.get("peak_window_bytes", -1)),
    }


def measure_rss(num_frames: int) -> dict:
    """:func:`_rss_case` in a fresh interpreter, so earlier allocations do not count."""
    done = subprocess.run(
        [sys.executable, __file__, "--rss-case", str(num_frames)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- throughput from pre-decoded clips (a GPU machine without open3d and av) -------------------

#: Clips --write-clips renders by default: the full run's 48 frames at 160 x 96, 3 static and
#: 3 zooming. Frames cost ~1.5 MB a clip compressed, so 6 keep the folder near 11 MB, which fits
#: one device call beside the 38 MB pycolmap wheel (64 MiB in all); the full run's 20 would not.
WRITE_CLIPS = 6


def write_clips(out: Path, clips: int, frames: int, size: tuple[int, int]) -> dict:
    """Render synthetic clips, decode them here and write what :func:`measure_throughput` reads.

    The clips are those of :func:`run` (``write_synthetic_source``, every second one zooming),
    decoded by the pipeline's own ``decode_stage`` (mp4 at CRF 18 and back), so the frames are
    the ones the full run times. Layout (``out`` is also the perturbed backends' ``gt_root``)::

        out/index.json              clip ids, zoom, frame count and size, where and when written
        out/<clip_id>/frames.npz    frames (T, H, W, 3) uint8 as decoded, fps
        out/<clip_id>/cameras.npz   ground-truth Cameras, as written by write_synthetic_source
        out/<clip_id>/depth.npz     ground-truth depth (T, H, W) as float16 metres, valid

    Depth is stored as float16 (relative error < 5e-4, 0.28 MB a clip instead of 2.4 MB); the
    perturbed backends add 2 % noise to it, and the work of every stage is unchanged.
    """
    from wmkit.annotate.config import preset
    from wmkit.annotate.stages import decode_stage
    from wmkit.annotate.synthetic_scenes import DEFAULT_ZOOM, write_synthetic_source

    config = preset("laptop")
    entries = []
    with tempfile.TemporaryDirectory(prefix="wmkit-bench-annotate-") as tmp:
        manifest = write_synthetic_source(
            Path(tmp), clips, num_frames=frames, width=size[0], height=size[1], zoom_every=2
        )
        for row in manifest.to_dict("records"):
            clip_id, extra = row["clip_id"], json.loads(row["extra"])
            decoded, fps = decode_stage(row, config)
            clip_dir = Path(out) / clip_id
            clip_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(clip_dir / "frames.npz", frames=decoded, fps=fps)
            shutil.copyfile(Path(extra["gt_dir"]) / "cameras.npz", clip_dir / "cameras.npz")
            with np.load(Path(extra["gt_dir"]) / "depth.npz") as gt:
                np.savez_compressed(clip_dir / "depth.npz", depth=gt["depth"].astype(np.float16), valid=gt["valid"])
            entries.append({"clip_id": clip_id, "zoom": float(extra["zoom"]), "frames": len(decoded)})
    index = {
        "clips": entries,
        "size": list(size),
        "zoom": DEFAULT_ZOOM,
        "depth": "float16",
        "written_on": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (Path(out) / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def measure_throughput(clips_dir: Path) -> dict:
    """Time (c) without decode on the clips of :func:`write_clips`; returns setup, per-clip, summary.

    One process, clips in turn; the first clip runs once untimed first (CUDA context, kernels,
    allocator). Each clip's (c) is also scored against its ground truth, outside the timing,
    so a fast result on a broken path shows.
    """
    from wmkit.annotate.config import preset
    from wmkit.annotate.evaluate import evaluate_cameras
    from wmkit.datasets.cameras import Cameras

    clips_dir = Path(clips_dir)
    index = json.loads((clips_dir / "index.json").read_text())
    config = preset("laptop")

    def load(clip_id: str) -> tuple[np.ndarray, float]:
        with np.load(clips_dir / clip_id / "frames.npz") as z:
            return z["frames"], float(z["fps"])

    first = index["clips"][0]["clip_id"]
    annotate_path(load(first)[0], first, clips_dir, config)  # warm-up, not timed
    per_clip = []
    for entry in index["clips"]:
        frames, fps = load(entry["clip_id"])
        started = time.perf_counter()
        path = annotate_path(frames, entry["clip_id"], clips_dir, config)
        path_s = time.perf_counter() - started
        truth = Cameras.load(str(clips_dir / entry["clip_id"] / "cameras.npz"))
        errors = evaluate_cameras(_cameras(path.per_frame.c2w, path.per_frame.K, fps, True), truth)
        per_clip.append({
            **entry,
            "frames": len(frames),
            "path_s": path_s,
            "stage_s": path.stage_s,
            "ba_device": path.per_frame.stats["device"],
            "ate_sim3_m": errors["ate_sim3_m"],
            "focal_err_rel_mean": errors["focal_err_rel_mean"],
            "reproj_error_px": path.per_frame.reproj_error_px,
        })
        print(f"{entry['clip_id']} {len(frames)} frames {path_s:.2f} s ATE {errors['ate_sim3_m']:.4f}", flush=True)
    num_frames = sum(c["frames"] for c in per_clip)
    return {
        "setup": {
            "machine": _machine(),
            "clips_dir": str(clips_dir),
            "clips": index,
            "config": config.to_dict(),
            "timed": "backends, fusion, SIFT tracks, BA of (c) per clip, one process, after one untimed warm-up clip",
            "decode": "excluded: frames were decoded on the CPU machine by --write-clips; throughput with decode "
            "(decode..BA, CPU) is summary.throughput_frames_per_s of bench/results/annotate.json",
            "date": time.strftime("%Y-%m-%d"),
        },
        "clips": per_clip,
        "summary": {
            "throughput_frames_per_s": num_frames / sum(c["path_s"] for c in per_clip),
            "frames": num_frames,
            "ba_device": per_clip[-1]["ba_device"],
            "stage_s": {k: sum(c["stage_s"][k] for c in per_clip) for k in per_clip[0]["stage_s"]},
            "ate_sim3_m": _mean([c["ate_sim3_m"] for c in per_clip]),
        },
    }


def throughput_markdown(result: dict) -> str:
    """One table: frames/s without decode, seconds per stage, and the ATE check."""
    s, cfg = result["summary"], result["setup"]
    index = cfg["clips"]
    stages = " / ".join(f"{k} {v:.2f}" for k, v in s["stage_s"].items())
    return "\n".join([
        f"# Annotation throughput without decode ({cfg['machine']})",
        "",
        f"{len(index['clips'])} synthetic clips, {s['frames']} frames at {index['size'][0]}x{index['size'][1]}, "
        "decoded beforehand by `bench/annotate.py --write-clips` (decode..BA on CPU: `bench/results/annotate.json`).",
        "",
        "| frames/s (backends..BA) | BA device | seconds per stage | ATE Sim(3) m, (c) |",
        "|---|---|---|---|",
        f"| {s['throughput_frames_per_s']:.1f} | {s['ba_device']} | {stages} | {s['ate_sim3_m']:.4f} |",
    ]) + "\n"


# --- the run ---------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarise(clips: list[dict], rss: dict[int, dict], rss_frames: tuple[int, int]) -> dict:
    """The issue's numbers from per-clip results and the two RSS cases."""
    zoom = [c for c in clips if c["zoom"] > 0]
    a_ok = [c for c in clips if "error" not in c["a_colmap"]]
    focal_b = _mean([c["b_single_k"]["focal_err_rel_mean"] for c in zoom])
    focal_c = _mean([c["c_per_frame_k"]["focal_err_rel_mean"] for c in zoom])
    ate_in = _mean([c["input"]["ate_sim3_m"] for c in clips])
    ate_c = _mean([c["c_per_frame_k"]["ate_sim3_m"] for c in clips])
    fused_scale = _mean([c["fused"]["scale_err"] for c in clips])
    short, long = rss_frames
    summary = {
        "focal_err_ratio_single_k_over_per_frame_k": focal_b / focal_c,
        "metric_scale_err": _mean([c["c_per_frame_k"]["scale_err"] for c in clips]),
        "ate_after_ba_over_input": ate_c / ate_in,
        f"rss_ratio_{long}_over_{short}": rss[long]["peak_rss_mb"] / rss[short]["peak_rss_mb"],
        "throughput_frames_per_s": sum(c["frames"] for c in clips) / sum(c["path_s"] for c in clips),
        "metric_scale_err_fused_before_ba": fused_scale,
        "focal_err_zoom": {
            "input": _mean([c["input"]["focal_err_rel_mean"] for c in zoom]),
            "fused": _mean([c["fused"]["focal_err_rel_mean"] for c in zoom]),
            "a_colmap": _mean([c["a_colmap"]["focal_err_rel_mean"] for c in zoom if c in a_ok]),
            "b_single_k": focal_b,
            "c_per_frame_k": focal_c,
        },
        "ate_sim3_m": {
            "input": ate_in,
            "fused": _mean([c["fused"]["ate_sim3_m"] for c in clips]),
            "a_colmap": _mean([c["a_colmap"]["ate_sim3_m"] for c in a_ok]),
            "b_single_k": _mean([c["b_single_k"]["ate_sim3_m"] for c in clips]),
            "c_per_frame_k": ate_c,
        },
        "colmap_registered_clips": f"{len(a_ok)}/{len(clips)}",
    }
    if "rss_ratio_3600_over_600" not in summary:  # the smoke run uses shorter problems
        summary["rss_ratio_3600_over_600"] = None
    summary["goals"] = {
        name: (None if summary[key] is None else bool(_COMPARE[op](summary[key], bound)))
        for name, (key, op, bound) in GOALS.items()
    }
    return summary


def markdown(result: dict) -> str:
    """A table per measure: (a) / (b) / (c) / input, then the goals and memory."""
    s, cfg = result["summary"], result["setup"]
    lines = [
        f"# Annotation benchmark ({cfg['machine']})",
        "",
        f"{cfg['clips']} synthetic clips ({cfg['zoom_clips']} zooming), {cfg['frames']} frames at "
        f"{cfg['size'][0]}x{cfg['size'][1]}; perturbed backends at the noise of `bench/annotate.py::NOISE`.",
        "",
        "| method | ATE Sim(3) m (all) | focal err (zoom clips) |",
        "|---|---|---|",
        f"| backend's own cameras (input) | {s['ate_sim3_m']['input']:.4f} | {s['focal_err_zoom']['input']:.4f} |",
        f"| fused geometry, before BA (metric scale err {s['metric_scale_err_fused_before_ba']:.4f}) "
        f"| {s['ate_sim3_m']['fused']:.4f} | {s['focal_err_zoom']['fused']:.4f} |",
        f"| (a) pycolmap SfM, shared K ({s['colmap_registered_clips']} registered) | {s['ate_sim3_m']['a_colmap']:.4f} "
        f"| {s['focal_err_zoom']['a_colmap']:.4f} |",
        f"| (b) our BA, one K per video | {s['ate_sim3_m']['b_single_k']:.4f} | {s['focal_err_zoom']['b_single_k']:.4f} |",
        f"| (c) our BA, per-frame K | {s['ate_sim3_m']['c_per_frame_k']:.4f} | {s['focal_err_zoom']['c_per_frame_k']:.4f} |",
        "",
        "| summary | value | goal | met |",
        "|---|---|---|---|",
    ]
    for name, (key, op, bound) in GOALS.items():
        value = s[key]
        shown = "-" if value is None else f"{value:.4f}"
        lines.append(f"| `{key}` | {shown} | {op} {bound} ({name}) | {s['goals'][name]} |")
    lines += [
        f"| throughput (frames/s, decode..BA, one process) | {s['throughput_frames_per_s']:.1f} | - | - |",
        "",
        "| BA memory case | frames | observations | peak RSS MiB | before BA MiB | BA s | centre err m |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in result["memory"].values():
        lines.append(
            f"| track problem | {case['frames']} | {case['observations']} | {case['peak_rss_mb']:.0f} | "
            f"{case['peak_rss_before_ba_mb']:.0f} | {case['ba_s']:.1f} | {case['centre_err_median_m']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    """CPU, torch and GPU of this machine, for a results header."""
    import torch

    return (
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")
    )


def run(clips: int, frames: int, size: tuple[int, int], rss_frames: tuple[int, int], work: Path) -> dict:
    """The whole benchmark; returns the results dict (setup, per-clip, memory, summary)."""
    from wmkit.annotate.config import preset
    from wmkit.annotate.synthetic_scenes import DEFAULT_ZOOM, write_synthetic_source

    manifest = write_synthetic_source(work, clips, num_frames=frames, width=size[0], height=size[1], zoom_every=2)
    config = preset("laptop")
    per_clip = []
    for row in manifest.to_dict("records"):
        per_clip.append(evaluate_clip(row, work / "gt", config))
        c = per_clip[-1]
        print(
            f"{c['clip_id']} zoom={c['zoom']:.2f} ATE in={c['input']['ate_sim3_m']:.4f} "
            f"c={c['c_per_frame_k']['ate_sim3_m']:.4f} focal b={c['b_single_k']['focal_err_rel_mean']:.4f} "
            f"c={c['c_per_frame_k']['focal_err_rel_mean']:.4f} scale={c['c_per_frame_k']['scale_err']:.4f}",
            flush=True,
        )
    memory = {n: measure_rss(n) for n in rss_frames}
    return {
        "setup": {
            "machine": _machine(),
            "clips": clips,
            "zoom_clips": int((manifest["extra"].map(lambda e: json.loads(e)["zoom"]) > 0).sum()),
            "zoom": DEFAULT_ZOOM,
            "frames": frames,
            "size": list(size),
            "noise": NOISE,
            "config": config.to_dict(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "clips": per_clip,
        "memory": {str(k): v for k, v in memory.items()},
        "summary": summarise(per_clip, memory, rss_frames),
    }


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (folders made, one final newline)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + ("\n" if not text.endswith("\n") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, help=f"number of clips: 20, or {WRITE_CLIPS} with --write-clips")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument(
        "--smoke", action="store_true", help="2 clips of 12 frames at 128x80 (also --write-clips), 120/240-frame RSS"
    )
    parser.add_argument("--write-clips", metavar="DIR", help="render and decode throughput clips into DIR, then stop")
    parser.add_argument("--read-clips", metavar="DIR", help="only the throughput, without decode, on DIR's clips")
    parser.add_argument("--json", help="default bench/results/annotate.json (annotate_throughput.json: --read-clips)")
    parser.add_argument("--md", help="default bench/results/annotate.md (annotate_throughput.md: --read-clips)")
    parser.add_argument("--rss-case", type=int, help=argparse.SUPPRESS)  # internal: one memory case, JSON on stdout
    args = parser.parse_args(argv)
    if args.rss_case:
        print(json.dumps(_rss_case(args.rss_case)))
        return 0
    if args.write_clips:
        if args.smoke:
            clips, frames, size = 2, 12, (128, 80)
        else:
            clips, frames, size = args.clips or WRITE_CLIPS, args.frames, (160, 96)
        index = write_clips(Path(args.write_clips), clips, frames, size)
        total = sum(f.stat().st_size for f in Path(args.write_clips).rglob("*") if f.is_file())
        shape = f"{len(index['clips'])} clips x {frames} frames at {size[0]}x{size[1]}"
        print(f"{shape}: {total / 1e6:.1f} MB in {args.write_clips}")
        return 0
    if args.read_clips:
        result = measure_throughput(Path(args.read_clips))
        text = throughput_markdown(result)
        _write(args.json or "bench/results/annotate_throughput.json", json.dumps(result, indent=1, default=float))
        _write(args.md or "bench/results/annotate_throughput.md", text)
        print(text)
        return 0
    if args.smoke:
        clips, frames, size, rss_frames = 2, 12, (128, 80), (120, 240)
    else:
        clips, frames, size, rss_frames = args.clips or 20, args.frames, (160, 96), (600, 3600)
    with tempfile.TemporaryDirectory(prefix="wmkit-bench-annotate-") as tmp:
        result = run(clips, frames, size, rss_frames, Path(tmp))
    _write(args.json or "bench/results/annotate.json", json.dumps(result, indent=1, default=float))
    _write(args.md or "bench/results/annotate.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
