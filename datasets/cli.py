"""``wmkit shards …``: build, verify and inspect webdataset shards."""

from __future__ import annotations

import argparse


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``shards`` verb and its sub-commands to ``verbs``."""
    parser = verbs.add_parser("shards", help="manifests -> webdataset shards; verify and stats")
    parser.add_subparsers(dest="shards_cmd", required=True, metavar="CMD")
