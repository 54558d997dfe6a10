"""``wmkit train …``: train the DiT from shards, plot a run, encode latent shards.

Each sub-command builds its inputs and calls one library function (`train`, `plot_loss`,
`encode_latent_shards`); knobs go in the config (`--preset` plus `field=value`).
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  wmkit train run --preset tiny_cpu --shards shards/ --out runs/tiny steps=200 lr=1e-3
  torchrun --nproc-per-node 8 -m wmkit.cli train run --preset 2.6b_720p_61s_h100 --shards latents/ --out runs/a
  # 2 data-parallel x 2 context-parallel ranks (each clip's latent frames split over 2 GPUs)
  torchrun --nproc-per-node 4 -m wmkit.cli train run --preset 2.6b_720p_61s_h100 --shards latents/ --out runs/b cp=2
  wmkit train plot runs/tiny
  wmkit train encode-latents --shards shards/ --out latents/ --vae /weights/ltx-vae
"""


def run_train(args: argparse.Namespace) -> int:
    """Build the config from the preset and overrides, then train."""
    import torch.distributed as dist

    from .config import apply_overrides, run_preset
    from .trainer import train

    try:
        cfg = run_preset(args.preset)
        paths = [f"{k}={v}" for k, v in (("shards", args.shards), ("out", args.out)) if v is not None]
        cfg = apply_overrides(cfg, paths + list(args.overrides))
    except (KeyError, ValueError) as err:
        print(f"wmkit train run: {err}", file=sys.stderr)
        return 2
    try:
        rows = train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rows:
        print(f"step {rows[-1]['step']}: loss {rows[-1]['loss']:.4f}; metrics in {cfg.out}/metrics.jsonl")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export a run's newest checkpoint as plain weight files."""
    from .checkpoint import CheckpointError
    from .export import export_model_weights

    try:
        print(export_model_weights(args.run_dir, args.out, use_ema=not args.raw))
    except (OSError, ValueError, CheckpointError) as err:
        print(f"wmkit train export: {err}", file=sys.stderr)
        return 2
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Write the loss-curve PNG of a run."""
    from .plot import plot_loss

    try:
        print(plot_loss(args.run_dir, args.png))
    except (OSError, ValueError) as err:
        print(f"wmkit train plot: {err}", file=sys.stderr)
        return 2
    return 0


def run_encode_latents(args: argparse.Namespace) -> int:
    """Re-write video shards with VAE latents."""
    from .latents import encode_latent_shards

    status = encode_latent_shards(args.shards, args.out, args.vae, batch_size=args.batch_size, device=args.device)
    print(status["status"].value_counts().to_string() if "status" in status else status.to_string())
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    """Add ``train`` with ``run``, ``plot`` and ``encode-latents`` to the top-level verbs."""
    parser = verbs.add_parser("train", help="train the GDN DiT from shards", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="train_cmd", required=True, metavar="CMD")

    run = sub.add_parser("run", help="train (torchrun for several processes)", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--preset", required=True, help="run preset: tiny_cpu, small_1gpu, 2.6b_720p_61s_h100")
    run.add_argument("--shards", help="shard directory, glob or index.parquet (the config's shards=)")
    run.add_argument("--out", help="run directory (the config's out=)")
    run.add_argument("overrides", nargs="*", metavar="FIELD=VALUE", help="TrainConfig field overrides")
    run.set_defaults(run=run_train)

    plot = sub.add_parser("plot", help="loss-curve PNG from RUN/metrics.jsonl")
    plot.add_argument("run_dir", metavar="RUN", help="run directory")
    plot.add_argument("--png", help="output path (default RUN/loss.png)")
    plot.set_defaults(run=run_plot)

    export = sub.add_parser("export", help="newest checkpoint -> model.safetensors + model.json for wmkit generate")
    export.add_argument("run_dir", metavar="RUN", help="run directory")
    export.add_argument("--out", required=True, help="output .safetensors path (its .json config is written beside)")
    export.add_argument("--raw", action="store_true", help="export the trained weights instead of the EMA weights")
    export.set_defaults(run=run_export)

    enc = sub.add_parser("encode-latents", help="video shards -> latent shards (latents.safetensors per clip)")
    enc.add_argument("--shards", required=True, help="input video shard directory")
    enc.add_argument("--out", required=True, help="output latent shard directory")
    enc.add_argument("--vae", required=True, help="local VAE folder")
    enc.add_argument("--batch-size", type=int, default=1, help="clips per VAE call")
    enc.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    enc.set_defaults(run=run_encode_latents)


__all__ = ["register"]
