"""``wmkit annotate``: metric cameras, per-frame intrinsics and depth for the clips of a manifest.

Builds an :class:`~wmkit.annotate.config.AnnotateConfig` from ``--preset``,
the backend flags and ``--set field=value`` overrides, then calls
:func:`~wmkit.annotate.pipeline.annotate_manifest`. Exit codes: 0 done (failed
clips are rows of status.parquet, printed with stage and reason), 2 unusable
input (missing manifest, bad override, unknown preset).
"""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  # synthetic source, perturbed backends reading its ground truth, Ray on this machine
  wmkit annotate --manifest synth/manifest.parquet --out shards/synth \\
      --backend perturbed --metric-backend perturbed_metric --gt-root synth/gt
  # in-process, small settings (a 2-core laptop or CI)
  wmkit annotate --manifest m.parquet --out shards/ --runner local --preset cpu_test --gt-root synth/gt
  # knobs as overrides; redo earlier failures
  wmkit annotate --manifest m.parquet --out shards/ --gt-root synth/gt \\
      --set ba.per_frame_intrinsics=false --set size=320x192 --set num_actors=2 --retry-failed
  # one 8-GPU node of a Ray cluster (RAY_ADDRESS set)
  wmkit annotate --manifest spatialvid.parquet --out shards/spatialvid --preset h100_x8 \\
      --pi3x-weights /ckpt/pi3x.safetensors --moge-weights /ckpt/moge2.safetensors
"""


def build_config(args: argparse.Namespace):
    """The run's config: preset, backend flags, ``--set`` overrides, then ``--gt-root`` for backends that take it.

    Raises ValueError for an unknown preset, a bad override or an unknown backend name.
    """
    import importlib
    import inspect

    from wmkit.annotate.backends import BACKENDS
    from wmkit.annotate.config import apply_overrides, preset

    overrides = []
    if args.backend or args.pi3x_weights:
        overrides.append(f"geometry_backend={args.backend or 'pi3x'}")
    if args.metric_backend or args.moge_weights:
        overrides.append(f"metric_backend={args.metric_backend or 'moge2'}")
    if args.pi3x_weights:
        overrides.append(f"geometry_options.weights={args.pi3x_weights}")
    if args.moge_weights:
        overrides.append(f"metric_options.weights={args.moge_weights}")
    config = apply_overrides(preset(args.preset), overrides + list(args.set))
    for module in config.plugins:  # out-of-tree backends register on import
        importlib.import_module(module)
    roles = {"geometry_options": config.geometry_backend, "metric_options": config.metric_backend}
    unknown = sorted(set(roles.values()) - set(BACKENDS))
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; registered: {sorted(BACKENDS)}")
    if args.gt_root:  # only the ground-truth instruments (perturbed*) read it; colmap or networks do not
        takes = [role for role, name in roles.items() if "gt_root" in inspect.signature(BACKENDS[name]).parameters]
        config = apply_overrides(config, [f"{role}.gt_root={args.gt_root}" for role in takes])
    return config


def run_annotate(args: argparse.Namespace) -> int:
    """Annotate the manifest; print done/failed counts and each failure with its stage and reason."""
    from wmkit.annotate.pipeline import annotate_manifest
    from wmkit.datasets.ingest import status_summary

    try:
        config = build_config(args)
        status = annotate_manifest(
            args.manifest,
            args.out,
            config,
            runner=args.runner,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
        )
    except (OSError, ValueError) as err:  # ManifestError and AnnotateError are ValueErrors
        print(f"wmkit annotate: {err}", file=sys.stderr)
        return 2
    print(status_summary(status))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``annotate`` verb to ``verbs``."""
    from wmkit.annotate.config import PRESETS

    parser = verbs.add_parser(
        "annotate",
        help="manifest -> shards with metric cameras, per-frame K and depth (Ray or in-process)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets:\n"
        + "".join(f"  {name:<10} {desc}\n" for name, (desc, _) in PRESETS.items())
        + "\n"
        + EXAMPLES,
    )
    parser.add_argument("--manifest", required=True, help="manifest.parquet")
    parser.add_argument("--out", required=True, help="shard directory (index.parquet and status.parquet go there)")
    parser.add_argument("--preset", default="laptop", help="starting config (default: laptop)")
    parser.add_argument("--backend", help="geometry backend (up-to-scale poses + depth), e.g. perturbed, colmap")
    parser.add_argument("--metric-backend", help="metric-depth backend, e.g. perturbed_metric")
    parser.add_argument("--pi3x-weights", help="local Pi3X checkpoint (.safetensors or .pt); implies --backend pi3x")
    parser.add_argument("--moge-weights", help="local MoGe-2 checkpoint; implies --metric-backend moge2")
    parser.add_argument("--gt-root", help="ground-truth folder for the perturbed test backends")
    parser.add_argument("--runner", choices=("ray", "local"), default="ray", help="Ray Data or in-process")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="config override (repeatable)"
    )
    parser.add_argument("--retry-failed", action="store_true", help="redo clips that failed in an earlier run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_annotate)
