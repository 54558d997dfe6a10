"""Benchmark of the trainer (issue 4): one 2.6b step with activation checkpointing on one GPU,
and tiny/small runs from latent shards for samples/s and input-pipeline stall.

Usage::

    python bench/train.py                           # on an H100: writes bench/results/train.json
    python bench/train.py --smoke --out /tmp/t.json # CPU: tiny model at small shapes, a few steps

Cases:

- `step_2p6b` — the 2.6b preset, one 61-s 720p clip per step: 121 latent frames × 22 × 40 =
  880 tokens (704×1280 px), AdamW, FSDP2's bf16 mixed precision on one process (fp32 weights,
  gradients and AdamW states, fused AdamW; bf16 blocks and AC inputs; no autocast), AC per
  block that keeps the self-attention outputs (`keep_attention`) with the FFN recomputed
  inside it in chunks of `--ffn-frame-chunk` frames (`bench/activation_memory.py` counts what
  each saves). Before timing, the loss and
  every gradient must be finite (no speed is reported on a red gate). Reported: step time,
  tokens/s, peak memory (against the article's 74.7 GB), and MFU = model FLOPs / (step time
  × 989 TFLOP/s, the H100 SXM dense bf16 peak). Model FLOPs per step (`model_flops`):
  6·N·tokens for the dense part (Kaplan et al. 2020 / PaLM appendix B; recomputation by AC
  is not counted), plus 3× the forward attention FLOPs: softmax blocks 4·N_tok²·C per branch
  (QKᵀ and AV), GDN blocks per frame and head 2·S·D²·5 (three Gram products, the forward and
  reverse outputs) + 4·D³ (state and normaliser updates), main and camera branch each.
  A bf16 8192² matmul is timed in the same run as the achievable ceiling (`matmul_tflops`).
  On a GPU larger than an H100 the case's allocator is capped at `--memory-cap-gb` (80 GB,
  below the H100's 85 GB), so "fits" means fits on an H100; `--profile` adds the top operators
  of one step by GPU time (where the step's time goes). A case name ending in `_compiled`
  (`121f_adamw_compiled`) also `torch.compile`s each checkpointed block whole (inductor fuses
  the elementwise work; the GDN op is an opaque custom op; `train.parallel.parallelize`).
  Timed: the median of 5 steps after one warm-up step, with Python's automatic garbage
  collector off as in the trainer (`trainer.manual_gc`); `first_step_s` is the gate step,
  compilation included.
- `loader_tiny`, `loader_small` — `wmkit.train.train` on generated latent shards: samples/s
  and the fraction of step time spent waiting for data (goal: below 5 %).

The `summary` holds `mfu_2p6b`, `peak_mem_gb_2p6b` (of the fastest AdamW case, named by
`case_2p6b`), `loader_stall_fraction` (worst case) and `device`. With `--smoke` the "2p6b"
step runs the tiny preset at a small shape on CPU (to keep this script tested), marked by
`"smoke": true`.
"""

from __future__ import annotations

import argparse
import json
import platform
import queue as queue_module
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wmkit.datasets.cameras import Cameras
from wmkit.datasets.sample import Sample
from wmkit.datasets.shard_writer import ShardWriter
from wmkit.model import GDNDiT, camera_inputs, preset
from wmkit.model.config import DiTConfig
from wmkit.train.config import run_preset
from wmkit.train.flow import FlowConfig, flow_matching_loss
from wmkit.train.parallel import DistInfo, parallelize
from wmkit.train.trainer import manual_gc, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_timing import sync, top_operators  # noqa: E402  (bench/device_timing.py)

H100_BF16_DENSE_FLOPS = 989e12
FFN_FRAME_CHUNK = 8  # 7,040 tokens per FFN recomputation: ~1 GB of 6×-wide intermediates
ARTICLE_PEAK_MEM_GB = 74.7
MEMORY_CAP_GB = 80.0


def model_flops(cfg: DiTConfig, params: int, frames: int, tokens_per_frame: int) -> float:
    """Training FLOPs of one clip (see the module docstring for the formula)."""
    tokens = frames * tokens_per_frame
    C, H, D = cfg.hidden, cfg.heads, cfg.head_dim
    dense = 6 * params * tokens
    softmax_fwd = 2 * 4 * tokens**2 * C  # two branches (main, camera), QKᵀ and AV
    gdn_fwd = 2 * frames * H * (2 * tokens_per_frame * D**2 * 5 + 4 * D**3)  # bidirectional
    n_softmax = len(cfg.softmax_blocks)
    return dense + 3 * (n_softmax * softmax_fwd + (cfg.depth - n_softmax) * gdn_fwd)


def matmul_tflops(device: torch.device) -> float | None:
    """Achieved bf16 TFLOP/s of an 8192² matmul (None on CPU)."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    sync(device)
    t0, n = time.perf_counter(), 20
    for _ in range(n):
        a @ a
    sync(device)
    return 2 * 8192**3 * n / (time.perf_counter() - t0) / 1e12


def _clip_cameras(B: int, frames: int, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A camera walking forward and yawing: c2w [B, T, 4, 4], K [B, T, 3, 3] (pixels)."""
    T = 8 * (frames - 1) + 1
    yaw = torch.linspace(0, 0.5, T, dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64).repeat(B, T, 1, 1)
    c2w[..., 0, 0], c2w[..., 0, 2], c2w[..., 2, 0], c2w[..., 2, 2] = yaw.cos(), yaw.sin(), -yaw.sin(), yaw.cos()
    c2w[..., 2, 3] = 0.05 * torch.arange(T, dtype=torch.float64)
    H, W = image_hw
    K = torch.tensor([[0.8 * W, 0, W / 2], [0, 0.8 * W, H / 2], [0, 0, 1]], dtype=torch.float64).repeat(B, T, 1, 1)
    return c2w, K


def bench_step(model_name: str, frames: int, grid: tuple[int, int], device: torch.device, steps: int,
               warmup: int, optimizer: bool = True, profile: bool = False, compiled: bool = False,
               ffn_frame_chunk: int = FFN_FRAME_CHUNK) -> dict:
    """Time training steps of one clip on one device (see `step_2p6b` in the module docstring):
    forward, backward, grad clip and, with `optimizer`, AdamW (whose fp32 states, 8 bytes a
    parameter, FSDP shards over ranks)."""
    cfg = preset(model_name)
    torch.manual_seed(0)
    model = GDNDiT(cfg).to(device)
    params = sum(p.numel() for p in model.parameters())
    parallelize(model, DistInfo(0, 1, 0, device), activation_checkpointing=True, compile_blocks=compiled, fsdp=True,
                param_dtype=torch.bfloat16, ffn_frame_chunk=ffn_frame_chunk, keep_attention=True)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda") if optimizer else None
    g = torch.Generator(device=device).manual_seed(0)
    Hl, Wl = grid
    image_hw = (32 * Hl, 32 * Wl)
    x0 = torch.randn(1, cfg.latent_channels, frames, Hl, Wl, device=device, generator=g)
    cams = camera_inputs(*(t.to(device) for t in _clip_cameras(1, frames, image_hw)), grid, image_hw)
    text = torch.randn(1, 300 if device.type == "cuda" else 8, cfg.text_dim, device=device, generator=g)
    mask = torch.ones(text.shape[:2], dtype=torch.bool, device=device)
    flow = FlowConfig(shift=9.95)

    def step() -> float:
        loss = flow_matching_loss(model, x0, cams, text, mask, flow, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        if optim is not None:
            optim.step()
        model.zero_grad(set_to_none=True)
        return loss.item()

    t0 = time.perf_counter()  # the gate: finite loss and gradients (its time includes any compile)
    loss = flow_matching_loss(model, x0, cams, text, mask, flow, g)
    loss.backward()
    sync(device)
    first_step_s = time.perf_counter() - t0
    bad = [n for n, p in model.named_parameters()  # FSDP2 DTensors: one rank holds the whole gradient
           if p.grad is not None and not bool(torch.isfinite(p.grad.to_local()).all())]
    if not torch.isfinite(loss) or bad:
        raise RuntimeError(f"bench_step {model_name}: non-finite loss {loss.item()} or gradients in {bad[:5]}")
    model.zero_grad(set_to_none=True)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    times = []
    with manual_gc():  # as the trainer runs: no full collection stalls the CPU mid-step
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    flops = model_flops(cfg, params, frames, Hl * Wl)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    result = {"model": model_name, "optimizer": "AdamW" if optimizer else "none (forward+backward+clip)",
              "blocks": ("compiled" if compiled else "eager") + ", AC keeping attention outputs",
              "ffn_frame_chunk": ffn_frame_chunk,
              "params": params, "latent_frames": frames, "tokens_per_frame": Hl * Wl,
              "tokens": frames * Hl * Wl, "first_step_s": first_step_s, "step_s": step_s, "step_times_s": times,
              "tokens_per_s": frames * Hl * Wl / step_s, "model_tflops_per_step": flops / 1e12,
              "mfu": flops / (step_s * H100_BF16_DENSE_FLOPS), "peak_mem_gb": peak,
              "article_peak_mem_gb": ARTICLE_PEAK_MEM_GB}
    if profile:  # one more step, after the timed ones; the timing is in the log should it not finish
        print(f"timed: {json.dumps(result)}", flush=True)
        result["profile"] = top_operators(step, device, row_limit=40)
        print(result["profile"], flush=True)
    return result


def write_latent_shards(out: Path, clips: int, frames: int, grid: tuple[int, int], text_dim: int) -> Path:
    """Latent shards of random latents (the loader's work does not depend on their values)."""
    from safetensors.torch import save

    from wmkit.datasets.video import encode_mp4

    T = 8 * (frames - 1) + 1
    H, W = 32 * grid[0], 32 * grid[1]
    mp4 = encode_mp4(np.zeros((T, H, W, 3), dtype=np.uint8), 16.0, preset="ultrafast")
    c2w, K = _clip_cameras(1, frames, (H, W))
    cams = Cameras(c2w[0].numpy(), K[0].numpy(), np.arange(T) / 16.0, np.arange(T), metric=True, scale_confidence=1.0)
    g = torch.Generator().manual_seed(0)
    with ShardWriter(out, max_count=16) as writer:
        for i in range(clips):
            z = torch.randn(128, frames, *grid, generator=g).half()
            blob = save({"z": z, "text": torch.randn(16, text_dim, generator=g)})
            meta = {"source": "local", "source_id": f"b{i}", "caption": "", "license": "none", "fps": 16.0,
                    "size": [W, H], "num_frames": T, "provenance": {}}
            writer.write(Sample(f"bench-{i:05d}", mp4, cams, meta, latents=blob))
    return out


def bench_loader(model_name: str, frames: int, grid: tuple[int, int], steps: int, batch_size: int,
                 num_workers: int) -> dict:
    """samples/s and stall fraction of `train` on generated latent shards."""
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_latent_shards(Path(tmp) / "shards", 64, frames, grid, preset(model_name).text_dim)
        cfg = run_preset("tiny_cpu", model=model_name, shards=str(shards), out=str(Path(tmp) / "run"), steps=steps,
                         batch_size=batch_size, num_workers=num_workers, ckpt_every=10**9, progress=False,
                         lr=1e-4, shuffle_buffer=16)
        rows = train(cfg)
    timed = rows[len(rows) // 4 :]  # drop the warm-up quarter (allocator, worker start)
    wait = sum(r["data_wait_s"] for r in timed)
    total = sum(r["step_time_s"] for r in timed)
    return {"model": model_name, "latent_frames": frames, "grid": list(grid), "batch_size": batch_size,
            "num_workers": num_workers, "steps": steps,
            "samples_per_s": sum(batch_size for _ in timed) / total, "stall_fraction": wait / total}


def _step_case(frames: int, optimizer: bool, cap_gb: float, profile: bool, compiled: bool, ffn_frame_chunk: int,
               queue) -> None:
    device = torch.device("cuda", 0)
    total = torch.cuda.get_device_properties(device).total_memory
    if total > cap_gb * 1e9:
        torch.cuda.set_per_process_memory_fraction(cap_gb * 1e9 / total, device)
    try:
        result = bench_step("2.6b", frames, (22, 40), device, steps=5, warmup=1, optimizer=optimizer, profile=profile,
                            compiled=compiled, ffn_frame_chunk=ffn_frame_chunk)
        queue.put({**result, "memory_cap_gb": min(cap_gb, total / 1e9)})
    except torch.OutOfMemoryError as err:
        queue.put({"model": "2.6b", "latent_frames": frames, "optimizer": "AdamW" if optimizer else "none",
                   "error": f"out of memory: {str(err).splitlines()[0]}", "step_s": float("nan"),
                   "tokens_per_s": float("nan"), "mfu": None,
                   "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 1e9})


def bench_step_or_oom(frames: int, optimizer: bool, cap_gb: float = MEMORY_CAP_GB, profile: bool = False,
                      compiled: bool = False, ffn_frame_chunk: int = FFN_FRAME_CHUNK) -> dict:
    """`bench_step` of the 2.6b preset on `frames` latent frames of 720p in a fresh process (so
    one case's memory never leaks into the next) whose allocator may use at most `cap_gb`;
    an out-of-memory is recorded with its peak."""
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step_case, args=(frames, optimizer, cap_gb, profile, compiled, ffn_frame_chunk, queue))
    proc.start()
    while True:  # poll, so that a child that dies without a result (a crash) is reported at once
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                return {"model": "2.6b", "latent_frames": frames, "error": f"case process exited with code "
                        f"{proc.exitcode} before reporting", "mfu": None, "peak_mem_gb": None}  # fmt: skip
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU-sized run of every case (tiny model, few steps)")
    parser.add_argument("--out", default="bench/results/train.json", help="results JSON")
    parser.add_argument("--steps-2p6b", default="121f_adamw_compiled,121f_adamw",
                        help="which 2.6b cases to run, in order (FRAMESf_adamw or FRAMESf_fwdbwd, + _compiled "
                             "for torch.compile'd blocks)")
    parser.add_argument("--no-loaders", action="store_true", help="skip the loader cases")
    parser.add_argument("--memory-cap-gb", type=float, default=MEMORY_CAP_GB,
                        help="allocator limit of a 2.6b case on a larger GPU (default: 80, an H100's budget)")
    parser.add_argument("--profile", action="store_true", help="add one profiled step to each 2.6b case")
    parser.add_argument("--ffn-frame-chunk", type=int, default=FFN_FRAME_CHUNK,
                        help="latent frames per FFN recomputation chunk in the 2.6b cases")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"device": name, "torch": torch.__version__, "smoke": args.smoke, "matmul_tflops": matmul_tflops(device),
               "cases": {}}  # fmt: skip
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the matmul's memory: the step cases run in child processes

    def record(case: str, result: dict) -> None:
        """Add a case and rewrite the results file (a run cut short keeps the cases it finished)."""
        results["cases"][case] = result
        cases = results["cases"]
        # the step of the summary: the fastest full (AdamW) step that ran, and its case name
        steps = {k: c for k, c in cases.items() if k.startswith("step") and "fwdbwd" not in k and c.get("mfu")}
        best = max(steps, key=lambda k: steps[k]["mfu"], default=None)
        loaders = [c for k, c in cases.items() if k.startswith("loader")]
        summary = {"mfu_2p6b": steps[best]["mfu"] if best else None,
                   "peak_mem_gb_2p6b": steps[best]["peak_mem_gb"] if best else None, "case_2p6b": best,
                   "loader_stall_fraction": max(c["stall_fraction"] for c in loaders) if loaders else None,
                   "device": name}  # fmt: skip
        if "step_2p6b_121f_fwdbwd" in cases:
            summary["mfu_2p6b_fwdbwd"] = cases["step_2p6b_121f_fwdbwd"]["mfu"]
            summary["peak_mem_gb_2p6b_fwdbwd"] = cases["step_2p6b_121f_fwdbwd"]["peak_mem_gb"]
        results["summary"] = summary
        out.write_text(json.dumps(results, indent=1))
        print(f"{case}: {json.dumps(result)}", flush=True)

    if args.smoke:
        torch.set_num_threads(1)
        record("step_2p6b", bench_step("tiny", 3, (2, 3), device, steps=2, warmup=1))
        if not args.no_loaders:
            record("loader_tiny", bench_loader("tiny", 3, (2, 3), steps=8, batch_size=2, num_workers=0))
    else:
        # 121 latent frames is the 61-s clip of the issue; forward+backward without the optimizer
        # is timed too (the step's compute, for MFU).
        for case in args.steps_2p6b.split(","):
            frames, kind = case.split("f_")
            record(f"step_2p6b_{case}", bench_step_or_oom(int(frames), kind.startswith("adamw"), args.memory_cap_gb,
                                                           args.profile, kind.endswith("_compiled"), args.ffn_frame_chunk))
        if not args.no_loaders:
            record("loader_tiny", bench_loader("tiny", 3, (8, 12), steps=200, batch_size=8, num_workers=4))
            record("loader_small", bench_loader("small", 7, (8, 12), steps=100, batch_size=4, num_workers=4))
    print(f"{'case':<14} {'model':<6} {'step s':>8} {'tokens/s':>10} {'MFU':>6} {'mem GB':>7} {'samples/s':>10} {'stall':>6}")
    for case, r in results["cases"].items():
        if case.startswith("step") and "error" not in r:
            print(f"{case:<14} {r['model']:<6} {r['step_s']:8.3f} {r['tokens_per_s']:10.0f} {r['mfu'] or float('nan'):6.1%} "
                  f"{r['peak_mem_gb'] or float('nan'):7.1f}")
    for case, r in results["cases"].items():
        if case.startswith("loader"):
            print(f"{case:<14} {r['model']:<6} {'':8} {'':10} {'':6} {'':7} {r['samples_per_s']:10.1f} "
                  f"{r['stall_fraction']:6.1%}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
