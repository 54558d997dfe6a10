"""MoGe-2 parity: wmkit's implementation against the upstream code (microsoft/MoGe), same random weights.

Builds the upstream ``MoGeModel`` with the published ViT-L config (normal head
included, so every published head is covered) and random weights, copies its
state dict into :class:`wmkit.annotate.geometry.moge2_model.MoGe2Model` with
``strict=True``, runs both in fp32 on the same images and compares every output,
then compares the focal/shift recovery (ours vs upstream ``recover_focal_shift``)
on the upstream point map. Error measure per output: ``max|ours - ref| / max|ref|``.

Usage (upstream work tree from ``git archive`` of microsoft/MoGe)::

    python bench/parity/moge2_parity.py --upstream /tmp/upstream_moge \
        --out bench/results/parity_moge2.json --upstream-rev <commit>

The upstream forward pass needs torch, scipy and huggingface_hub only; its
module-level imports of ``utils3d`` and ``cv2`` (used by its ``infer`` helpers,
not by ``forward``) get empty stand-in modules when those packages are absent.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import types
from pathlib import Path

import torch

from wmkit.annotate.geometry.moge2_config import MoGe2Config
from wmkit.annotate.geometry.moge2_geometry import recover_focal_shift
from wmkit.annotate.geometry.moge2_model import MoGe2Model

GOAL = 1e-3


def import_upstream(root: Path):
    """The upstream ``MoGeModel`` class and ``recover_focal_shift`` from a MoGe work tree."""
    for name in ("utils3d", "cv2"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    sys.path.insert(0, str(root))
    from moge.model.v2 import MoGeModel
    from moge.utils.geometry_torch import recover_focal_shift as upstream_recover

    return MoGeModel, upstream_recover


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|."""
    return float((ours.double() - ref.double()).abs().max() / ref.double().abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True, help="work tree of microsoft/MoGe")
    parser.add_argument("--out", type=Path, default=Path("bench/results/parity_moge2.json"))
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--sizes", default="224x224,210x280", help="HxW input sizes, comma separated")
    parser.add_argument("--num-tokens", type=int, default=256, help="ViT tokens per image (upstream default 1200-3600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--upstream-rev", default="", help="upstream commit, recorded in the result")
    args = parser.parse_args()

    MoGeModel, upstream_recover = import_upstream(args.upstream.resolve())
    cfg = MoGe2Config.vitl(normal_head=True)
    torch.manual_seed(args.seed)
    ref = MoGeModel(**cfg.to_upstream()).eval()
    ours = MoGe2Model(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    n_params = sum(p.numel() for p in ref.parameters())

    cases = []
    for size in args.sizes.split(","):
        H, W = (int(v) for v in size.split("x"))
        image = torch.rand(args.frames, 3, H, W, generator=torch.Generator().manual_seed(args.seed + H * W))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out_ref = ref(image, num_tokens=args.num_tokens)
            t1 = time.perf_counter()
            out_ours = ours(image, num_tokens=args.num_tokens)
            t2 = time.perf_counter()
        errs = {k: rel_err(out_ours[k], out_ref[k]) for k in out_ref}
        mask = out_ref["mask"] > 0.5
        f_ref, s_ref = upstream_recover(out_ref["points"], mask)
        f_ours, s_ours = recover_focal_shift(out_ref["points"], mask)
        errs["focal"], errs["shift"] = rel_err(f_ours, f_ref), rel_err(s_ours, s_ref)
        cases.append({"input": f"B{args.frames}_H{H}_W{W}", "num_tokens": args.num_tokens,
                      "max_rel_err": errs, "seconds_upstream": round(t1 - t0, 2), "seconds_ours": round(t2 - t1, 2)})
        print(cases[-1], flush=True)

    network = max(v for c in cases for k, v in c["max_rel_err"].items() if k not in ("focal", "shift"))
    geometry = max(v for c in cases for k, v in c["max_rel_err"].items() if k in ("focal", "shift"))
    result = {
        "summary": {"moge2_max_rel_err": network, "moge2_focal_shift_max_rel_err": geometry, "goal": GOAL,
                    "pass": network <= GOAL and geometry <= GOAL},
        "model": "MoGe-2 ViT-L (published config, normal head), random weights, fp32, CPU",
        "params": n_params, "strict_load": True,
        "error_measure": "max|ours - upstream| / max|upstream| per output",
        "upstream": "microsoft/MoGe moge/model/v2.py", "upstream_rev": args.upstream_rev, "cases": cases,
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
