"""``wmkit render``: camera paths through the splat scenes of a manifest, rendered straight into shards.

Builds a :class:`~wmkit.render.pipeline.RenderConfig` from the flags and calls
:func:`~wmkit.render.pipeline.render_manifest`. Exit codes: 0 done (failed
paths are rows of status.parquet, printed with stage and reason), 2 unusable
input (missing manifest, rows that are not splat scenes, bad size).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wmkit.render.pipeline import RenderConfig

EXAMPLES = """examples:
  # catalogue DL3DV 3DGS scenes, then 4 one-minute 720p paths per scene on the GPUs of this machine
  wmkit manifest build --source dl3dv_gs --root /data/DL3DV-GS --out dl3dv_gs.parquet
  wmkit render --scenes dl3dv_gs.parquet --out shards/render --paths-per-scene 4
  # with the DiFix3D refiner, 8 GPU actors (one 8-GPU node, or the Ray cluster RAY_ADDRESS names);
  # each frame's reference view is its nearest training image (--refiner-reference none: no reference)
  wmkit render --scenes dl3dv_gs.parquet --out shards/render --paths-per-scene 4 \\
      --refiner /weights/difix_ref --actors 8
  # a CPU box: in-process, reference rasterizer, short small clips; redo earlier failures
  wmkit render --scenes m.parquet --out shards/ --paths-per-scene 1 --frames 33 --size 160x96 \\
      --runner local --retry-failed
"""


def _size(text: str) -> tuple[int, int]:
    """``WxH`` -> (W, H)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH in pixels, e.g. 1280x720, got {text!r}") from None
    return width, height


def build_config(args: argparse.Namespace) -> RenderConfig:
    """The run's :class:`RenderConfig` from the flags; ValueError for a bad combination (e.g. an odd size)."""
    from wmkit.render.path_planner import PathConfig
    from wmkit.render.pipeline import RenderConfig

    width, height = args.size
    path = PathConfig(num_frames=args.frames, fps=args.fps, width=width, height=height, keys=args.keys)
    return RenderConfig(
        path=path,
        paths_per_scene=args.paths_per_scene,
        seed=args.seed,
        rasterizer=args.rasterizer,
        depth_stride=args.depth_stride,
        refiner=args.refiner,
        refiner_reference=args.refiner_reference,
        num_actors=args.actors,
        num_gpus_per_actor=args.gpus_per_actor,
    )


def run_render(args: argparse.Namespace) -> int:
    """Render the manifest's scenes; print done/failed counts and each failure with its stage and reason."""
    from wmkit.datasets.status import status_summary
    from wmkit.render.pipeline import render_manifest

    try:
        status = render_manifest(
            args.scenes,
            args.out,
            build_config(args),
            runner=args.runner,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
        )
    except (OSError, ValueError) as err:  # ManifestError is a ValueError
        print(f"wmkit render: {err}", file=sys.stderr)
        return 2
    print(status_summary(status))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``render`` verb to ``verbs``."""
    parser = verbs.add_parser(
        "render",
        help="splat scenes (dl3dv_gs manifest) -> camera paths -> frames -> shards (Ray or in-process)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("--scenes", required=True, help="manifest.parquet of dl3dv_gs scenes")
    parser.add_argument("--out", required=True, help="shard directory (index.parquet and status.parquet go there)")
    parser.add_argument("--paths-per-scene", type=int, required=True, help="paths (clips) rendered per scene")
    parser.add_argument("--frames", type=int, default=961, help="frames per path (default 961: 60 s at 16 fps)")
    parser.add_argument("--fps", type=float, default=16.0, help="frame rate of the clips")
    parser.add_argument("--size", type=_size, default=(1280, 720), help="render size WxH (default 1280x720)")
    parser.add_argument("--keys", choices=("training", "random_walk"), default="training",
                        help="path key poses: along the training cameras or a random walk")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="mixed into every path's seed")
    parser.add_argument("--refiner", help="DiFix3D-style refiner folder (SD-Turbo layout); default: off")
    parser.add_argument("--refiner-reference", choices=("nearest", "none"), default="nearest",
                        help="the refiner's reference view per frame: the nearest training image (scenes "
                             "without images on disk get none, recorded), or none")  # fmt: skip
    parser.add_argument("--rasterizer", choices=("auto", "gsplat", "reference"), default="auto",
                        help="auto: gsplat on CUDA when importable, else the CPU reference")  # fmt: skip
    parser.add_argument("--depth-stride", type=int, default=4, help="depth.npz at size / stride (default 4)")
    parser.add_argument("--runner", choices=("ray", "local"), default="ray", help="Ray Data or in-process")
    parser.add_argument("--actors", type=int, default=1, help="Ray actors (one per GPU on a GPU node)")
    parser.add_argument("--gpus-per-actor", type=float, help="GPUs per Ray actor (default: 1 when the cluster has GPUs)")
    parser.add_argument("--retry-failed", action="store_true", help="redo paths that failed in an earlier run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_render)
