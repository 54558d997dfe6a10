"""``wmkit manifest …``: build, inspect, filter, split and merge manifests.

Each sub-command reads its arguments, calls one library function from
:mod:`wmkit.manifests` and prints what it did; tests call the same functions.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from wmkit.manifests.ops import dedup_manifest, filter_manifest, merge_manifests, split_manifest
from wmkit.manifests.schema import SOURCES, read_manifest, write_manifest

Handler = Callable[[argparse.Namespace], int]


def _reports_errors(handler: Handler) -> Handler:
    """Turn a bad manifest or a missing file into one line on stderr and exit code 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (OSError, ValueError) as err:  # ManifestError is a ValueError
            print(f"wmkit manifest {args.manifest_cmd}: {err}", file=sys.stderr)
            return 2

    return run


def _write(df: pd.DataFrame, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_manifest(df, out)
    print(f"wrote {len(df):,} rows to {out}")


@_reports_errors
def run_build(args: argparse.Namespace) -> int:
    """Read one source's catalogue; exit 1 only when no row could be read."""
    from wmkit.manifests.readers import build_manifest  # lazy: readers pull in per-source deps

    errors: list[tuple[str, str]] = []
    df = build_manifest(args.source, args.root, errors=errors)
    if errors:
        print(f"{len(errors):,} unreadable rows:")
        for source_id, reason in errors:
            print(f"  {source_id}: {reason}")
    if len(df) == 0:
        print(f"no rows could be read from {args.root} as {args.source!r}; nothing written", file=sys.stderr)
        return 1
    _write(df, args.out)
    return 0


@_reports_errors
def run_stats(args: argparse.Namespace) -> int:
    """Print clips/hours/frames per source and resolution; optionally save a chart."""
    from wmkit.manifests.stats import format_table, manifest_stats, plot_stats  # lazy: matplotlib is slow to import

    stats = manifest_stats(read_manifest(args.manifest))
    print(format_table(stats))
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        plot_stats(stats, args.png)
        print(f"wrote {args.png}")
    return 0


def _score(text: str) -> tuple[str, float]:
    """Parse ``KEY=MIN``; the key may hold spaces or ``=`` (split at the last ``=``)."""
    key, sep, minimum = text.rpartition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=MIN, got {text!r}")
    try:
        return key, float(minimum)
    except ValueError:
        raise argparse.ArgumentTypeError(f"score minimum in {text!r} is not a number") from None


@_reports_errors
def run_filter(args: argparse.Namespace) -> int:
    """Apply thresholds, print how many rows each removed, write the rest."""
    kept, report = filter_manifest(
        read_manifest(args.manifest),
        min_duration_s=args.min_duration,
        max_duration_s=args.max_duration,
        min_width=args.min_width,
        min_height=args.min_height,
        min_fps=args.min_fps,
        sources=args.source,
        require_cameras=args.require_cameras,
        score_min=dict(args.score) if args.score else None,
    )
    print(report.format())
    _write(kept, args.out)
    return 0


@_reports_errors
def run_dedup(args: argparse.Namespace) -> int:
    """Drop repeated clips and print how many went."""
    df = read_manifest(args.manifest)
    kept = dedup_manifest(df)
    renamed = int((~kept["clip_id"].isin(df["clip_id"])).sum())
    print(f"{len(df):,} rows, {len(df) - len(kept):,} duplicates dropped, {renamed:,} clip_ids suffixed")
    _write(kept, args.out)
    return 0


@_reports_errors
def run_split(args: argparse.Namespace) -> int:
    """Add the train/val column and print the resulting sizes."""
    out = split_manifest(read_manifest(args.manifest), args.val_fraction, seed=args.seed)
    counts = out["split"].value_counts()
    for split in ("train", "val"):
        print(f"{split}: {int(counts.get(split, 0)):,} clips")
    _write(out, args.out)
    return 0


@_reports_errors
def run_merge(args: argparse.Namespace) -> int:
    """Concatenate manifests in the given order and print rows per input."""
    dfs = [read_manifest(path) for path in args.manifests]
    for path, df in zip(args.manifests, dfs):
        print(f"{path}: {len(df):,} rows")
    merged = merge_manifests(dfs)
    renamed = int((~merged["clip_id"].isin(pd.concat([df["clip_id"] for df in dfs]))).sum())
    print(f"{renamed:,} clip_ids suffixed to stay unique")
    _write(merged, args.out)
    return 0


def _sub(cmds: argparse._SubParsersAction, name: str, help: str, examples: str, handler: Handler) -> argparse.ArgumentParser:
    parser = cmds.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=handler)
    return parser


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``manifest`` verb and its sub-commands to ``verbs``."""
    parser = verbs.add_parser(
        "manifest",
        help="source catalogues -> manifest.parquet",
        description="Build, inspect, filter, de-duplicate, split and merge manifests (one row per clip).",
        epilog=(
            "examples:\n"
            "  wmkit manifest build --source spatialvid --root /data/SpatialVID-HQ --out spatialvid.parquet\n"
            "  wmkit manifest merge spatialvid.parquet miradata.parquet --out all.parquet\n"
            "  wmkit manifest dedup all.parquet --out all.dedup.parquet\n"
            "  wmkit manifest stats all.dedup.parquet --png all.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = parser.add_subparsers(dest="manifest_cmd", required=True, metavar="CMD")

    p = _sub(
        cmds,
        "build",
        "read one source's catalogue into a manifest",
        "  wmkit manifest build --source spatialvid --root /data/SpatialVID-HQ --out spatialvid.parquet\n"
        "  wmkit manifest build --source local --root ~/videos --out local.parquet",
        run_build,
    )
    p.add_argument("--source", required=True, choices=SOURCES, help="catalogue layout to read")
    p.add_argument("--root", required=True, help="folder holding the source as downloaded")
    p.add_argument("--out", required=True, help="manifest parquet to write")

    p = _sub(
        cmds,
        "stats",
        "print clips, hours and frames per source and resolution",
        "  wmkit manifest stats all.parquet\n"
        "  wmkit manifest stats all.parquet --png all-stats.png",
        run_stats,
    )
    p.add_argument("manifest", help="manifest parquet")
    p.add_argument("--png", help="also save a bar chart here")

    p = _sub(
        cmds,
        "filter",
        "keep the clips that pass every threshold",
        "  wmkit manifest filter spatialvid.parquet --out hq.parquet --min-duration 5 --min-height 720\n"
        '  wmkit manifest filter all.parquet --out keep.parquet --source spatialvid miradata --score "aesthetic score=4.5"',
        run_filter,
    )
    p.add_argument("manifest", help="manifest parquet")
    p.add_argument("--out", required=True, help="manifest parquet to write")
    p.add_argument("--min-duration", type=float, metavar="S", help="shortest clip kept, seconds")
    p.add_argument("--max-duration", type=float, metavar="S", help="longest clip kept, seconds")
    p.add_argument("--min-width", type=int, metavar="W", help="narrowest clip kept, pixels")
    p.add_argument("--min-height", type=int, metavar="H", help="lowest clip kept, pixels")
    p.add_argument("--min-fps", type=float, metavar="FPS", help="lowest frame rate kept")
    p.add_argument("--source", nargs="+", choices=SOURCES, metavar="NAME", help="keep only these sources")
    p.add_argument("--require-cameras", action="store_true", help="keep only clips with source cameras")
    p.add_argument(
        "--score",
        type=_score,
        action="append",
        metavar="KEY=MIN",
        help="keep clips whose extra[KEY] >= MIN; clips without KEY are dropped (repeatable)",
    )

    p = _sub(
        cmds,
        "dedup",
        "drop repeated clips (same source id, or same media and span)",
        "  wmkit manifest dedup all.parquet --out all.dedup.parquet",
        run_dedup,
    )
    p.add_argument("manifest", help="manifest parquet")
    p.add_argument("--out", required=True, help="manifest parquet to write")

    p = _sub(
        cmds,
        "split",
        "add a train/val split column, grouped by scene or media",
        "  wmkit manifest split all.parquet --out all.split.parquet --val-fraction 0.05\n"
        "  wmkit manifest split all.parquet --out all.split.parquet --val-fraction 0.02 --seed run7",
        run_split,
    )
    p.add_argument("manifest", help="manifest parquet")
    p.add_argument("--out", required=True, help="manifest parquet to write")
    p.add_argument("--val-fraction", type=float, required=True, help="share of scene groups sent to val, 0..1")
    p.add_argument("--seed", default="wmkit", help="hash seed; a new seed draws a new split")

    p = _sub(
        cmds,
        "merge",
        "concatenate manifests, suffixing colliding clip_ids",
        "  wmkit manifest merge spatialvid.parquet miradata.parquet dl3dv.parquet --out all.parquet",
        run_merge,
    )
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="manifest parquets, merged in this order")
    p.add_argument("--out", required=True, help="manifest parquet to write")
