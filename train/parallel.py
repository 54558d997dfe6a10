"""Parallelism applied to the single-device `GDNDiT` from outside (STYLE §1, titan's parallelize.py).

Order: activation checkpointing per block → torch.compile per block → FSDP2 (`fully_shard`)
per block, then the root. `model/` never imports torch.distributed.

Context parallelism (frames of one clip split over ranks, contiguous slices in rank order):

- GDN op: `context_parallel_gdn` — each rank scans its frames to one composite affine map,
  the ranks all-gather composites and fold the earlier ones into the state entering their
  slice (`wmkit.kernels.frame_gdn_context_parallel`); causal and chunk-causal modes.
- softmax attention: `context_parallel_attention` — keys and values are all-gathered
  (differentiably) so each rank attends its queries to the whole clip.

Both are tested on 2 gloo ranks against the unsplit op. Not yet wired through `GDNDiT`:
a CP forward of the whole model also needs the k frame-conv and FFN temporal-conv halos
from the neighbouring rank, RoPE frame offsets per slice, and (bidirectional) a reverse
composite exchange; training runs data-parallel (FSDP2) until then.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed._functional_collectives import all_gather_tensor_autograd

from wmkit.kernels import frame_gdn_context_parallel, frame_gdn_ref


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_*):
    nccl on CUDA, gloo on CPU; a plain `python` launch is a world of one."""
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo(0, 1, 0, torch.device("cuda", 0) if cuda else torch.device("cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Wrap every transformer block so its activations are recomputed in the backward."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_compile(model: nn.Module) -> None:
    """torch.compile each block (titan: per block, so one graph serves all repeated blocks)."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block, fullgraph=False)


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, param_dtype: torch.dtype | None) -> None:
    """FSDP2: shard each block, then the root (embeddings, final layer). Gradients are reduced
    in fp32; `param_dtype` (e.g. bf16) is the all-gathered compute dtype, None keeps fp32."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    # The DiT returns views (the permuted velocity, slices of carried state); the trainer never
    # modifies them in place, which is what FSDP2's per-call warning is about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def parallelize(model: nn.Module, info: DistInfo, *, activation_checkpointing: bool, compile_blocks: bool,
                fsdp: bool, param_dtype: torch.dtype | None = None) -> nn.Module:
    """AC → compile → FSDP2 (when distributed and `fsdp`), in place; returns the model."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile_blocks:
        apply_compile(model)
    if info.distributed and fsdp:
        apply_fsdp(model, init_device_mesh(info.device.type, (info.world_size,)), param_dtype)
    return model


def frame_slice(frames: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the contiguous frames rank `rank` holds when `frames` frames are
    split as evenly as possible over `world_size` ranks (earlier ranks take the remainder)."""
    base, extra = divmod(frames, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def context_parallel_gdn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                         gamma: torch.Tensor, q_rot: torch.Tensor, k_rot: torch.Tensor, *, mode: str,
                         chunk_sizes: list[int] | None = None, group: dist.ProcessGroup | None = None,
                         **op_kwargs: Any) -> torch.Tensor:
    """Frame-wise GDN of this rank's frame slice: q, k, q_rot, k_rot [B, T_local, S, H, D],
    v [B, T_local, S, H, Dv], beta [B, T_local, S, H], gamma [B, T_local, H]; slices in rank
    order. Uses the Triton op on CUDA, the torch reference elsewhere. Returns o [B, T_local, S, H, Dv]."""
    op = None if q.is_cuda else frame_gdn_ref
    return frame_gdn_context_parallel(q, k, v, beta, gamma, q_rot, k_rot, mode=mode, chunk_sizes=chunk_sizes,
                                      group=group, op=op, **op_kwargs)


def gather_tokens(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate every rank's x [B, H, N_r, D] along the token axis in rank order; slices may
    differ in length (padded for the collective, then cut). Differentiable: each rank's
    gradient for its own slice comes back to it."""
    world = dist.get_world_size(group)
    # on x's device: NCCL gathers only CUDA tensors
    lengths = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([x.shape[2]], device=x.device), group=group)
    lengths = [int(n) for n in lengths]
    longest = max(lengths)
    padded = F.pad(x, (0, 0, 0, longest - x.shape[2]))
    parts = all_gather_tensor_autograd(padded.contiguous(), 2, group if group is not None else dist.group.WORLD)
    return torch.cat([part[:, :, :n] for part, n in zip(parts.split(longest, 2), lengths)], 2)


def context_parallel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                               mask: torch.Tensor | None = None,
                               group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Softmax attention of this rank's query tokens against every rank's keys and values.

    q, k, v: [B, H, N_local, D] (this rank's tokens, slices in rank order); mask: [N_local,
    N_total] bool (True = may attend) or None. The all-gather is differentiable, so key and
    value gradients flow back to the rank that owns them. Returns [B, H, N_local, D]."""
    k_all, v_all = gather_tokens(k, group), gather_tokens(v, group)
    return F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)


__all__ = ["DistInfo", "apply_activation_checkpointing", "apply_compile", "apply_fsdp", "context_parallel_attention",
           "context_parallel_gdn", "frame_slice", "gather_tokens", "init_distributed", "parallelize"]
