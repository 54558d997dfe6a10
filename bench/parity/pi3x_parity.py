"""Parity of wmkit's Pi3X against the upstream code (github yyfz/Pi3, ``pi3/models/pi3x.py``), fp32 on CPU.

Builds the upstream Pi3X (official architecture, random weights perturbed so
every parameter matters), saves its state dict to safetensors, loads that file
with :func:`wmkit.annotate.geometry.load_Pi3X` (strict; the conditioning branch
set aside), runs both on the same frames and reports, per output, the max
absolute difference over the max absolute reference value.

    python bench/parity/pi3x_parity.py /tmp/upstream_pi3 --frames 2 --height 224 --width 308 \
        --out bench/results/parity_pi3x.json

The upstream tree needs torch and huggingface_hub (for its ``PyTorchModelHubMixin``) only.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from wmkit.annotate.geometry.pi3x_loader import PI3X_CONDITIONING_PREFIXES, load_Pi3X

OUTPUTS = ("points", "local_points", "conf", "camera_poses", "metric")


def upstream_commit(root: Path, given: str) -> str:
    """``given`` if set, else the tree's git HEAD, else 'unknown' (an exported tree has no .git)."""
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def build_upstream(root: Path, seed: int) -> torch.nn.Module:
    """Upstream Pi3X with random weights, each parameter perturbed by 2% of its scale (plus 0.02 absolute)."""
    sys.path.insert(0, str(root))
    from pi3.models.pi3x import Pi3X as UpstreamPi3X  # noqa: PLC0415  (path given on the command line)

    torch.manual_seed(seed)
    model = UpstreamPi3X().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.02 * p.std().nan_to_num(0.0) + 0.02))
    return model


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|."""
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("upstream", type=Path, help="work tree of github yyfz/Pi3")
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--height", type=int, default=224)
    ap.add_argument("--width", type=int, default=308)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", default="", help="upstream commit, when the tree is not a git checkout")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/parity_pi3x.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    upstream = build_upstream(args.upstream, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    images = torch.rand(1, args.frames, 3, args.height, args.width, generator=gen)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = upstream(images)
    ref = {k: ref[k].float() for k in OUTPUTS}
    upstream_s = time.perf_counter() - t0
    state = {k: v.contiguous() for k, v in upstream.state_dict().items()}
    n_conditioning = sum(k.startswith(PI3X_CONDITIONING_PREFIXES) for k in state)
    del upstream

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "pi3x_random.safetensors"
        save_file(state, str(weights))
        n_keys = len(state)
        del state
        ours_model = load_Pi3X(weights)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = ours_model(images)
    ours_s = time.perf_counter() - t0

    errors = {k: rel_err(getattr(out, k), ref[k]) for k in OUTPUTS}
    result = {
        "summary": {"pi3x_max_rel_err": max(errors.values())},
        "pi3x": {
            "rel_err": errors,
            "definition": "max |ours - upstream| / max |upstream| per output, fp32, CPU",
            "input": {"frames": args.frames, "height": args.height, "width": args.width, "seed": args.seed},
            "config": "official Pi3X (ViT-L/14 reg4 encoder, 36-block decoder), random weights",
            "checkpoint_keys": n_keys,
            "conditioning_keys_set_aside": n_conditioning,
            "seconds": {"upstream": round(upstream_s, 2), "wmkit": round(ours_s, 2)},
            "upstream": {"repo": "github.com/yyfz/Pi3", "commit": upstream_commit(args.upstream, args.commit)},
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
    }
    print(f"{'output':<14}{'max rel err':>14}")
    for k, e in errors.items():
        print(f"{k:<14}{e:>14.3e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
