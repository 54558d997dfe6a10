"""Activation memory of one 2.6b training step, counted on CPU (no GPU needed).

Usage::

    python bench/activation_memory.py                        # fp32 weights + bf16 autocast (bench/train.py before)
    python bench/activation_memory.py --precision bf16_params --ffn-frame-chunk 1  # bench/train.py's step

Method: a 2-block model at the 2.6b width (block 0 frame-wise GDN, block 1 softmax, both with
the camera branch and the 6×-wide GLU-MBConv FFN) runs forward and backward with activation
checkpointing (AC) per block, bidirectional, at T1 and T2 latent frames of 22 × 40 = 880 tokens.
`LiveBytes`, a TorchDispatchMode, adds up the storages (deduplicated by storage) of every tensor
an op returns that are still alive after each op: what CUDA's allocator would hold, without its
caching. Tensors made before the step (weights, inputs) are not counted. The difference between
T2 and T1 is the memory per latent frame, free of everything that does not grow with the clip
(weights, gradients, the autocast weight cache). The default T1 = 5, T2 = 8 are past 4,096
tokens, where the row-chunked backward temporaries of RMSNorm and the output gate (`row_chunks`)
stop growing; a shorter T1 would count their growth as per-frame memory. The Triton GDN op runs
with its kernels replaced by allocations of the shapes they return (`_stand_in_gdn_kernels`), so
what it keeps for the backward is counted as on a GPU; the torch reference op would keep its
per-frame loop instead.

Per block type it reports: `retained` — bytes a block's forward leaves alive until the backward
(its output, the next block's AC input, plus anything the AC does not discard) and `transient` —
the peak of the block's backward (recompute + gradients) over the bytes alive when it starts.
The 121-frame peak (`estimate`) follows the backward block by block: fp32 weights and AdamW
states, the gradients made so far, the AC inputs still held and one block's transient.
With `--precision bf16_params` (FSDP2's MixedPrecisionPolicy(bf16, reduce fp32), which
bench/train.py uses) the count runs the model cast to bf16 without FSDP: the same bf16
compute, while FSDP2's per-block buffers, which do not grow with the clip, would hide a
block's own backward peak at these short clips; the estimate adds them instead (bf16
weights of two blocks, one block's bf16 gradients and its fp32 reduce-scatter output, 10
bytes a block parameter). Not counted: the allocator's caching and fragmentation and
kernels' workspaces; for 61 frames without AdamW the `autocast` count of the model before
the memory changes (e60f210) gives 55.7 GB where the H100 measured 63.3 GB
(bench/results/train.json), so it runs ~12 % low.
"""

from __future__ import annotations

import argparse
import importlib
import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

from wmkit.bench.train import _clip_cameras
from wmkit.model import GDNDiT, camera_inputs, preset
from wmkit.train.flow import FlowConfig, flow_matching_loss
from wmkit.train.parallel import DistInfo, parallelize

# the module, not the function `wmkit.kernels.frame_gdn` that the package exports under its name
frame_gdn_module = importlib.import_module("wmkit.kernels.frame_gdn")
GRID = (22, 40)  # 704×1280 px: 880 tokens a latent frame
CLIP_FRAMES = 121  # 61 s at 16 fps
GB = 1e9


def _storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    """The storages behind t (the local tensors of a wrapper subclass such as DTensor)."""
    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        return [s for n in names for s in _storages(getattr(t, n))]
    return [] if t.device.type == "meta" else [t.untyped_storage()]


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created under this mode that are still alive, with the peak of
    each phase (`phase`) and the tensors alive at the overall peak.

    Storages are told apart by their C++ object and sized when counted, since FSDP2 frees
    and refills its unsharded parameters by resizing a storage that stays alive."""

    def __init__(self) -> None:
        super().__init__()
        self.alive: dict[int, tuple[StorageWeakRef, str, str]] = {}  # weak ref, shape and dtype, phase made in
        self.live = self.peak = 0
        self.peak_tensors: Counter[str] = Counter()
        self.phases: dict[str, dict[str, int]] = {}
        self.current = self.peak_phase = ""

    def phase(self, name: str) -> None:
        """Start phase `name`: its start and peak bytes are recorded under that name."""
        self.current = name
        self.phases[name] = {"start": self.live, "peak": self.live}

    def _sizes(self) -> list[tuple[int, str, str]]:
        """(bytes, shape and dtype, phase made in) of each storage still alive."""
        sizes = []
        for key, (_, label, phase) in self.alive.items():
            storage = torch.UntypedStorage._new_with_weak_ptr(key)  # None once freed
            if storage is not None:
                sizes.append((storage.nbytes(), label, phase))
        return sizes

    def by_phase(self) -> Counter[str]:
        """Bytes alive now by the phase that made them."""
        made: Counter[str] = Counter()
        for nbytes, _, phase in self._sizes():
            made[phase] += nbytes
        return made

    def _sweep(self) -> None:
        self.alive = {k: v for k, v in self.alive.items() if not v[0].expired()}
        sizes = self._sizes()
        self.live = sum(n for n, _, _ in sizes)
        if self.current:
            self.phases[self.current]["peak"] = max(self.phases[self.current]["peak"], self.live)
        if self.live > self.peak:
            self.peak, self.peak_phase = self.live, self.current
            self.peak_tensors = Counter()
            for nbytes, label, _ in sizes:
                self.peak_tensors[label] += nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                for s in _storages(t):
                    ref = StorageWeakRef(s)
                    if ref.cdata not in self.alive:
                        self.alive[ref.cdata] = (ref, f"{list(t.shape)} {t.dtype}", self.current)
        self._sweep()
        return out


@contextlib.contextmanager
def _stand_in_gdn_kernels() -> Any:
    """Replace the Triton GDN forward/backward by allocations of the shapes they return
    (kernels/frame_gdn.py), so `frame_gdn`'s custom op runs on CPU with its real
    saving policy. Values are zeros: only memory is measured."""
    fwd, bwd = frame_gdn_module.frame_gdn_fwd, frame_gdn_module.frame_gdn_bwd

    def fake_fwd(q, k, v, beta, gamma, q_rot, k_rot, mode, chunk_sizes, initial_state, eps):  # noqa: ANN001, ANN202
        B, T, S, H, D = q.shape
        Dv, BH = v.shape[-1], B * H
        f32 = {"dtype": torch.float32}
        has_rev = mode != "causal"
        z = lambda *shape: torch.zeros(*shape, **f32)  # noqa: E731
        saved = frame_gdn_module.ForwardSaved(
            z(BH, T, D, D), z(BH, T, D, D), z(BH, T, Dv, D), z(BH, T, 1, D),
            z(BH, T, Dv, D) if has_rev else None, z(BH, T, 1, D) if has_rev else None,
            torch.zeros(T, dtype=torch.bool) if has_rev else None)
        o = torch.zeros(B, T, S, H, Dv, dtype=q.dtype)
        return o, (z(B, H, Dv, D), z(B, H, D)), saved, torch.zeros(3, B, H, T, dtype=torch.int32)

    def fake_bwd(q, k, v, beta, gamma, q_rot, k_rot, initial_state, saved, do, d_final, eps):  # noqa: ANN001, ANN202
        B, T, S, H, D = q.shape
        Dv = v.shape[-1]
        f32 = {"dtype": torch.float32}
        scratch = [torch.zeros(B * H, T, Dv, D, **f32) for _ in range(4)]  # dH and its scans
        grads = (torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(beta),
                 torch.zeros_like(gamma), torch.zeros_like(q_rot), torch.zeros_like(k_rot),
                 torch.zeros(B, H, Dv, D, **f32), torch.zeros(B, H, D, **f32))
        del scratch
        return grads

    frame_gdn_module.frame_gdn_fwd, frame_gdn_module.frame_gdn_bwd = fake_fwd, fake_bwd
    try:
        yield
    finally:
        frame_gdn_module.frame_gdn_fwd, frame_gdn_module.frame_gdn_bwd = fwd, bwd


def two_block_step(frames: int, bf16_params: bool, **parallel_options: Any) -> tuple[GDNDiT, Callable[[], torch.Tensor]]:
    """The 2-block model (module docstring; Triton GDN op) in fp32 or bf16 weights, wrapped by
    `parallelize` with activation checkpointing and `parallel_options` on CPU, and a function
    that computes one step's loss on a clip of `frames` 720p latent frames."""
    cfg = preset("2.6b", depth=2, softmax_blocks=(1,))
    torch.manual_seed(0)
    model = GDNDiT(cfg)
    model.set_gdn_backend("triton")
    if bf16_params:
        model.to(torch.bfloat16)  # the compute of FSDP2's bf16 policy (module docstring)
    parallelize(model, DistInfo(0, 1, 0, torch.device("cpu")), activation_checkpointing=True, fsdp=False,
                **parallel_options)
    g = torch.Generator().manual_seed(0)
    image_hw = (32 * GRID[0], 32 * GRID[1])
    x0 = torch.randn(1, cfg.latent_channels, frames, *GRID, generator=g)
    cams = camera_inputs(*_clip_cameras(1, frames, image_hw), GRID, image_hw)
    text = torch.randn(1, 8, cfg.text_dim, generator=g)
    mask = torch.ones(text.shape[:2], dtype=torch.bool)
    return model, lambda: flow_matching_loss(model, x0, cams, text, mask, FlowConfig(shift=9.95), g)


def count_step(frames: int, precision: str, ffn_frame_chunk: int | None) -> dict[str, Any]:
    """One forward+backward of the 2-block model at `frames` latent frames under `LiveBytes`:
    per block its retained and transient bytes, the bytes outside the blocks, the overall peak
    and the tensors alive then (by shape and dtype)."""
    bf16_params = precision == "bf16_params"
    model, step_loss = two_block_step(frames, bf16_params, compile_blocks=False, ffn_frame_chunk=ffn_frame_chunk)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=not bf16_params)
    tracker = LiveBytes()
    for i, block in enumerate(model.blocks):
        def pre(module: torch.nn.Module, args: Any, kwargs: Any = None, i: int = i) -> None:
            tracker.phase(f"fwd{i}")

        def post(module: torch.nn.Module, args: Any, out: Any, i: int = i) -> None:
            tracker.phase(f"after_fwd{i}")
            out[0].register_hook(lambda grad: tracker.phase(f"bwd{i}"))

        block.register_forward_pre_hook(pre)
        block.register_forward_hook(post)
    with _stand_in_gdn_kernels(), tracker:
        tracker.phase("embed")
        with autocast:
            loss = step_loss()
        tracker.phase("loss")
        end_forward, made = tracker.live, tracker.by_phase()
        loss.backward()
    p = tracker.phases
    retained = [made[f"fwd{i}"] for i in range(2)]  # a block's output (the next AC input) and what it leaks
    return {"frames": frames, "tokens": frames * GRID[0] * GRID[1], "end_of_forward": end_forward,
            "outside_blocks": end_forward - sum(retained), "retained_gdn": retained[0], "retained_softmax": retained[1],
            "transient_gdn": p["bwd0"]["peak"] - p["bwd0"]["start"],
            "transient_softmax": p["bwd1"]["peak"] - p["bwd1"]["start"],
            "peak": tracker.peak, "peak_phase": tracker.peak_phase,
            "peak_tensors": dict(tracker.peak_tensors.most_common(16))}


def parameter_counts() -> tuple[int, list[int]]:
    """Parameters of the full 2.6b preset and of each of its blocks (built on the meta device)."""
    with torch.device("meta"):
        model = GDNDiT(preset("2.6b"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return count(model), [count(b) for b in model.blocks]


def estimate(small: dict[str, Any], large: dict[str, Any], fsdp: bool, frames: int = CLIP_FRAMES) -> dict[str, float]:
    """Per-token slopes between two counts and the peak of a 121-frame step in GB: the largest,
    over the blocks i in backward order, of 12 bytes a parameter (fp32 weights, AdamW m and v),
    the fp32 gradients made so far (blocks >= i and the rest), the tensors outside the blocks,
    the AC inputs still held (blocks < i) and block i's backward transient; with `fsdp`, its
    per-block buffers (10 bytes a parameter of the largest block)."""
    per_frame = {k: (large[k] - small[k]) / (large["frames"] - small["frames"]) for k in
                 ("outside_blocks", "retained_gdn", "retained_softmax", "transient_gdn", "transient_softmax")}
    total, blocks = parameter_counts()
    kinds = ["softmax" if preset("2.6b").is_softmax(i) else "gdn" for i in range(len(blocks))]
    peaks = [12 * total + 4 * (total - sum(blocks[:i])) + (10 * max(blocks) if fsdp else 0)
             + frames * (per_frame["outside_blocks"] + sum(per_frame[f"retained_{k}"] for k in kinds[:i])
                         + per_frame[f"transient_{kinds[i]}"]) for i in range(len(blocks))]
    tokens = GRID[0] * GRID[1]
    return {**{f"{k}_per_token": v / tokens for k, v in per_frame.items()},
            "weights_grads_adamw_gb": 16 * total / GB, "step_peak_gb": max(peaks) / GB,
            "step_peak_block": peaks.index(max(peaks))}


def _report(counts: list[dict[str, Any]], est: dict[str, float]) -> None:
    for c in counts:
        print(f"  T={c['frames']} ({c['tokens']} tokens): end of forward {c['end_of_forward'] / GB:.3f} GB, "
              f"peak {c['peak'] / GB:.3f} GB in {c['peak_phase']}; alive then, by shape and dtype (GB):")
        for label, nbytes in c["peak_tensors"].items():
            print(f"      {nbytes / GB:8.3f}  {label}")
    print("  per token (KB):  " + "  ".join(f"{k.removesuffix('_per_token')} {v / 1e3:.1f}"
                                           for k, v in est.items() if k.endswith("_per_token")))
    print(f"  at {CLIP_FRAMES} frames: step peak {est['step_peak_gb']:.1f} GB (in block {est['step_peak_block']}'s "
          f"backward; fp32 weights, gradients and AdamW states {est['weights_grads_adamw_gb']:.1f} GB of it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", choices=["autocast", "bf16_params"], default="autocast",
                        help="autocast: fp32 weights, bf16 autocast; bf16_params: FSDP2's bf16 compute, fp32 reduce")
    parser.add_argument("--ffn-frame-chunk", type=int, default=None,
                        help="FFN recomputed in chunks of this many frames")
    parser.add_argument("--frames", type=int, nargs=2, default=[5, 8], help="the two clip lengths counted")
    parser.add_argument("--out", default=None, help="also write the counts and the estimate to this JSON")
    args = parser.parse_args()
    t0 = time.perf_counter()
    counts = [count_step(f, args.precision, args.ffn_frame_chunk) for f in args.frames]
    est = estimate(*counts, fsdp=args.precision == "bf16_params")
    print(f"precision={args.precision} ffn_frame_chunk={args.ffn_frame_chunk}")
    _report(counts, est)
    print(f"  ({time.perf_counter() - t0:.0f} s, torch {torch.__version__})")
    if args.out:
        Path(args.out).write_text(json.dumps({"precision": args.precision, "ffn_frame_chunk": args.ffn_frame_chunk,
                                              "torch": torch.__version__, "counts": counts, "estimate": est}, indent=1))


if __name__ == "__main__":
    main()
