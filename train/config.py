"""Trainer configuration: one dataclass composed of the model preset and the run's knobs.

A run is a named preset (`RUN_PRESETS`) with `field=value` overrides from the command line
(`apply_overrides`); the model's shape lives with the model (`wmkit.model.config`), the
trainer only names its preset. Every field is documented where declared and checked in
`__post_init__`, so a bad combination fails before any data is read.

Usage::

    cfg = run_preset("tiny_cpu", shards="shards/", out="runs/tiny", steps=200)
    cfg = apply_overrides(cfg, ["lr=3e-4", "batch_size=4", "cp=2"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from wmkit.model.config import PRESETS, DiTConfig, preset

DataKind = Literal["latents", "video"]
Precision = Literal["auto", "bf16", "bf16_params", "fp32"]
Mode = Literal["bidirectional", "chunk_causal"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its data; stored in each checkpoint."""

    # --- model ---------------------------------------------------------------------
    model: str = "tiny"
    """DiT preset name (`wmkit.model.PRESETS`: tiny, small, 2.6b)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """`DiTConfig` fields replaced on the preset, e.g. {"latent_channels": 8} for a small VAE."""
    mode: Mode = "bidirectional"
    """Attention mode trained: "bidirectional" or "chunk_causal"."""
    # --- data ----------------------------------------------------------------------
    shards: str = ""
    """Shard source: a directory, glob, brace pattern or index.parquet (`list_shards`)."""
    data: DataKind = "latents"
    """"latents": read `latents.safetensors`; "video": decode the mp4 and encode it with `vae`."""
    vae: str = ""
    """Local VAE folder for data="video" (`wmkit.model.vae`); "pool" selects the pooling stand-in
    of the tests (`wmkit.train.pooling_vae`), which is no real VAE."""
    text_encoder: str = ""
    """Local text-encoder folder (`wmkit.model.text_encoder`); empty: every sample must carry
    precomputed `text` embeddings in its latents.safetensors."""
    text_max_length: int = 300
    """Tokens per caption when `text_encoder` is used (the release: 300)."""
    batch_size: int = 1
    """Clips per rank per step; a batch holds clips of one (T', H', W') bucket."""
    max_latent_frames: int = 0
    """Crop clips to at most this many latent frames (0: no crop)."""
    shuffle_buffer: int = 64
    """Raw samples held by the shuffle buffer per worker (0/1: none)."""
    resampled: bool = True
    """Draw shards with replacement forever (training) instead of epochs of one pass."""
    num_workers: int = 0
    """DataLoader worker processes per rank (0: read in the training process)."""
    max_consecutive_bad: int = 1000
    """Raise after this many bad samples in a row: the data, not a sample, is broken."""
    # --- flow matching (DESIGN §3 training) ------------------------------------------
    logit_mean: float = 0.0
    """Mean of the logit-normal distribution of t."""
    logit_std: float = 1.0
    """Standard deviation of the logit-normal distribution of t."""
    flow_shift: float = 1.0
    """Flow shift s applied to t: t' = s·t / (1 + (s − 1)·t); ≈ 9.95 at 720p."""
    image_condition_prob: float = 0.9
    """Probability that a clip's first latent frame is clean (image conditioning, loss masked)."""
    # --- optimiser and schedule ----------------------------------------------------
    steps: int = 100
    """Optimiser steps of the whole run (a resumed run continues to this)."""
    lr: float = 1e-4
    """AdamW peak learning rate (the article: 1e-5 for 2.6b)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    beta1: float = 0.9
    """AdamW β₁."""
    beta2: float = 0.999
    """AdamW β₂."""
    warmup_steps: int = 10
    """Linear warm-up from 0 to `lr`; constant afterwards."""
    grad_clip: float = 0.5
    """Clip the global gradient norm to this (0: no clipping)."""
    ema_decay: float = 0.999
    """EMA of the weights: ema ← decay·ema + (1 − decay)·w after every step."""
    seed: int = 0
    """Seed of the model init, the data order and the flow noise (per rank: seed + rank)."""
    # --- precision and parallelism ---------------------------------------------------
    precision: Precision = "auto"
    """"auto": bf16 autocast on CUDA, fp32 on CPU. "bf16_params": FSDP2 mixed precision instead of
    autocast (fp32 master weights and reduction, blocks run on bf16 weight copies, so activation
    checkpoints are bf16), on one process too; needs `fsdp`."""
    fsdp: bool = True
    """Shard parameters with FSDP2 (`fully_shard`) when more than one rank runs."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward (needed for 2.6b at 720p)."""
    ffn_frame_chunk: int = 0
    """Recompute the FFN's per-frame part this many latent frames at a time (0: off; exact)."""
    ac_keep_attention: bool = False
    """With activation checkpointing, save the softmax self-attention outputs instead of
    recomputing them (selective AC: ~0.5 GB per softmax block and branch at 121 × 880 tokens,
    one SDPA forward fewer each)."""
    compile: bool = False
    """torch.compile each (checkpointed) block as one graph; the GDN op is an opaque custom op."""
    context_parallel: int = 1
    """Ranks that split one clip's latent frames (context parallelism; `cp=` on the command
    line). The world is a dp × cp mesh with cp ranks contiguous: each cp group reads the same
    clips and each of its ranks runs `frame_slice` of their frames; FSDP2 shards over all
    ranks. The world size must be a multiple; clips of fewer latent frames are skipped (counted
    as bad samples, "too few latent frames")."""
    # --- logging and checkpoints ---------------------------------------------------
    out: str = "runs/train"
    """Run directory: metrics.jsonl, checkpoints/, config.json."""
    log_every: int = 1
    """Write a metrics row every this many steps."""
    ckpt_every: int = 100
    """Save a checkpoint every this many steps (and at the last step)."""
    gc_every: int = 50
    """Collect Python's young garbage generations every this many steps; the automatic
    collector is off while training (`trainer.manual_gc`)."""
    keep_last: int = 3
    """Keep this many checkpoints; older ones are deleted."""
    resume: bool = True
    """Continue from the newest complete checkpoint in `out/checkpoints` if there is one."""
    progress: bool = True
    """Show a tqdm progress bar on rank 0."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried into checkpoints (e.g. the launcher's command)."""

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"TrainConfig: unknown model preset {self.model!r}; choose one of {sorted(PRESETS)}")
        if self.mode not in ("bidirectional", "chunk_causal"):
            raise ValueError(f"TrainConfig: mode must be 'bidirectional' or 'chunk_causal', got {self.mode!r}")
        if self.data not in ("latents", "video"):
            raise ValueError(f"TrainConfig: data must be 'latents' or 'video', got {self.data!r}")
        if self.data == "video" and not self.vae:
            raise ValueError("TrainConfig: data='video' needs vae= (a local VAE folder, or 'pool' in tests)")
        if self.precision not in ("auto", "bf16", "bf16_params", "fp32"):
            raise ValueError(f"TrainConfig: precision must be 'auto', 'bf16', 'bf16_params' or 'fp32', "
                             f"got {self.precision!r}")
        if self.precision == "bf16_params" and not self.fsdp:
            raise ValueError("TrainConfig: precision='bf16_params' is FSDP2's mixed precision and needs fsdp=true")
        if self.ffn_frame_chunk < 0:
            raise ValueError(f"TrainConfig: ffn_frame_chunk must be >= 0 (0: off), got {self.ffn_frame_chunk}")
        positive = {"batch_size": self.batch_size, "steps": self.steps, "log_every": self.log_every,
                    "ckpt_every": self.ckpt_every, "gc_every": self.gc_every, "keep_last": self.keep_last, "lr": self.lr,
                    "text_max_length": self.text_max_length, "max_consecutive_bad": self.max_consecutive_bad,
                    "flow_shift": self.flow_shift, "logit_std": self.logit_std,
                    "context_parallel": self.context_parallel}
        bad = [f"{k}={v}" for k, v in positive.items() if not v > 0]
        if bad:
            raise ValueError(f"TrainConfig: these must be positive: {', '.join(bad)}")
        nonneg = {"warmup_steps": self.warmup_steps, "grad_clip": self.grad_clip, "weight_decay": self.weight_decay,
                  "num_workers": self.num_workers, "shuffle_buffer": self.shuffle_buffer,
                  "max_latent_frames": self.max_latent_frames}
        bad = [f"{k}={v}" for k, v in nonneg.items() if v < 0]
        if bad:
            raise ValueError(f"TrainConfig: these must be >= 0: {', '.join(bad)}")
        for name in ("image_condition_prob", "ema_decay", "beta1", "beta2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig: {name} must lie in [0, 1], got {getattr(self, name)}")

    @property
    def dit(self) -> DiTConfig:
        """The model's configuration."""
        return preset(self.model, **self.model_overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """sha256 of the canonical JSON of the fields that shape the run (not paths or logging)."""
        shaping = {k: v for k, v in self.to_dict().items() if k not in ("out", "shards", "progress", "resume", "extra")}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


def _tiny_cpu() -> TrainConfig:
    # Trains on one CPU in tests and `wmkit demo`: a larger lr than the article's because the
    # tiny model is shallow and its runs are short.
    return TrainConfig(model="tiny", lr=3e-3, warmup_steps=5, batch_size=2, ema_decay=0.99, steps=60,
                       ckpt_every=20, shuffle_buffer=8)


def _small_1gpu() -> TrainConfig:
    return TrainConfig(model="small", lr=1e-4, warmup_steps=200, batch_size=4, steps=20_000, ckpt_every=1000,
                       num_workers=4, shuffle_buffer=256)


def _sana_wm_2p6b_720p_61s_h100() -> TrainConfig:
    # The article's run: 2.6B, one 61-s 720p clip (121 latent frames × 880 tokens) per GPU,
    # AdamW lr 1e-5, grad clip 0.5, flow shift ≈ 9.95 at 720p, AC to fit in 80 GB, FSDP2 over ranks.
    # The step of bench/train.py's fastest case: selective AC, FFN chunks of 8 frames, compiled blocks.
    return TrainConfig(model="2.6b", lr=1e-5, warmup_steps=1000, batch_size=1, flow_shift=9.95, steps=100_000,
                       ckpt_every=1000, precision="bf16_params", activation_checkpointing=True, ffn_frame_chunk=8,
                       ac_keep_attention=True, compile=True, num_workers=6,
                       shuffle_buffer=128, text_encoder="", ema_decay=0.9999)


RUN_PRESETS = {
    "tiny_cpu": _tiny_cpu,
    "small_1gpu": _small_1gpu,
    "2.6b_720p_61s_h100": _sana_wm_2p6b_720p_61s_h100,
}
"""Named runs (model, clip length, hardware) → a function returning their full config."""


def run_preset(name: str, **overrides: Any) -> TrainConfig:
    """The named run preset with fields replaced by `overrides`."""
    if name not in RUN_PRESETS:
        raise KeyError(f"unknown run preset {name!r}; choose one of {sorted(RUN_PRESETS)}")
    return replace(RUN_PRESETS[name](), **overrides)


def _parse_value(name: str, text: str, current: Any) -> Any:
    """Convert `text` to the type of the field's current value."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"override {name}={text}: expected a boolean (true/false)")
    if isinstance(current, dict):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"override {name}={text}: expected a JSON object")
        return value
    try:
        return type(current)(text)
    except ValueError as err:
        raise ValueError(f"override {name}={text}: expected {type(current).__name__} ({err})") from err


SHORT_NAMES = {"cp": "context_parallel"}
"""Override names that stand for a longer field name (`cp=2`)."""


def apply_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """Apply `field=value` strings (typed like the field; `SHORT_NAMES` accepted) and re-check the config."""
    names = {f.name for f in fields(cfg)}
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = SHORT_NAMES.get(name, name)
        if not sep:
            raise ValueError(f"override {item!r} is not field=value")
        if name not in names:
            raise ValueError(f"override {item!r}: TrainConfig has no field {name!r}; fields: {sorted(names)}")
        changes[name] = _parse_value(name, text, getattr(cfg, name))
    return replace(cfg, **changes)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with `to_dict` (unknown keys are an error)."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"saved TrainConfig has unknown fields {unknown}")
    return TrainConfig(**data)


__all__ = ["RUN_PRESETS", "SHORT_NAMES", "TrainConfig", "apply_overrides", "config_from_dict", "run_preset"]
