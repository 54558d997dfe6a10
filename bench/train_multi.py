"""Multi-GPU benchmark of the trainer (issue 10): FSDP2 1-vs-N losses, context parallelism
over CP=2, and FSDP2 scaling of the 2.6b preset. One process per GPU, launched by torchrun
(NCCL on CUDA, gloo on CPU; NCCL_NVLS_ENABLE=0 unless set); rank 0 writes the results.

Usage::

    # one GPU: the scaling baseline throughput(1)
    torchrun --standalone --nproc-per-node 1 bench/train_multi.py --cases scaling \
        --out bench/results/train_multi_1gpu.json
    # 2 GPUs: every case, efficiency against the 1-GPU file -> bench/results/train_multi.json (+ .md)
    torchrun --standalone --nproc-per-node 2 bench/train_multi.py --baseline bench/results/train_multi_1gpu.json
    # 8 GPUs (4 alike): summary key scaling_efficiency_8
    torchrun --standalone --nproc-per-node 8 bench/train_multi.py --baseline bench/results/train_multi_1gpu.json \
        --out bench/results/train_multi_8gpu.json
    # CPU, 2 gloo processes, tiny shapes (CI): every case in seconds
    torchrun --standalone --nproc-per-node 2 bench/train_multi.py --smoke --out /tmp/train_multi.json

Cases (`--cases`, default all):

- `same-result` — the tiny and small presets, one global batch per step drawn from the seed
  on every rank (latents, text, σ and noise of the whole batch; each rank keeps its rows),
  20 AdamW steps on 1 rank (rank 0 alone, unsharded) and on N ranks (FSDP2): the largest
  relative difference of the step losses. Every latent frame is in the loss
  (image_condition_prob = 0), so the mean of the ranks' losses is the global batch's loss
  and FSDP2's averaged gradient is its gradient.
- `context-parallel` — one long clip through the whole `GDNDiT` (GPU: the 2.6b preset, 121
  latent frames × 22 × 40 = 880 tokens, bf16 autocast, activation checkpointing per block;
  `--cp-model`, `--cp-mode`). CP=1 runs the model on the whole clip; CP=2 splits its frames
  over ranks 0 and 1 (`frame_slice`: 61 | 60) through `wmkit.train.parallel.cp_context`:
  frame-conv halos, GDN scan-composite exchange (forward and reverse), softmax K/V
  all-gather. Zero-initialised projections get small random weights so every path shows.
  Reported: max relative difference of the output, the latents' gradient and the parameter
  gradients (summed over the CP ranks) against CP=1; forward+backward time and memory per
  rank (CUDA: peak allocated; CPU: bytes the autograd graph saves, as RSS cannot be reset).
- `scaling` — the 2.6b preset on one 61-s 720p clip (121 × 22 × 40 latent tokens) per GPU,
  the trainer's step (bf16 autocast, AC per block, FSDP2, clip 0.5, AdamW, EMA): samples/s, MFU
  (`bench/train.py`'s `model_flops` and H100/H200 dense bf16 peak, the same definition),
  peak memory per GPU, and scaling efficiency = throughput(N) / (N × throughput(1)), with
  throughput(1) from `--baseline` (a 1-process run of this case) or, without it, measured
  on rank 0 alone in the same job (an out-of-memory there is recorded, not raised).
  `--frames 61` (30-s clips) for every run when one GPU cannot hold the 121-frame step.

`summary`: `scaling_efficiency_2` (None unless N = 2; `scaling_efficiency_<N>` otherwise),
`cp2_mem_fraction` (CP=2 memory per rank / CP=1), `loss_max_rel_diff`, `device`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from wmkit.model import CPContext, GDNDiT, camera_inputs, preset
from wmkit.model.camera_rays import CameraInputs
from wmkit.model.config import DiTConfig
from wmkit.train.flow import FlowConfig, flow_batch, flow_matching_loss, masked_mse
from wmkit.train.parallel import (
    DistInfo,
    apply_activation_checkpointing,
    cp_context,
    frame_slice,
    init_distributed,
    parallelize,
)
from wmkit.train.trainer import EMA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_timing import sync  # noqa: E402  (bench/device_timing.py)
from train import H100_BF16_DENSE_FLOPS, _clip_cameras, model_flops  # noqa: E402  (bench/train.py)

CASES = ("same-result", "context-parallel", "scaling")


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _all_reduce(value: float, info: DistInfo, op: dist.ReduceOp.RedOpType = dist.ReduceOp.MAX,
                group: dist.ProcessGroup | None = None) -> float:
    """`value` reduced over the ranks of `group` (the world by default)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=op, group=group)
    return t.item()


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|: the largest difference relative to the reference's scale."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _text(cfg: DiTConfig, batch: int, length: int, device: torch.device,
          g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    text = torch.randn(batch, length, cfg.text_dim, generator=g).to(device)
    return text, torch.ones(batch, length, dtype=torch.bool, device=device)


def _cameras(batch: int, frames: int, grid: tuple[int, int], device: torch.device) -> CameraInputs:
    image_hw = (32 * grid[0], 32 * grid[1])
    return camera_inputs(*(t.to(device) for t in _clip_cameras(batch, frames, image_hw)), grid, image_hw)


# ---------------------------------------------------------------------------------------------
# same-result
# ---------------------------------------------------------------------------------------------


def step_losses(model_name: str, info: DistInfo, *, steps: int, global_batch: int, frames: int,
                grid: tuple[int, int], seed: int = 0, lr: float = 1e-3) -> list[float]:
    """Losses of `steps` AdamW steps on the global batch, this rank holding rows
    [rank·B/N, (rank+1)·B/N) of every batch (FSDP2 when `info` has several ranks); the loss
    of a step is the mean over ranks. Batches, σ and noise are functions of (seed, step)."""
    if global_batch % info.world_size:
        raise ValueError(f"same-result: global batch {global_batch} does not split over {info.world_size} ranks")
    cfg = preset(model_name)
    torch.manual_seed(seed)
    model = parallelize(GDNDiT(cfg).to(info.device), info, activation_checkpointing=False, compile_blocks=False,
                        fsdp=True)
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    flow = FlowConfig(image_condition_prob=0.0)
    local = global_batch // info.world_size
    rows = slice(info.rank * local, (info.rank + 1) * local)
    cams = _cameras(local, frames, grid, info.device)
    losses = []
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        x0 = torch.randn(global_batch, cfg.latent_channels, frames, *grid, generator=g)
        text, mask = _text(cfg, global_batch, 8, torch.device("cpu"), g)
        fb = flow_batch(x0, flow, g)
        with _autocast(info.device):
            pred = model(fb.noisy[rows].to(info.device), fb.sigma[rows].to(info.device), cams,
                         text[rows].to(info.device), mask[rows].to(info.device))
            loss = masked_mse(pred, fb.target[rows].to(info.device), fb.loss_weight[rows].to(info.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optim.step()
        optim.zero_grad(set_to_none=True)
        losses.append(_all_reduce(loss.item(), info, dist.ReduceOp.SUM) / info.world_size)
    return losses


def case_same_result(info: DistInfo, models: list[str], steps: int, frames: int, grid: tuple[int, int],
                     global_batch: int) -> dict[str, Any] | None:
    """1 rank vs N ranks (FSDP2) on the same global batches: losses and their largest relative difference."""
    out: dict[str, Any] = {"world_size": info.world_size, "global_batch": global_batch, "steps": steps,
                           "latent_frames": frames, "grid": list(grid), "models": {}}
    for name in models:
        sharded = step_losses(name, info, steps=steps, global_batch=global_batch, frames=frames, grid=grid)
        if info.rank == 0:  # the reference: rank 0 alone, unsharded, the whole batch
            single = step_losses(name, DistInfo(0, 1, 0, info.device), steps=steps, global_batch=global_batch,
                                 frames=frames, grid=grid)
            diffs = [abs(a - b) / abs(b) for a, b in zip(sharded, single)]
            out["models"][name] = {"losses_1": single, f"losses_{info.world_size}": sharded,
                                   "max_rel_diff": max(diffs)}
        _barrier(info)
    if info.rank != 0:
        return None
    out["max_rel_diff"] = max(m["max_rel_diff"] for m in out["models"].values())
    return out


# ---------------------------------------------------------------------------------------------
# context-parallel
# ---------------------------------------------------------------------------------------------


class SavedBytes:
    """Bytes of the distinct storages other than `params` that autograd saves for backward
    while active: the activation memory of a pass, measurable on CPU."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """Record t's storage unless it is a parameter's; keep t as is."""
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self.skip:
            self.storages[ptr] = t.untyped_storage().nbytes()
        return t

    @property
    def gb(self) -> float:
        """Total in GB."""
        return sum(self.storages.values()) / 1e9


def _wake_zero_inits(model: nn.Module, g: torch.Generator) -> None:
    """Small random weights for the zero-initialised projections (final layer, temporal taps,
    camera outputs): at init they cut most paths, and a comparison of zeros proves nothing."""
    with torch.no_grad():
        for p in model.parameters():
            if bool((p == 0).all()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def cp_pass(model: GDNDiT, clip: dict[str, Any], do: torch.Tensor, mode: str, cp: CPContext | None,
            group: dist.ProcessGroup | None, steps: int) -> dict[str, Any]:
    """Forward + backward of `model` on the clip (CPU tensors: latents, timesteps, cameras, text,
    mask; moved to the model's device here) with cotangent do — on this rank's frames with
    `cp`, whose ranks form `group` — timed `steps` times after one warm-up. Returns out, dlatents and the parameter
    gradients of the last pass (on CPU), the median time and the pass's memory."""
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    a, b = (0, clip["latents"].shape[2]) if cp is None else cp.frames
    x = clip["latents"][:, :, a:b].to(device, dtype).requires_grad_()
    timesteps, do = clip["timesteps"][:, a:b].to(device), do[:, :, a:b].to(device, dtype)
    cams = CameraInputs(*(t.to(device) for t in (clip["cameras"].plucker, clip["cameras"].ucpe))).frames(a, b)
    text, mask = clip["text"].to(device, dtype), clip["text_mask"].to(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    for i in range(steps + 1):
        saved = SavedBytes(list(model.parameters()))  # this pass's graph only
        model.zero_grad(set_to_none=True)
        x.grad = None
        sync(device)
        t0 = time.perf_counter()
        with _autocast(device), torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            out = model(x, timesteps, cams, text, mask, mode=mode, cp=cp)
        out.backward(do)
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    grads = {n: p.grad for n, p in model.named_parameters()}
    if cp is not None:  # each rank's parameter gradient is its slice's share
        for grad in grads.values():
            dist.all_reduce(grad, group=group)
    result = {"out": out.detach().cpu(), "dx": x.grad.cpu(), "grads": {n: g.cpu() for n, g in grads.items()},
              "step_s": statistics.median(times), "saved_gb": saved.gb, "peak_mem_gb": peak}
    model.zero_grad(set_to_none=True)
    return result


def case_context_parallel(info: DistInfo, model_name: str, frames: int, grid: tuple[int, int], mode: str,
                          steps: int) -> dict[str, Any] | None:
    """CP=1 vs CP=2 (ranks 0 and 1) of the whole `GDNDiT` on one clip: differences, time and
    memory per rank. CUDA: bf16 autocast, activation checkpointing per block; CPU: float64
    (fp32 rounding alone moves the unsplit model's cross-attention query gradients by ~1e-3)."""
    if info.world_size < 2:
        raise ValueError("context-parallel needs at least 2 ranks")
    group = dist.new_group([0, 1])  # every rank takes part in creating the group
    result = None
    if info.rank < 2:
        cfg = preset(model_name)
        cuda = info.device.type == "cuda"
        g = torch.Generator().manual_seed(0)
        text, mask = _text(cfg, 1, 300 if cuda else 8, torch.device("cpu"), g)
        clip = {"latents": torch.randn(1, cfg.latent_channels, frames, *grid, generator=g),
                "timesteps": torch.rand(1, frames, generator=g), "cameras": _cameras(1, frames, grid, torch.device("cpu")),
                "text": text, "text_mask": mask}
        do = torch.randn(1, cfg.latent_channels, frames, *grid, generator=g)
        torch.manual_seed(0)
        model = GDNDiT(cfg)
        _wake_zero_inits(model, g)
        model = model.to(info.device, torch.float32 if cuda else torch.float64)
        if cuda:  # the 2.6b step at 121 × 880 tokens fits one GPU only with AC
            apply_activation_checkpointing(model)
        # CP=1 on both ranks at once (each its own GPU and copy): each holds the reference
        full = cp_pass(model, clip, do, mode, None, None, steps)
        cp = cp_context(frames, group)
        split = cp_pass(model, clip, do, mode, cp, group, steps)
        lo, hi = cp.frames
        diffs = {"out": rel_diff(split["out"], full["out"][:, :, lo:hi]),
                 "dx": rel_diff(split["dx"], full["dx"][:, :, lo:hi]),
                 "dparams": max(rel_diff(split["grads"][n], full["grads"][n]) for n in full["grads"])}
        diffs = {k: _all_reduce(v, info, group=group) for k, v in diffs.items()}
        mem1, mem2 = (r["peak_mem_gb"] if cuda else r["saved_gb"] for r in (full, split))
        result = {"model": model_name, "mode": mode, "dtype": "bf16 autocast" if cuda else "float64",
                  "activation_checkpointing": cuda, "latent_frames": frames, "tokens_per_frame": grid[0] * grid[1],
                  "cp2_frames_per_rank": [b - a for a, b in (frame_slice(frames, r, 2) for r in range(2))],
                  "max_rel_diff": diffs, "step_s_cp1": full["step_s"],
                  "step_s_cp2": _all_reduce(split["step_s"], info, group=group),
                  "mem_measure": "cuda max_memory_allocated" if cuda else "activation bytes saved for backward (CPU)",
                  "mem_gb_cp1": mem1, "mem_gb_cp2_per_rank": _all_reduce(mem2, info, group=group)}
        result["cp2_mem_fraction"] = result["mem_gb_cp2_per_rank"] / mem1
    _barrier(info)
    return result if info.rank == 0 else None


# ---------------------------------------------------------------------------------------------
# scaling
# ---------------------------------------------------------------------------------------------


def train_step_rate(model_name: str, info: DistInfo, *, frames: int, grid: tuple[int, int], steps: int,
                    warmup: int) -> dict[str, Any]:
    """The trainer's step (bf16 autocast on CUDA, AC per block, FSDP2 over `info`'s ranks,
    clip 0.5, AdamW, EMA) on one clip per rank: median step time (slowest rank), samples/s, MFU,
    peak memory per rank. Loss and gradients must be finite first (no speed on a red gate)."""
    cfg = preset(model_name)
    torch.manual_seed(0)
    model = GDNDiT(cfg).to(info.device)
    params = sum(p.numel() for p in model.parameters())
    parallelize(model, info, activation_checkpointing=True, compile_blocks=False, fsdp=True)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ema = EMA(model, 0.9999)
    g = torch.Generator().manual_seed(1 + info.rank)
    x0 = torch.randn(1, cfg.latent_channels, frames, *grid, generator=g).to(info.device)
    text, mask = _text(cfg, 1, 300 if info.device.type == "cuda" else 8, info.device, g)  # release: 300 tokens
    cams = _cameras(1, frames, grid, info.device)
    flow = FlowConfig(shift=9.95)
    noise = torch.Generator(device=info.device).manual_seed(2 + info.rank)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        with _autocast(info.device):
            loss = flow_matching_loss(model, x0, cams, text, mask, flow, noise)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optim.step()
        optim.zero_grad(set_to_none=True)
        ema.update(model)
        return loss.detach(), norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    loss, norm = step()
    if not (math.isfinite(loss.item()) and math.isfinite(norm.item())):
        raise RuntimeError(f"scaling {model_name}: non-finite loss {loss.item()} or gradient norm {norm.item()}")
    for _ in range(warmup):
        step()
    if info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(info.device)
    times = []
    for _ in range(steps):
        sync(info.device)
        t0 = time.perf_counter()
        step()
        sync(info.device)
        times.append(time.perf_counter() - t0)
    step_s = _all_reduce(statistics.median(times), info)
    flops = model_flops(cfg, params, frames, grid[0] * grid[1])
    peak = (_all_reduce(torch.cuda.max_memory_allocated(info.device) / 1e9, info)
            if info.device.type == "cuda" else None)
    return {"model": model_name, "world_size": info.world_size, "params": params, "latent_frames": frames,
            "tokens_per_frame": grid[0] * grid[1], "step_s": step_s, "samples_per_s": info.world_size / step_s,
            "model_tflops_per_step_per_gpu": flops / 1e12, "mfu": flops / (step_s * H100_BF16_DENSE_FLOPS),
            "peak_mem_gb_per_gpu": peak}


def case_scaling(info: DistInfo, model_name: str, frames: int, grid: tuple[int, int], steps: int, warmup: int,
                 baseline: str | None) -> dict[str, Any] | None:
    """FSDP2 over all ranks, and throughput(1) from `baseline` or rank 0 alone: efficiency."""
    kw = {"frames": frames, "grid": grid, "steps": steps, "warmup": warmup}
    one: dict[str, Any] | None = None
    if baseline is not None:  # checked before the GPUs spend time
        one = json.loads(Path(baseline).read_text())["cases"]["scaling"]["runs"]["1"]
        shape = (one["model"], one["latent_frames"], one["tokens_per_frame"])
        if shape != (model_name, frames, grid[0] * grid[1]):
            raise ValueError(f"scaling: baseline {baseline} measured {shape}, this run {(model_name, frames, grid)}")
    multi = train_step_rate(model_name, info, **kw)
    if info.world_size == 1:
        one = multi
    elif baseline is None and info.rank == 0:
        try:
            one = train_step_rate(model_name, DistInfo(0, 1, 0, info.device), **kw)
        except torch.OutOfMemoryError as err:  # unsharded weights, grads and AdamW states on one GPU
            one = {"error": f"out of memory on one GPU: {str(err).splitlines()[0]}"}
    _barrier(info)
    if info.rank != 0:
        return None
    efficiency = (multi["samples_per_s"] / (info.world_size * one["samples_per_s"])
                  if "samples_per_s" in one else None)
    source = "this run" if info.world_size == 1 else baseline or "measured in this job on rank 0"
    return {"runs": {"1": one, str(info.world_size): multi}, "baseline": source,
            "world_size": info.world_size, "scaling_efficiency": efficiency}


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (one row per measurement)."""
    cases, N = results["cases"], results["world_size"]
    lines = [f"device: {results['device']}, {N} ranks, torch {results['torch']}", "",
             "| case | measure | value |", "|---|---|---|"]
    if "same-result" in cases:
        for name, m in cases["same-result"]["models"].items():
            lines.append(f"| same-result {name} | max rel. diff of {cases['same-result']['steps']} losses, 1 vs {N} ranks | {m['max_rel_diff']:.2e} |")
    if "context-parallel" in cases:
        cp = cases["context-parallel"]
        lines += [f"| context-parallel | max rel. diff out / dx / dparams | "
                  f"{cp['max_rel_diff']['out']:.2e} / {cp['max_rel_diff']['dx']:.2e} / {cp['max_rel_diff']['dparams']:.2e} |",
                  f"| context-parallel | fwd+bwd s, CP=1 → CP=2 | {cp['step_s_cp1']:.3f} → {cp['step_s_cp2']:.3f} |",
                  f"| context-parallel | memory GB per rank ({cp['mem_measure']}), CP=1 → CP=2 | "
                  f"{cp['mem_gb_cp1']:.3g} → {cp['mem_gb_cp2_per_rank']:.3g} ({cp['cp2_mem_fraction']:.0%}) |"]
    if "scaling" in cases:
        sc = cases["scaling"]
        for n, r in sc["runs"].items():
            if "error" in r:
                lines.append(f"| scaling N={n} | error | {r['error']} |")
                continue
            mem = "n/a" if r["peak_mem_gb_per_gpu"] is None else f"{r['peak_mem_gb_per_gpu']:.1f}"
            lines.append(f"| scaling N={n} {r['model']} {r['latent_frames']}×{r['tokens_per_frame']} | samples/s, MFU, peak GB/GPU | "
                         f"{r['samples_per_s']:.3g}, {r['mfu']:.1%}, {mem} |")
        eff = sc["scaling_efficiency"]
        lines.append(f"| scaling | efficiency N={N} | {'n/a' if eff is None else f'{eff:.1%}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, join the process group, run the cases, write JSON + markdown on rank 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="cases to run")
    parser.add_argument("--smoke", action="store_true", help="CPU, gloo, tiny shapes: every case in seconds")
    parser.add_argument("--out", default="bench/results/train_multi.json", help="results JSON (markdown beside it)")
    parser.add_argument("--baseline", help="train_multi JSON of a 1-process scaling run: throughput(1)")
    parser.add_argument("--frames", type=int, default=121, help="latent frames of the scaling clip (121: 61 s)")
    parser.add_argument("--cp-model", default="2.6b", help="DiT preset of the context-parallel case")
    parser.add_argument("--cp-mode", default="bidirectional", choices=("bidirectional", "chunk_causal"),
                        help="attention mode of the context-parallel case")
    args = parser.parse_args(argv)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off (issue 10)
    if args.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA is first queried: gloo on CPU
        torch.set_num_threads(1)
    info = init_distributed()
    cases: dict[str, Any] = {}
    try:
        if "same-result" in args.cases:
            shape = {"models": ["tiny", "small"], "steps": 20, "frames": 3 if args.smoke else 7,
                     "grid": (2, 3) if args.smoke else (8, 12), "global_batch": 2 * info.world_size}
            if args.smoke:  # the small preset's 20 CPU steps take minutes
                shape |= {"models": ["tiny"]}
            cases["same-result"] = case_same_result(info, **shape)
        if "context-parallel" in args.cases:
            cp = ({"model_name": "tiny", "frames": 13, "grid": (4, 6), "steps": 1} if args.smoke else
                  {"model_name": args.cp_model, "frames": 121, "grid": (22, 40), "steps": 3})
            cp["mode"] = args.cp_mode
            cases["context-parallel"] = case_context_parallel(info, **cp)
        if "scaling" in args.cases:
            sc = ({"model_name": "tiny", "frames": 3, "grid": (2, 3), "steps": 2, "warmup": 1} if args.smoke else
                  {"model_name": "2.6b", "frames": args.frames, "grid": (22, 40), "steps": 3, "warmup": 1})
            cases["scaling"] = case_scaling(info, baseline=args.baseline, **sc)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if info.rank != 0:
        return
    N = info.world_size
    if info.device.type == "cuda":
        device = f"{torch.cuda.get_device_name(info.device)} ×{N} (NCCL)"
    else:
        device = f"CPU gloo{' smoke' if args.smoke else ''} ×{N} ({platform.processor() or 'cpu'}; not a GPU measurement)"
    efficiency = cases["scaling"]["scaling_efficiency"] if "scaling" in cases else None
    results = {
        "device": device, "world_size": N, "torch": torch.__version__, "smoke": args.smoke,
        "nccl_nvls_enable": os.environ["NCCL_NVLS_ENABLE"], "cases": cases,
        "summary": {"scaling_efficiency_2": efficiency if N == 2 else None,
                    **({f"scaling_efficiency_{N}": efficiency} if N != 2 else {}),
                    "cp2_mem_fraction": cases["context-parallel"]["cp2_mem_fraction"] if "context-parallel" in cases else None,
                    "loss_max_rel_diff": cases["same-result"]["max_rel_diff"] if "same-result" in cases else None,
                    "device": device},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table + f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
