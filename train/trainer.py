"""The training loop, top to bottom (nanoGPT / titan style).

    processes → model → compile / AC / FSDP2 → AdamW + warm-up → EMA → shard loader
    → resume (newest complete checkpoint) → loop:
        batch → VAE / text encoder if needed → flow-matching loss (bf16: autocast, or FSDP2 bf16 params)
        → backward → clip 0.5 → AdamW step → EMA → log → checkpoint

Launch::

    wmkit train run --preset tiny_cpu --shards shards/ --out runs/tiny
    torchrun --nproc-per-node 8 -m wmkit.cli train run --preset 2.6b_720p_61s_h100 --shards latents/ --out runs/a
    torchrun --nproc-per-node 4 -m wmkit.cli train run --preset 2.6b_720p_61s_h100 --shards latents/ --out runs/b cp=2

Context parallelism (`cp=N`): the world is a dp × cp mesh; each cp group reads the same
clips (data stream and flow noise of its dp index), every rank runs its `frame_slice` of
each clip's latent frames and computes its share of the loss (its frames' errors over the
clip's loss frames); the shares sum, over the group, to the loss of the unsplit clip. FSDP2
shards over all ranks (cp ranks hold the same weights, so sharding over all of them gives
the least memory per GPU) and averages gradients over all dp·cp ranks, so each rank
back-propagates cp × its share: the average is then the mean over dp of each clip's gradient.

A resumed run replays exactly: model, optimiser, EMA, step counters, every RNG and each
rank's data position come back from the checkpoint (`wmkit.train.checkpoint`).

A rank whose step raises logs ``rank R failed at step S (resume from …): Error: message``
and re-raises, so torchrun stops the job with a non-zero exit; nothing is saved on the way
out, and launching the same command again resumes from the last checkpoint. Tests make a
rank fail with the environment variable ``WMKIT_TRAIN_FAULT=RANK:STEP`` (`FAULT_ENV`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from tqdm import tqdm

from wmkit.model.dit import GDNDiT

from .checkpoint import list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import CaptionEncoder, ShardBatches, ShardLoader, VideoEncoder, model_inputs
from .flow import FlowConfig, flow_matching_loss
from .parallel import DistInfo, MeshDims, cp_context, init_distributed, mesh_dims, parallelize, unwrapped_name

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"

StepHook = Callable[[int, float], None]
"""Called after every optimiser step with (step, loss); tests use it to stop a run abruptly."""

FAULT_ENV = "WMKIT_TRAIN_FAULT"
"""Test-only fault injection: "RANK:STEP" makes rank RANK raise in step STEP (1-based, as
in metrics.jsonl) between the forward and the backward: a rank that dies mid-step."""


class EMA:
    """Exponential moving average of the parameters, sharded like them under FSDP2, keyed by the
    plain model's parameter names (AC and compile wrappers removed: `unwrapped_name`), so a run
    trained with either exports and resumes into any model."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {unwrapped_name(name): p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow ← decay·shadow + (1 − decay)·param."""
        params = [p.detach() for _, p in model.named_parameters()]
        torch._foreach_lerp_(list(self.shadow.values()), params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow tensors by parameter name (loaded in place by DCP)."""
        return self.shadow


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup_steps` to `lr`, then constant (step counts from 0)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated accelerator memory, or the process's peak RSS on CPU, in GB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


class MetricsLog:
    """Rank 0's metrics: one JSON row per logged step in RUN/metrics.jsonl, and TensorBoard
    scalars when the `tensorboard` package is installed."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.enabled, self.path, self.tb = enabled, run_dir / METRICS_FILE, None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            log.info("tensorboard is not installed: metrics go to %s only", self.path)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (and its numbers to TensorBoard)."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if isinstance(value, int | float) and key != "step":
                    self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


def _mean_over_ranks(value: float, info: DistInfo) -> float:
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.item() / info.world_size


@contextlib.contextmanager
def manual_gc() -> Iterator[None]:
    """Python's automatic cyclic garbage collector off inside (titan does the same): a full
    collection over the many objects of a large model stalls the CPU that feeds the GPU at
    random steps; the loop collects the young generations itself."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _clip_gradients(model: torch.nn.Module, max_norm: float | None, step: int) -> torch.Tensor:
    """Clip the gradients to `max_norm` (None: no clipping) and return their total norm (a plain
    tensor, also under FSDP2); a NaN or infinite norm raises before the optimiser step (one host
    sync a step), so a diverged step never reaches the weights and the last checkpoint stays good."""
    params = [p for p in model.parameters() if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params])
    norm = total.full_tensor() if hasattr(total, "full_tensor") else total  # FSDP2: a DTensor
    if not bool(torch.isfinite(norm)):
        raise RuntimeError(f"step {step}: the gradient norm is {float(norm)} (a diverged step or bad input); stopped "
                           f"before the optimiser step, so the weights and the last checkpoint are unaffected")
    if max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return norm


def _clip_loss(share: torch.Tensor, dims: MeshDims) -> float:
    """The loss of the clip(s) this rank's cp group trains on: the sum of the group's shares."""
    if dims.cp_group is None:
        return share.item()
    t = share.detach().double()
    dist.all_reduce(t, group=dims.cp_group)
    return t.item()


def injected_fault_step(rank: int) -> int | None:
    """The step at which `FAULT_ENV` makes this rank fail, or None."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    fault_rank, _, step = spec.partition(":")
    if not (fault_rank.strip().isdigit() and step.strip().isdigit()):
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected RANK:STEP, e.g. 1:5")
    return int(step) if int(fault_rank) == rank else None


def _encoders(cfg: TrainConfig, device: torch.device) -> tuple[VideoEncoder | None, CaptionEncoder | None]:
    vae = text = None
    if cfg.data == "video":
        if cfg.vae == "pool":
            from .pooling_vae import PoolingVAE

            vae = PoolingVAE()
        else:
            from wmkit.model.vae import VideoVAE

            vae = VideoVAE(cfg.vae, device=device)
    if cfg.text_encoder:
        from wmkit.model.text_encoder import TextEncoder

        text = TextEncoder(cfg.text_encoder, max_length=cfg.text_max_length, device=device)
    return vae, text


def train(cfg: TrainConfig, *, on_step: StepHook | None = None) -> list[dict[str, Any]]:
    """Train `cfg` to `cfg.steps` (resuming from RUN/checkpoints if present); returns the
    metrics rows this process logged (rank 0; other ranks return [])."""
    # 1. processes, run directory
    if not cfg.shards:
        raise ValueError("TrainConfig.shards is empty: name the shard directory (shards=DIR)")
    info = init_distributed()
    dims = mesh_dims(info, cfg.context_parallel)
    run_dir, ckpt_root = Path(cfg.out), Path(cfg.out) / "checkpoints"
    if info.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "hash": cfg.hash()}, indent=1))
    autocast_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and info.device.type == "cuda")

    # 2. model: the same init on every rank (FSDP2 then keeps each rank's shard)
    torch.manual_seed(cfg.seed)
    model = GDNDiT(cfg.dit).to(info.device)
    model = parallelize(model, info, activation_checkpointing=cfg.activation_checkpointing,
                        compile_blocks=cfg.compile, fsdp=cfg.fsdp, ffn_frame_chunk=cfg.ffn_frame_chunk or None,
                        param_dtype=torch.bfloat16 if cfg.precision == "bf16_params" else None,
                        keep_attention=cfg.ac_keep_attention)
    if info.distributed and not cfg.fsdp:
        raise ValueError("TrainConfig: more than one rank needs fsdp=true (the model is not replicated otherwise)")

    # 3. optimiser, EMA, flow-noise generator (per dp index: cp ranks share clips and noise)
    optim = torch.optim.AdamW(model.parameters(), lr=learning_rate(0, cfg), betas=(cfg.beta1, cfg.beta2),
                              weight_decay=cfg.weight_decay, fused=info.device.type == "cuda")
    ema = EMA(model, cfg.ema_decay)
    generator = torch.Generator(device=info.device).manual_seed(cfg.seed + 1_000_003 * (dims.dp_rank + 1))
    flow = FlowConfig(cfg.logit_mean, cfg.logit_std, cfg.flow_shift, cfg.image_condition_prob)

    # 4. data
    dataset = ShardBatches(cfg.shards, kind=cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, rank=dims.dp_rank,
                           world_size=dims.dp, num_workers=cfg.num_workers,
                           shuffle_buffer=cfg.shuffle_buffer, resampled=cfg.resampled,
                           max_latent_frames=cfg.max_latent_frames, min_latent_frames=cfg.context_parallel,
                           max_consecutive_bad=cfg.max_consecutive_bad)
    loader = ShardLoader(dataset)
    vae, text_encoder = _encoders(cfg, info.device)

    # 5. resume
    counters = {"step": 0, "samples": 0, "tokens": 0}
    found = list_checkpoints(ckpt_root) if cfg.resume else []
    if found:
        parts = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optim),
                 "ema": ema.state_dict(), "train": dict(counters)}
        mine = {"rng": rng_state(generator), "data": ""}
        manifest = load_checkpoint(found[-1], parts, mine)
        if manifest["config_hash"] != cfg.hash():
            log.warning("resuming %s saved with another config (hash %s…, now %s…)", found[-1],
                        manifest["config_hash"][:12], cfg.hash()[:12])
        set_model_state_dict(model, parts["model"])
        set_optimizer_state_dict(model, optim, parts["optim"])
        counters = {k: int(v) for k, v in parts["train"].items()}
        set_rng_state(mine["rng"], generator)
        loader.load_state_dict(json.loads(mine["data"]))
        if info.rank == 0:
            log.info("resumed from %s at step %d", found[-1], counters["step"])

    # 6. loop
    metrics = MetricsLog(run_dir, info.rank == 0)
    rows: list[dict[str, Any]] = []
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16) if autocast_bf16 else contextlib.nullcontext()
    bar = tqdm(total=cfg.steps, initial=counters["step"], disable=info.rank != 0 or not cfg.progress, desc="train")
    batches = iter(loader)
    wait_total = time_total = 0.0
    fault_step = injected_fault_step(info.rank)
    last_ckpt = found[-1] if found else None
    step = counters["step"]
    model.train()
    with manual_gc():
        try:
            while counters["step"] < cfg.steps:
                step = counters["step"]
                t0 = time.perf_counter()
                batch = next(batches)
                inputs = model_inputs(batch, info.device, vae=vae, text_encoder=text_encoder,
                                      translation_scale=cfg.dit.ucpe_translation_scale)
                t_data = time.perf_counter()

                lr = learning_rate(step, cfg)
                for group in optim.param_groups:
                    group["lr"] = lr
                B, _, T, Hl, Wl = inputs.latents.shape
                cp = None if dims.cp_group is None else cp_context(T, dims.cp_group)
                with autocast:
                    loss = flow_matching_loss(model, inputs.latents, inputs.cameras, inputs.text, inputs.text_mask,
                                              flow, generator, mode=cfg.mode, cp=cp)
                if step + 1 == fault_step:
                    raise RuntimeError(f"injected fault ({FAULT_ENV}={os.environ[FAULT_ENV]})")
                (loss if cp is None else loss * dims.cp).backward()  # see the module docstring
                grad_norm = _clip_gradients(model, cfg.grad_clip, step)
                optim.step()
                optim.zero_grad(set_to_none=True)
                ema.update(model)
                if info.device.type == "cuda":
                    torch.cuda.synchronize(info.device)
                t_end = time.perf_counter()

                counters["step"] = step + 1
                counters["samples"] += B * dims.dp
                counters["tokens"] += B * T * Hl * Wl * dims.dp
                wait_total, time_total = wait_total + (t_data - t0), time_total + (t_end - t0)
                loss_value = _mean_over_ranks(_clip_loss(loss, dims), info)  # cp ranks agree: the mean over dp
                if counters["step"] % cfg.log_every == 0 or counters["step"] == cfg.steps:
                    bad = sum(loader.bad_counts().values())
                    row = {"step": counters["step"], "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                           "samples_per_s": B * dims.dp / (t_end - t0), "tokens_per_s": B * T * Hl * Wl * dims.dp / (t_end - t0),
                           "step_time_s": t_end - t0, "data_wait_s": t_data - t0, "stall_fraction": wait_total / time_total,
                           "mem_gb": peak_memory_gb(info.device), "bad_samples": round(_mean_over_ranks(bad, info) * dims.dp),
                           "samples": counters["samples"]}
                    metrics.write(row)
                    if info.rank == 0:
                        rows.append(row)
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                bar.update(1)

                if counters["step"] % cfg.ckpt_every == 0 or counters["step"] == cfg.steps:
                    parts = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optim),
                             "ema": ema.state_dict(), "train": dict(counters)}
                    mine = {"rng": rng_state(generator), "data": json.dumps(loader.state_dict())}
                    last_ckpt = save_checkpoint(ckpt_root, counters["step"], parts, mine, cfg.to_dict(), cfg.hash(),
                                                cfg.keep_last)
                if counters["step"] % cfg.gc_every == 0:
                    gc.collect(1)
                if on_step is not None:
                    on_step(counters["step"], loss_value)
        except Exception as err:
            # torchrun names the rank only by exit code; this line says where and what, and where to resume.
            resume = f"resume from {last_ckpt}" if last_ckpt else "no checkpoint yet"
            log.error("rank %d failed at step %d (%s): %s: %s", info.rank, step + 1, resume, type(err).__name__, err)
            raise
    bar.close()
    metrics.close()
    return rows


__all__ = ["EMA", "FAULT_ENV", "METRICS_FILE", "MetricsLog", "injected_fault_step", "learning_rate", "peak_memory_gb", "train"]
