"""``wmkit shards …``: build, verify and inspect webdataset shards.

Each sub-command parses its arguments, calls one library function
(:func:`~wmkit.datasets.ingest.ingest_manifest`,
:func:`~wmkit.datasets.shard_index.verify_shards`,
:func:`~wmkit.datasets.shard_index.shard_stats`) and prints the result; tests
call the same functions. Exit codes: 0 done (an ingest whose clips failed is
still done: failures are rows of status.parquet, printed with their reasons),
1 a failed verification, 2 unusable input (missing directory, bad manifest).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

Handler = Callable[[argparse.Namespace], int]


def _reports_errors(handler: Handler) -> Handler:
    """Turn unusable input (missing file, bad manifest or index) into one stderr line and exit code 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (OSError, ValueError) as err:  # ManifestError, ShardFormatError are ValueErrors
            print(f"wmkit shards {args.shards_cmd}: {err}", file=sys.stderr)
            return 2

    return run


@_reports_errors
def run_ingest(args: argparse.Namespace) -> int:
    """Ingest a manifest; print done/failed counts and each failure with its stage and reason."""
    from wmkit.datasets.ingest import ingest_manifest, status_summary

    status = ingest_manifest(
        args.manifest,
        args.out,
        prefix=args.prefix,
        max_count=args.max_count,
        max_bytes=args.max_bytes,
        size=args.size,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(status_summary(status))
    return 0


@_reports_errors
def run_verify(args: argparse.Namespace) -> int:
    """Verify a shard directory; print each problem; exit 1 on any."""
    from wmkit.datasets.shard_index import verify_shards

    report = verify_shards(args.dir, check_video=args.decode)
    for problem in report.problems:
        print(problem)
    print(report.summary())
    return 0 if report.ok else 1


@_reports_errors
def run_stats(args: argparse.Namespace) -> int:
    """Print samples, frames, hours and bytes per source."""
    from wmkit.datasets.shard_index import shard_stats

    stats = shard_stats(args.dir)
    print(stats.to_string(formatters={"hours": "{:.3f}".format, "bytes": "{:,}".format}))
    return 0


def _size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``640x352``)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``shards`` verb and its sub-commands to ``verbs``."""
    parser = verbs.add_parser("shards", help="manifests -> webdataset shards; verify and stats")
    cmds = parser.add_subparsers(dest="shards_cmd", required=True, metavar="CMD")
    raw = argparse.RawDescriptionHelpFormatter

    ingest = cmds.add_parser(
        "ingest",
        help="build shards from a manifest whose sources carry cameras",
        formatter_class=raw,
        epilog="examples:\n"
        "  wmkit shards ingest --manifest spatialvid.parquet --out shards/spatialvid\n"
        "  wmkit shards ingest --manifest m.parquet --out shards/ --max-count 500 --size 640x352\n"
        "  wmkit shards ingest --manifest m.parquet --out shards/ --retry-failed   # resume, redo failures",
    )
    ingest.add_argument("--manifest", required=True, help="manifest.parquet")
    ingest.add_argument("--out", required=True, help="shard directory (index.parquet and status.parquet go there)")
    ingest.add_argument("--prefix", default="shard", help="shard name prefix (default: shard)")
    ingest.add_argument("--max-count", type=int, default=1000, help="samples per shard (default: 1000)")
    ingest.add_argument("--max-bytes", type=int, default=1 << 30, help="bytes per shard (default: 1 GiB)")
    ingest.add_argument("--size", type=_size, default=None, help="store frames at WIDTHxHEIGHT (default: source)")
    ingest.add_argument("--retry-failed", action="store_true", help="redo clips that failed in an earlier run")
    ingest.add_argument("--workers", type=int, default=0, help="processes building samples (default: 0)")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=run_ingest)

    verify = cmds.add_parser(
        "verify",
        help="check every shard against index.parquet; exit 1 on any problem",
        formatter_class=raw,
        epilog="examples:\n  wmkit shards verify shards/spatialvid\n  wmkit shards verify shards/ --decode",
    )
    verify.add_argument("dir", help="shard directory")
    verify.add_argument("--decode", action="store_true", help="also decode each mp4 and check its frame count")
    verify.set_defaults(run=run_verify)

    stats = cmds.add_parser(
        "stats",
        help="samples, frames, hours and bytes per source",
        formatter_class=raw,
        epilog="example:\n  wmkit shards stats shards/spatialvid",
    )
    stats.add_argument("dir", help="shard directory")
    stats.set_defaults(run=run_stats)
