"""The ``wmkit`` command: one verb per folder.

This module only registers verbs; each folder's ``cli.py`` owns its arguments
and calls a library function that tests import directly.

Usage::

    wmkit demo --out /tmp/wmkit-demo
    wmkit manifest build --source spatialvid --root /data/SpatialVID-HQ --out spatialvid.parquet
    wmkit shards ingest --manifest spatialvid.parquet --out shards/
    wmkit render --scenes dl3dv_gs.parquet --out shards/render --paths-per-scene 4
    wmkit annotate --manifest m.parquet --out shards/ --pi3x-weights pi3x.safetensors --moge-weights moge2.safetensors
"""

from __future__ import annotations

import argparse
import sys

from wmkit import __version__


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every folder's verb registered."""
    from wmkit import demo
    from wmkit.annotate import cli as annotate_cli
    from wmkit.annotate import eval_cli
    from wmkit.datasets import cli as datasets_cli
    from wmkit.manifests import cli as manifests_cli
    from wmkit.model import cli as model_cli
    from wmkit.render import cli as render_cli
    from wmkit.train import cli as train_cli

    parser = argparse.ArgumentParser(prog="wmkit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"wmkit {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    manifests_cli.register(verbs)
    datasets_cli.register(verbs)
    annotate_cli.register(verbs)
    render_cli.register(verbs)
    train_cli.register(verbs)
    model_cli.register(verbs)
    eval_cli.register(verbs)
    demo.register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; return its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
