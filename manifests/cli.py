"""``wmkit manifest …``: build, inspect, filter, split and merge manifests."""

from __future__ import annotations

import argparse


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``manifest`` verb and its sub-commands to ``verbs``."""
    parser = verbs.add_parser("manifest", help="source catalogues -> manifest.parquet")
    parser.add_subparsers(dest="manifest_cmd", required=True, metavar="CMD")
