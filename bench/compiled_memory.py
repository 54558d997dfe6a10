"""Does compiling the checkpointed blocks raise a training step's transient memory? A CPU check
before the GPU run of `bench/train.py`'s `_compiled` cases (issue 4), on the model of
`bench/activation_memory.py`: two 2.6b-width blocks (one GDN, one softmax) in bf16, AC keeping
the attention outputs, the FFN recomputed one frame at a time, the GDN kernels stood in by
allocations of their shapes (`_stand_in_gdn_kernels`), 720p latent frames (22 × 40 tokens).

Per case (eager or inductor-compiled blocks, F latent frames), in a fresh process: one step to
warm up (and compile), one timed step, and one step under torch.profiler's memory recording,
whose peak of live CPU-allocator bytes above its start is the step's transient memory (the
gradients of the first step are kept, so they are not counted). The summary is the growth per
latent frame from the shortest to the longest clip, eager and compiled.

Usage::

    python bench/compiled_memory.py                      # frames 4 and 8: ~16 min on 2 cores
    python bench/compiled_memory.py --frames 2 --json /tmp/m.json --md /tmp/m.md
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def peak_live_bytes(run: Callable[[], object]) -> int:
    """The most bytes `run()` held allocated at once above what was allocated when it began: the
    CPU allocator's allocations and frees in order, as torch.profiler records them (inductor's
    generated code allocates through the same allocator, unlike what a dispatch mode would see)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    changes = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure(compiled: bool, frames: int, ffn_frame_chunk: int | None = 1) -> dict:
    """The case in this process: first and second step seconds, the third step's transient bytes."""
    from wmkit.bench.activation_memory import GRID, _stand_in_gdn_kernels, two_block_step

    _, step_loss = two_block_step(frames, True, compile_blocks=compiled, ffn_frame_chunk=ffn_frame_chunk,
                                  keep_attention=True)

    def step() -> None:
        step_loss().backward()

    with _stand_in_gdn_kernels():
        t0 = time.perf_counter()
        step()
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        step()
        step_s = time.perf_counter() - t0
        transient = peak_live_bytes(step)
    return {"blocks": "compiled" if compiled else "eager", "frames": frames, "ffn_frame_chunk": ffn_frame_chunk,
            "tokens": frames * GRID[0] * GRID[1], "first_step_s": first_s, "step_s": step_s, "transient_bytes": transient}


def _case_in_child(compiled: bool, frames: int, ffn_frame_chunk: int | None) -> dict:
    """`measure` in a fresh interpreter (allocator and compile caches start clean)."""
    code = ("import json; from wmkit.bench.compiled_memory import measure; "
            f"print(json.dumps(measure({compiled}, {frames}, {ffn_frame_chunk})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"case compiled={compiled} frames={frames} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8], help="latent frames of the clips")
    parser.add_argument("--blocks", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    parser.add_argument("--ffn-frame-chunk", type=int, default=1, help="FFN recomputed this many frames at a time (0: whole clip)")
    parser.add_argument("--json", default="bench/results/compiled_memory_cpu.json")
    parser.add_argument("--md", default="bench/results/compiled_memory_cpu.md")
    args = parser.parse_args()
    import torch

    chunk = args.ffn_frame_chunk or None
    cases = [_case_in_child(blocks == "compiled", f, chunk) for f in args.frames for blocks in args.blocks]
    for c in cases:
        print(f"{c['blocks']:<9} {c['frames']:>3} frames: transient {c['transient_bytes'] / 1e9:.3f} GB, "
              f"step {c['step_s']:.1f} s", flush=True)
    lo, hi = min(args.frames), max(args.frames)
    per_frame = {}
    if hi > lo:
        for blocks in args.blocks:
            by = {c["frames"]: c["transient_bytes"] for c in cases if c["blocks"] == blocks}
            per_frame[blocks] = (by[hi] - by[lo]) / (hi - lo)
    summary = {"transient_per_frame_bytes": per_frame,
               "compiled_over_eager": per_frame["compiled"] / per_frame["eager"] if len(per_frame) == 2 else None,
               "ffn_frame_chunk": chunk,
               "device": platform.processor() or "cpu", "torch": torch.__version__}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "cases": cases}, indent=1))
    rows = ["| blocks | latent frames | tokens | transient (GB) | step (s) |", "|---|---|---|---|---|"]
    rows += [f"| {c['blocks']} | {c['frames']} | {c['tokens']} | {c['transient_bytes'] / 1e9:.3f} | "
             f"{c['step_s']:.1f} |" for c in cases]
    if per_frame:
        rows.append("")
        rows += [f"Growth per latent frame: {b} {v / 1e9:.3f} GB" for b, v in per_frame.items()]
    Path(args.md).write_text("\n".join(rows) + "\n")
    print(f"wrote {args.json} and {args.md}")


if __name__ == "__main__":
    main()
