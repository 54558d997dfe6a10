"""``wmkit eval …``: score annotated cameras and depth against ground truth.

Each sub-command reads files, calls one function of :mod:`wmkit.annotate.evaluate`
and prints the result; tests call the same functions. Exit codes: 0 scored,
2 unusable input (missing or malformed file, frames that do not match).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

Handler = Callable[[argparse.Namespace], int]


def _reports_errors(handler: Handler) -> Handler:
    """Turn unusable input (missing file, malformed npz, mismatched frames) into one stderr line and exit 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (OSError, ValueError, KeyError) as err:  # CameraError is a ValueError
            print(f"wmkit eval {args.eval_cmd}: {err}", file=sys.stderr)
            return 2

    return run


def _report(metrics: dict, json_path: Path | None) -> None:
    """Print ``metrics`` one per line and write them as JSON when asked."""
    for key, value in metrics.items():
        print(f"{key:>20}  {value:.6g}" if isinstance(value, float) else f"{key:>20}  {value}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


@_reports_errors
def run_cameras(args: argparse.Namespace) -> int:
    """Score a predicted cameras.npz against the true one; optionally plot and write JSON."""
    from wmkit.annotate.evaluate import evaluate_cameras, plot_trajectories
    from wmkit.datasets.cameras import Cameras

    pred, gt = Cameras.load(args.pred), Cameras.load(args.gt)
    metrics = evaluate_cameras(pred, gt)
    if args.png is not None:
        plot_trajectories(pred, gt, args.png)
    _report(metrics, args.json)
    return 0


def _load_depth(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``depth`` and, when present, ``valid`` from a depth.npz (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        if "depth" not in z:
            raise ValueError(f"{path}: no 'depth' array (has {sorted(z.files)})")
        return z["depth"], (z["valid"] if "valid" in z else None)


@_reports_errors
def run_depth(args: argparse.Namespace) -> int:
    """AbsRel of a predicted depth.npz against the true one, over pixels valid in both."""
    from wmkit.annotate.evaluate import depth_abs_rel

    pred, pred_valid = _load_depth(args.pred)
    gt, gt_valid = _load_depth(args.gt)
    valid = [mask for mask in (pred_valid, gt_valid) if mask is not None]
    mask = np.logical_and.reduce(valid) if valid else None
    _report({"depth_abs_rel": depth_abs_rel(pred, gt, mask)}, args.json)
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``eval`` verb and its sub-commands to ``verbs``."""
    parser = verbs.add_parser("eval", help="score annotated cameras and depth against ground truth")
    cmds = parser.add_subparsers(dest="eval_cmd", required=True, metavar="CMD")
    raw = argparse.RawDescriptionHelpFormatter

    cameras = cmds.add_parser(
        "cameras",
        help="ATE (Sim(3), SE(3)), RPE, scale and per-frame focal error of PRED against GT",
        formatter_class=raw,
        epilog="examples:\n"
        "  wmkit eval cameras out/synth-00001/cameras.npz synth/gt/synth-00001/cameras.npz\n"
        "  wmkit eval cameras pred.npz gt.npz --png trajectory.png --json metrics.json",
    )
    cameras.add_argument("pred", type=Path, help="predicted cameras.npz")
    cameras.add_argument("gt", type=Path, help="ground-truth cameras.npz (frames matched by frame_index)")
    cameras.add_argument("--png", type=Path, default=None, help="write a trajectory and focal plot here")
    cameras.add_argument("--json", type=Path, default=None, help="write the metrics as JSON here")
    cameras.set_defaults(run=run_cameras)

    depth = cmds.add_parser(
        "depth",
        help="depth AbsRel of PRED against GT (depth.npz files with 'depth' and optional 'valid')",
        formatter_class=raw,
        epilog="example:\n  wmkit eval depth pred/depth.npz synth/gt/synth-00001/depth.npz --json depth.json",
    )
    depth.add_argument("pred", type=Path, help="predicted depth.npz")
    depth.add_argument("gt", type=Path, help="ground-truth depth.npz")
    depth.add_argument("--json", type=Path, default=None, help="write the metric as JSON here")
    depth.set_defaults(run=run_depth)
