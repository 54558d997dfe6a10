"""Render benchmark (issue 8): a 961-frame 720p path through a generated DL3DV-sized splat scene.

Correctness first, then speed:

    parity    gsplat vs the plain-torch reference on a small generated room (3,000
              Gaussians, SH degree 3, 4 training views at 160 x 120): PSNR of the float RGB.
              Without CUDA (``--smoke`` on CPU) gsplat is absent and the reference in
              float32 is compared with itself in float64 instead (``parity_against`` says
              which), which bounds the reference's own rounding, not gsplat's.
    case      ``make_room_scene`` with >= 1 M Gaussians (SH degree 3) in a 12 x 8 x 3 m room,
              the Gaussians shuffled (a trained PLY's order carries no meaning; the
              planner's coverage check takes the most opaque first, stable in file order);
              one path of 961 frames at 16 fps, 1280 x 720, timed by stage:
                plan    plan_path (keys, splines, re-timing, clearance, coverage; the
                        rendered-alpha check with gsplat, as the pipeline runs it); the
                        coverage check is timed once more alone (``plan_coverage_check_s``)
                render  render_frames through gsplat (splats already on the GPU; a 1-frame
                        warm-up first, which also builds gsplat's CUDA extension)
                encode  encode_mp4 with the pipeline's x264 settings (RenderConfig defaults)
              ``render_961_720p_s`` = plan + render + encode (goal < 15 s on an H100).
    refiner   with ``--refiner FOLDER`` (or ``random:sd-turbo``: random weights in the
              SD-Turbo architecture DiFix3D uses): frames/s of Refiner.refine on the first
              frames of the path (after a warm-up batch).
    cpu ref   frames/s of the reference rasterizer on the ``render_demo`` scene (2,000
              Gaussians, 160 x 96) on this machine's CPU.
    memory    peak GPU memory (torch.cuda.max_memory_allocated) of the case; peak RSS.

Usage::

    python bench/render.py                                   # H100: the full case (needs CUDA + gsplat)
    python bench/render.py --refiner /weights/difix          # plus refiner frames/s
    python bench/render.py --refiner random:sd-turbo         # the same on random SD-Turbo-sized weights
    python bench/render.py --smoke                           # CPU: reference rasterizer, 4,000 Gaussians, 9 frames
    python bench/render.py --smoke --json bench/results/render_cpu.json --md bench/results/render_cpu.md

Writes JSON with a top-level ``summary`` {render_961_720p_s, refiner_fps,
cpu_ref_parity_psnr_db, device, ...} and a markdown table. In ``--smoke``
mode the case is small and ``summary.case`` says so: its
``render_961_720p_s`` is that small case's plan + render + encode time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wmkit.datasets.cameras import invert_rigid, scale_intrinsics
from wmkit.datasets.video import encode_mp4
from wmkit.render.frames import Rasterizer, SceneTensors, pick_rasterizer, render_frames
from wmkit.render.path_planner import PathConfig, plan_path, view_coverage
from wmkit.render.pipeline import RenderConfig, planner_rasterize
from wmkit.render.scenes import Scene
from wmkit.render.synthetic_room import make_room_scene

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_timing import sync  # noqa: E402  (bench/device_timing.py)

GOAL_S = 15.0  # issue 8: plan + render + encode of 961 frames at 720p, before the refiner
PSNR_CAP_DB = 200.0  # identical renders would give infinity; reported as this instead


@dataclass(frozen=True)
class Case:
    """One timed case: scene size and path shape."""

    num_gaussians: int
    frames: int
    width: int
    height: int
    room: tuple[float, float, float] = (12.0, 8.0, 3.0)
    num_boxes: int = 6
    sh_degree: int = 3


FULL = Case(num_gaussians=1_200_000, frames=961, width=1280, height=720)
SMOKE = Case(num_gaussians=4000, frames=9, width=64, height=48, room=(6.0, 4.0, 2.6), num_boxes=3)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1], capped at :data:`PSNR_CAP_DB`."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse <= 10 ** (-PSNR_CAP_DB / 10) else 10 * math.log10(1.0 / mse)


def _rgb(rasterize, device: str, dtype: torch.dtype, scene: Scene, c2w: np.ndarray, K: np.ndarray,
         size: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Float RGB (C, H, W, 3) in [0, 1] of ``scene`` through ``rasterize`` with tensors of ``dtype`` on ``device``."""
    s = scene.splats

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

    with torch.no_grad():
        colors, _, _ = rasterize(tensor(s.means), tensor(s.quats), tensor(s.scales), tensor(s.opacities),
                                 tensor(s.sh), tensor(invert_rigid(c2w)), tensor(K), size[0], size[1],
                                 sh_degree=s.sh_degree, render_mode="RGB")  # fmt: skip
    return colors.clamp(0, 1).double().cpu().numpy()


def parity(gpu: Rasterizer | None) -> dict:
    """gsplat vs reference PSNR on a small room (module docstring); reference fp32 vs fp64 without gsplat."""
    from wmkit.render.reference_rasterizer import rasterization

    scene, _ = make_room_scene(seed=0, num_gaussians=3000, sh_degree=3)
    size = (160, 120)
    cams = scene.cameras.select(slice(0, None, 6))  # 4 views round the ring
    K = scale_intrinsics(cams.K, (scene.width, scene.height), size)
    reference = _rgb(rasterization, "cpu", torch.float32, scene, cams.c2w, K, size)
    if gpu is not None:
        other, against = _rgb(gpu.rasterize, gpu.device, torch.float32, scene, cams.c2w, K, size), gpu.name
    else:
        other, against = _rgb(rasterization, "cpu", torch.float64, scene, cams.c2w, K, size), "reference float64"
    return {"psnr_db": _psnr(reference, other), "parity_against": against, "views": len(cams), "size": list(size),
            "num_gaussians": len(scene.splats)}  # fmt: skip


def make_case_scene(case: Case) -> Scene:
    """The case's generated room, Gaussians shuffled (module docstring)."""
    import dataclasses

    scene, _ = make_room_scene(seed=0, size=case.room, num_boxes=case.num_boxes, num_gaussians=case.num_gaussians,
                               sh_degree=case.sh_degree)  # fmt: skip
    order = np.random.default_rng(0).permutation(len(scene.splats))
    return dataclasses.replace(scene, splats=scene.splats.select(order))


def time_case(case: Case, rasterizer: Rasterizer, config: RenderConfig) -> tuple[dict, np.ndarray]:
    """Plan, render and encode one path of ``case``; the timings and the rendered frames."""
    scene = make_case_scene(case)
    device = torch.device(rasterizer.device)
    cfg = PathConfig(num_frames=case.frames, width=case.width, height=case.height)
    t0 = time.perf_counter()
    path = plan_path(scene, seed=0, cfg=cfg, rasterize=planner_rasterize(config, rasterizer))
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()  # the coverage check alone, once more: how much of plan_s it is
    view_coverage(scene, path.cameras.c2w, path.cameras.K, case.width, case.height, cfg.coverage_grid)
    coverage_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tensors = SceneTensors.from_splats(scene.splats, rasterizer.device)
    sync(device)
    upload_s = time.perf_counter() - t0
    size = (case.width, case.height)
    t0 = time.perf_counter()
    render_frames(tensors, path.cameras.select(slice(0, 1)), size, rasterizer=rasterizer)  # warm-up (gsplat JIT build)
    sync(device)
    warmup_s = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    frames = render_frames(tensors, path.cameras, size, rasterizer=rasterizer, batch_size=config.batch_size,
                           depth_stride=config.depth_stride)  # fmt: skip
    sync(device)
    render_s = time.perf_counter() - t0
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    t0 = time.perf_counter()
    mp4 = encode_mp4(frames.rgb, cfg.fps, config.crf, config.preset, threads=config.encode_threads)
    encode_s = time.perf_counter() - t0
    sweep = {}  # x264 threads vs encode time on the first frames, for choosing RenderConfig.encode_threads
    for threads in (4, 8, 16):
        t0 = time.perf_counter()
        encode_mp4(frames.rgb[:240], cfg.fps, config.crf, config.preset, threads=threads)
        sweep[str(threads)] = time.perf_counter() - t0
    timings = {
        "num_gaussians": len(scene.splats),
        "frames": case.frames,
        "size": [case.width, case.height],
        "rasterizer": rasterizer.name,
        "plan_s": plan_s,
        "plan_attempt": path.attempt,
        "plan_coverage_check_s": coverage_s,
        "upload_s": upload_s,
        "warmup_s": warmup_s,
        "render_s": render_s,
        "render_fps": case.frames / render_s,
        "encode_s": encode_s,
        "encode": {"preset": config.preset, "crf": config.crf, "threads": config.encode_threads, "mp4_mb": len(mp4) / 2**20,
                   "seconds_240_frames_by_threads": sweep},
        "total_s": plan_s + render_s + encode_s,
        "peak_gpu_gb": peak_gpu,
        "mean_alpha": float(frames.alpha.mean()),
    }
    return timings, frames.rgb


def refiner_fps(folder: str, frames: np.ndarray, device: str, batch_size: int) -> dict:
    """Frames/s of the refiner on ``frames`` (uint8 [T, H, W, 3]) after one warm-up batch.

    ``folder`` ``random:SIZE`` (``tiny`` or ``sd-turbo``) writes random weights in that
    architecture to a temporary folder first (speed does not depend on the values)."""
    from wmkit.render.random_refiner import write_random_refiner
    from wmkit.render.refiner import load_refiner

    random_size = folder.removeprefix("random:") if folder.startswith("random:") else None
    if random_size:
        folder = write_random_refiner(Path(tempfile.mkdtemp(prefix="refiner_")) / random_size, random_size)
    refiner = load_refiner(folder, device=device, batch_size=batch_size)
    refiner.refine(frames[:batch_size])
    sync(torch.device(device))
    t0 = time.perf_counter()
    refiner.refine(frames)
    sync(torch.device(device))
    seconds = time.perf_counter() - t0
    return {"frames": len(frames), "size": [frames.shape[2], frames.shape[1]], "batch_size": batch_size,
            "seconds": seconds, "fps": len(frames) / seconds, "random_weights": random_size,
            "refiner": refiner.provenance()}  # fmt: skip


def cpu_reference_fps(frames: int) -> dict:
    """Frames/s of the reference rasterizer on the render_demo scene (2,000 Gaussians, 160 x 96) on CPU."""
    scene, _ = make_room_scene(seed=0, num_gaussians=2000)
    cfg = PathConfig(num_frames=frames, width=160, height=96)
    path = plan_path(scene, seed=0, cfg=cfg)
    t0 = time.perf_counter()
    render_frames(scene.splats, path.cameras, (160, 96), rasterizer=pick_rasterizer("reference"), depth_stride=2)
    seconds = time.perf_counter() - t0
    return {"frames": frames, "size": [160, 96], "num_gaussians": len(scene.splats), "seconds": seconds,
            "fps": frames / seconds, "torch_threads": torch.get_num_threads()}  # fmt: skip


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def run(smoke: bool, refiner: str | None) -> dict:
    """The whole benchmark; the results dict (setup, parity, case, refiner, cpu_reference, summary)."""
    case = SMOKE if smoke else FULL
    rasterizer = pick_rasterizer("reference" if smoke else "gsplat")
    gpu = rasterizer if rasterizer.device == "cuda" else None
    config = RenderConfig()
    checks = parity(gpu)
    print(f"parity vs {checks['parity_against']}: {checks['psnr_db']:.2f} dB", flush=True)
    timings, rgb = time_case(case, rasterizer, config)
    print(f"case: plan {timings['plan_s']:.2f} s, render {timings['render_s']:.2f} s, encode {timings['encode_s']:.2f} s",
          flush=True)  # fmt: skip
    refined = refiner_fps(refiner, rgb[: (4 if smoke else 64)], rasterizer.device, 2 if smoke else 8) if refiner else None
    cpu = cpu_reference_fps(4 if smoke else 16)
    print(f"cpu reference: {cpu['fps']:.2f} frames/s", flush=True)
    case_name = f"{case.frames} frames {case.width}x{case.height}, {timings['num_gaussians']} Gaussians, {rasterizer.name}"
    return {
        "setup": {
            "device": _device(),
            "torch": torch.__version__,
            "smoke": smoke,
            "date": time.strftime("%Y-%m-%d"),
            "render_config": config.to_dict(),
        },
        "parity": checks,
        "case": timings,
        "refiner": refined,
        "cpu_reference": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "summary": {
            "render_961_720p_s": timings["total_s"],
            "refiner_fps": refined["fps"] if refined else None,
            "cpu_ref_parity_psnr_db": checks["psnr_db"],
            "device": _device(),
            "case": ("smoke: " if smoke else "") + case_name,
            "parity_against": checks["parity_against"],
            "plan_s": timings["plan_s"],
            "render_s": timings["render_s"],
            "encode_s": timings["encode_s"],
            "peak_gpu_gb": timings["peak_gpu_gb"],
            "cpu_ref_fps": cpu["fps"],
            "goal_s": GOAL_S,
            "goal_met": None if smoke else timings["total_s"] < GOAL_S,
        },
    }


def markdown(result: dict) -> str:
    """The summary and the case's stages as tables."""
    s, c, cpu, p = result["summary"], result["case"], result["cpu_reference"], result["parity"]

    def num(x: float | None, fmt: str = ".2f") -> str:
        return "-" if x is None else format(x, fmt)

    lines = [
        f"# Render benchmark ({s['device']}, {result['setup']['date']})",
        "",
        f"Case: {s['case']}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| plan + render + encode (`render_961_720p_s`) | {num(s['render_961_720p_s'])} s "
        f"(goal < {GOAL_S:.0f} s on an H100{'' if s['goal_met'] is None else ', met' if s['goal_met'] else ', not met'}) |",
        f"| plan (planner: keys, splines, clearance, coverage) | {num(c['plan_s'])} s (attempt {c['plan_attempt']}; "
        f"the coverage check alone: {num(c['plan_coverage_check_s'])} s per attempt) |",
        f"| render ({c['rasterizer']}) | {num(c['render_s'])} s ({num(c['render_fps'], '.1f')} frames/s) |",
        f"| encode (x264 {c['encode']['preset']}, crf {c['encode']['crf']}, {c['encode']['threads']} threads) "
        f"| {num(c['encode_s'])} s ({num(c['encode']['mp4_mb'], '.1f')} MiB) |",
        f"| splat upload / first-call warm-up | {num(c['upload_s'])} s / {num(c['warmup_s'])} s |",
        f"| peak GPU memory (render) | {num(c['peak_gpu_gb'])} GiB |",
        f"| peak RSS | {num(result['peak_rss_mb'], '.0f')} MiB |",
        f"| refiner (`refiner_fps`) | {num(s['refiner_fps'], '.1f')} frames/s |",
        f"| parity PSNR vs {p['parity_against']} (`cpu_ref_parity_psnr_db`) | {num(p['psnr_db'])} dB "
        f"({p['views']} views {p['size'][0]}x{p['size'][1]}, {p['num_gaussians']} Gaussians) |",
        f"| CPU reference, render_demo scene ({cpu['num_gaussians']} Gaussians, 160x96) | "
        f"{num(cpu['fps'])} frames/s |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU: reference rasterizer, small scene, 9 frames")
    parser.add_argument("--refiner", help="DiFix3D-style refiner folder, or random:tiny / random:sd-turbo "
                        "(random weights in that architecture): also measure its frames/s")
    parser.add_argument("--json", default="bench/results/render.json")
    parser.add_argument("--md", default="bench/results/render.md")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bench/render.py: the full case needs CUDA and gsplat; use --smoke on CPU", file=sys.stderr)
        return 2
    result = run(args.smoke, args.refiner)
    for path, text in ((args.json, json.dumps(result, indent=1)), (args.md, markdown(result))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text if text.endswith("\n") else text + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
