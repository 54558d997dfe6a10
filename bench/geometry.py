"""Throughput and memory of the geometry networks (issue 6): Pi3X and MoGe-2 over videos.

Random weights in the published architectures (speed does not depend on the
values), random uint8 frames, the real inference paths of the annotation
backends: :func:`~wmkit.annotate.geometry.pi3x_inference.run_windows`
(windows of 16, overlap 6, Sim(3) chaining, K from points) and
:func:`~wmkit.annotate.geometry.moge2_infer.iter_moge2` (batches of 8,
resolution level 9 = 3,600 ViT tokens). On CUDA both run under bf16 autocast.

Cases, each for eager and ``torch.compile``d networks:

- ``fps`` — frames/s at two input sizes: ``518`` (518 x 294 frames, 16:9 at
  Pi3X's native 518 px width) and ``720p`` (1280 x 720); the time includes the
  resize on the device and copying results to the host, as the backends do.
  The first window/batch is a warm-up and is not timed; a compiled network first
  runs the whole case once untimed, so that every window shape (Pi3X's shorter
  tail window too) is compiled before the clock starts.
- ``long`` — a 1,000-frame 720p clip streamed from a generator: peak device
  memory (``torch.cuda.max_memory_allocated``; peak RSS on CPU) and frames/s,
  showing memory flat in video length. A compiled network's long-clip time
  includes compiling its tail window (a shape the fps cases did not meet).

Usage::

    python bench/geometry.py                       # on an H100/H200: writes bench/results/geometry.json + .md
    python bench/geometry.py --smoke --out /tmp/g.json   # CPU: tiny configs, a few frames (tested)

The ``summary`` holds ``pi3x_fps_518``, ``moge2_fps_518`` (eager), their
``_compiled`` twins, the 720p figures, ``long_clip_peak_mem_gb`` per network
and ``device``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from wmkit.annotate.geometry.moge2_config import MoGe2Config
from wmkit.annotate.geometry.moge2_infer import iter_moge2
from wmkit.annotate.geometry.moge2_model import MoGe2Model
from wmkit.annotate.geometry.pi3x_inference import WindowConfig, run_windows
from wmkit.annotate.geometry.pi3x_model import Pi3X, Pi3XConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotate import peak_rss_mb  # noqa: E402  (bench/annotate.py: VmHWM, not ru_maxrss)
from device_timing import sync, top_operators  # noqa: E402  (bench/device_timing.py)

SIZES = {"518": (294, 518), "720p": (720, 1280)}  # (H, W)
SMOKE_SIZES = {"518": (42, 74), "720p": (72, 128)}


def _frames(count: int, hw: tuple[int, int], seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` random uint8 RGB frames, generated one at a time (a decoder's memory profile)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    for i in range(count):
        yield np.roll(base, 3 * i, axis=1)


def _peak_memory_gb(device: torch.device) -> float:
    """Peak device memory since the last reset (CUDA), else this process's peak RSS, in GB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return peak_rss_mb() * 2**20 / 1e9


def _stream(net: str, model: torch.nn.Module, frames: Iterator[np.ndarray], smoke: bool) -> Iterator[int]:
    """Run one network over ``frames``; yield the number of frames finished after each network call."""
    if net == "pi3x":
        window = WindowConfig(window=4, overlap=2, pixel_budget=56 * 98) if smoke else WindowConfig()
        for _ in run_windows(model, frames, window):
            yield 1
    else:
        for out in iter_moge2(model, frames, batch_size=2 if smoke else 8, resolution_level=9):
            yield len(out.depth)


def time_stream(net: str, model: torch.nn.Module, count: int, hw: tuple[int, int], warmup: int,
                smoke: bool) -> dict:
    """Frames/s over ``count`` frames after ``warmup`` frames, and the peak memory of the whole run."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, started = 0, None
    for finished in _stream(net, model, _frames(warmup + count, hw), smoke):
        done += finished
        if started is None and done >= warmup:
            sync(device)
            started, done = time.perf_counter(), 0
    sync(device)
    seconds = time.perf_counter() - started
    return {"frames": done, "seconds": round(seconds, 3), "fps": done / seconds,
            "peak_mem_gb": round(_peak_memory_gb(device), 3)}


def build(net: str, smoke: bool, device: torch.device, compiled: bool) -> torch.nn.Module:
    """A random-weight network in eval mode on ``device`` (the published architecture unless ``smoke``)."""
    torch.manual_seed(0)
    if net == "pi3x":
        model: torch.nn.Module = Pi3X(Pi3XConfig.tiny() if smoke else Pi3XConfig())
    else:
        model = MoGe2Model(MoGe2Config.tiny() if smoke else MoGe2Config.vitl())
    model = model.to(device).eval()
    return torch.compile(model, dynamic=False) if compiled else model


def profile_table(net: str, model: torch.nn.Module, hw: tuple[int, int], smoke: bool) -> str:
    """torch.profiler's top operators by device time (CPU time without CUDA) over one window/batch
    after a warm-up one: where a network's time goes."""
    device = next(model.parameters()).device
    per_call = 4 if smoke else (16 if net == "pi3x" else 8)
    for _ in _stream(net, model, _frames(per_call, hw), smoke):
        pass
    return top_operators(lambda: list(_stream(net, model, _frames(per_call, hw, seed=1), smoke)), device, row_limit=20)


def _case(fn: Callable[..., dict], *args: object) -> dict:
    """Run ``fn(*args)``; an error (out of memory, a compile failure) is recorded, not raised."""
    try:
        return fn(*args)
    except (RuntimeError, ValueError) as err:
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def run(smoke: bool, long_frames: int, fps_frames: int, compile_modes: tuple[bool, ...],
        nets: tuple[str, ...] = ("pi3x", "moge2"), profile: bool = False,
        save: Callable[[dict], None] | None = None) -> dict:
    """Every case for ``nets``; returns the result with its ``summary`` (and ``profiles`` when asked).
    ``save`` gets the result so far after each case (a run cut short keeps what it measured)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = SMOKE_SIZES if smoke else SIZES
    cases, profiles = [], {}

    def result() -> dict:
        return {"summary": summarise(cases, device), "smoke": smoke, "torch": torch.__version__,
                "platform": platform.platform(), "long_frames": long_frames, "fps_frames": fps_frames,
                "sizes_hw": sizes, "cases": cases, "profiles": profiles}

    def done(case: dict) -> None:
        cases.append(case)
        print(json.dumps(case), flush=True)
        if save is not None:
            save(result())
    for net in nets:
        warmup = (4 if smoke else 16) if net == "pi3x" else (2 if smoke else 8)
        if profile:
            profiles[net] = profile_table(net, build(net, smoke, device, False), sizes["518"], smoke)
            print(f"{net} profile, one {'window' if net == 'pi3x' else 'batch'} at 518:\n{profiles[net]}", flush=True)
        for compiled in compile_modes:
            model = build(net, smoke, device, compiled)
            for size, hw in sizes.items():
                if compiled:  # compile every shape of the case before timing it
                    _case(time_stream, net, model, fps_frames, hw, warmup, smoke)
                timed = _case(time_stream, net, model, fps_frames, hw, warmup, smoke)
                done({"net": net, "case": "fps", "size": size, "compiled": compiled, **timed})
            timed = _case(time_stream, net, model, long_frames, sizes["720p"], warmup, smoke)
            done({"net": net, "case": "long", "size": "720p", "compiled": compiled, **timed})
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return result()


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"


def summarise(cases: list[dict], device: torch.device) -> dict:
    """The issue's summary numbers (None where a case did not run or failed)."""
    def pick(net: str, case: str, size: str, compiled: bool, key: str) -> float | None:
        for c in cases:
            if (c["net"], c["case"], c["size"], c["compiled"]) == (net, case, size, compiled):
                return c.get(key)
        return None

    summary: dict = {"device": _device_name(device)}
    for net in ("pi3x", "moge2"):
        for size in SIZES:
            summary[f"{net}_fps_{size}"] = pick(net, "fps", size, False, "fps")
            summary[f"{net}_fps_{size}_compiled"] = pick(net, "fps", size, True, "fps")
        summary[f"{net}_long_clip_peak_mem_gb"] = pick(net, "long", "720p", False, "peak_mem_gb")
    return summary


def markdown(result: dict) -> str:
    """The README table of ``result``."""
    s = result["summary"]
    lines = [f"Geometry networks on {s['device']} (random weights, published architectures"
             f"{', SMOKE: tiny configs' if result['smoke'] else ''}; torch {result['torch']}).", "",
             "| network | case | input | compiled | frames/s | peak memory GB |", "|---|---|---|---|---:|---:|"]
    for c in result["cases"]:
        fps = f"{c['fps']:.1f}" if "fps" in c else c.get("error", "")
        lines.append(f"| {c['net']} | {c['case']} ({c.get('frames', '')} frames) | {c['size']} | "
                     f"{'yes' if c['compiled'] else 'no'} | {fps} | {c.get('peak_mem_gb', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny configs and frames on CPU (for tests)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/geometry.json"))
    parser.add_argument("--long-frames", type=int, default=None, help="frames of the long clip (default 1000)")
    parser.add_argument("--fps-frames", type=int, default=None, help="timed frames per fps case (default 64)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    parser.add_argument("--nets", default="pi3x,moge2", help="comma-separated networks to measure")
    parser.add_argument("--profile", action="store_true", help="first print each network's top operators")
    args = parser.parse_args(argv)
    long_frames = args.long_frames or (6 if args.smoke else 1000)
    fps_frames = args.fps_frames or (3 if args.smoke else 64)
    modes = (False,) if args.no_compile or args.smoke else (False, True)
    nets = tuple(n for n in args.nets.split(",") if n)
    if set(nets) - {"pi3x", "moge2"}:
        parser.error(f"--nets: unknown network in {args.nets!r} (pi3x, moge2)")
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result))

    print(markdown(run(args.smoke, long_frames, fps_frames, modes, nets, args.profile, save)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
