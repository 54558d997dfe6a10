"""``wmkit generate``: a clip from a first frame, a camera path and a caption.

Parses its arguments into a `GenerateConfig` and calls `wmkit.model.generate.generate`,
which tests import directly. Exit codes: 0 written, 2 unusable input (missing file,
cameras of the wrong length, image size not a multiple of 32, mismatched model parts).
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  wmkit generate --checkpoint ckpt/model.safetensors --vae weights/ltx2-vae \\
      --text-encoder weights/gemma-2-2b-it --image first.png --cameras path.cameras.npz \\
      --prompt "a walk through a sunlit courtyard" --out clip.mp4
  wmkit generate ... --mode chunk_causal --steps 50 --guidance 4.5 --seed 7

writes clip.mp4, clip.cameras.npz (the cameras followed) and clip.json (prompt, settings,
weight sha256s). --cameras needs 8·k + 1 frames with K in pixels of the image."""


def run_generate(args: argparse.Namespace) -> int:
    """Generate one clip; print where it went, or one stderr line and exit 2 on unusable input."""
    from wmkit.model.generate import GenerateConfig, cameras_path_for, generate

    try:
        config = GenerateConfig(steps=args.steps, guidance=args.guidance, mode=args.mode, seed=args.seed,
                                shift=args.shift, negative_prompt=args.negative_prompt)
        out = generate(args.checkpoint, args.vae, args.text_encoder, args.image, args.cameras, args.prompt,
                       args.out, config, device=args.device)
    except (OSError, ValueError) as err:  # missing files, bad cameras/image, VAEError, CameraError
        print(f"wmkit generate: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {cameras_path_for(out)}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    """Add the ``generate`` verb to the top-level sub-parsers."""
    from wmkit.model.generate import GenerateConfig

    defaults = GenerateConfig()
    p = verbs.add_parser("generate", help="generate a clip from an image, cameras and a caption",
                         description=__doc__.split("\n\n")[0], epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model .safetensors (with its .json config beside it)")
    p.add_argument("--vae", required=True, help="local LTX VAE folder")
    p.add_argument("--text-encoder", required=True, help="local text-encoder folder (save_pretrained)")
    p.add_argument("--image", required=True, help="first frame (PNG/JPEG); its size is the video's")
    p.add_argument("--cameras", required=True, help="cameras.npz to follow (8·k + 1 frames)")
    p.add_argument("--prompt", required=True, help="caption")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--steps", type=int, default=defaults.steps, help="Euler steps (default %(default)s)")
    p.add_argument("--guidance", type=float, default=defaults.guidance, help="CFG scale (default %(default)s)")
    p.add_argument("--mode", choices=("bidirectional", "chunk_causal"), default=defaults.mode,
                   help="attention mode (default %(default)s)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="noise seed (default %(default)s)")
    p.add_argument("--shift", type=float, default=defaults.shift, help="flow shift (default %(default)s)")
    p.add_argument("--negative-prompt", default=defaults.negative_prompt, help="caption of the unconditional branch")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.set_defaults(run=run_generate)
