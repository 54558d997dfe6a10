"""Merge the per-network parity results into ``bench/results/parity.json`` (issue 6's results file).

Each parity script (``pi3x_parity.py``, ``moge2_parity.py``) writes its own
``parity_<net>.json`` from a run beside the upstream code; this keeps them and
writes one file whose top-level ``summary`` holds ``pi3x_max_rel_err`` and
``moge2_max_rel_err`` (max |ours - upstream| / max |upstream| over every output,
fp32, same random weights and inputs) and whether both meet the 1e-3 goal.

Usage::

    python bench/parity/combine.py            # reads bench/results/parity_{pi3x,moge2}.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GOAL = 1e-3
NETWORKS = ("pi3x", "moge2")


def combine(results: Path) -> dict:
    """The merged result of ``results/parity_<net>.json`` for every network; a missing file raises."""
    per_net = {}
    for net in NETWORKS:
        path = results / f"parity_{net}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: run bench/parity/{net}_parity.py first")
        per_net[net] = json.loads(path.read_text())
    errors = {f"{net}_max_rel_err": float(per_net[net]["summary"][f"{net}_max_rel_err"]) for net in NETWORKS}
    summary = {**errors, "goal": GOAL, "pass": all(err <= GOAL for err in errors.values())}
    return {"summary": summary, **per_net}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    merged = combine(args.results)
    (args.results / "parity.json").write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(merged["summary"]))


if __name__ == "__main__":
    main()
