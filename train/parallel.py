"""Parallelism applied to the single-device `GDNDiT` from outside (STYLE §1, titan's parallelize.py).

Order (titan's): activation checkpointing per block → torch.compile per block → FSDP2
(`fully_shard`) per block, then the root. `model/` never imports torch.distributed. Each
checkpointed block compiles to one graph (`fullgraph`): the GDN op is a custom op dynamo leaves
opaque (`wmkit::frame_gdn_forward`), so inductor fuses everything around it and its partitioner
follows the selective-AC policy.

Context parallelism (frames of one clip split over ranks, contiguous slices in rank order,
`frame_slice`; `mesh_dims` lays out dp × cp):

- GDN op: `context_parallel_gdn` — each rank scans its frames to one composite affine map,
  the ranks all-gather composites and fold the earlier ones into the state entering their
  slice, and the later ones' reverse composites into the reverse state leaving it
  (`wmkit.kernels.frame_gdn_context_parallel`); every mode, slices may cut chunks.
- softmax attention: `context_parallel_attention` — keys and values are all-gathered
  (differentiably) so each rank attends its queries to the whole clip (chunk-causal: to the
  key prefix of each query chunk, no mask).
- the whole `GDNDiT`: `cp_context` gives the model a `CPContext` whose `GroupExchange` does
  the frame-conv halos, the K/V all-gather and the GDN exchange (`model/context_parallel.py`).

Tested on 2 gloo ranks against the unsplit op and the unsplit model.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
try:
    from torch.distributed._functional_collectives import all_gather_single_autograd
except ImportError:  # torch < 2.13 (the GPU image's 2.11) names it all_gather_tensor_autograd
    from torch.distributed._functional_collectives import all_gather_tensor_autograd as all_gather_single_autograd

from wmkit.kernels import frame_gdn_context_parallel, frame_gdn_ref
from wmkit.model.context_parallel import CPContext
from wmkit.model.softmax_attention import chunk_causal_attention


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


_SDPA_OPS = {getattr(torch.ops.aten, name).default for name in (
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu",
) if hasattr(torch.ops.aten, name)}


def _keep_self_attention(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """Selective-AC policy: save the outputs of softmax self-attention (as many keys as queries
    or more; the quadratic part of a block, ~half of a 2.6b step at 121 frames), recompute the
    rest; cross-attention to the caption (few keys) is cheap to recompute."""
    if op in _SDPA_OPS and args[1].shape[-2] >= args[0].shape[-2]:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")  # checkpoint_wrapper's, torch.compile's


def unwrapped_name(name: str) -> str:
    """A parameter's name in the plain `GDNDiT` from its name in the wrapped model (the AC and
    torch.compile wrappers add module levels), so what is saved by name loads into any model."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def apply_activation_checkpointing(model: nn.Module, keep_attention: bool = False) -> None:
    """Wrap every transformer block so its activations are recomputed in the backward;
    `keep_attention` saves the self-attention outputs instead (`_keep_self_attention`:
    ~0.5 GB per softmax block and branch at 121 × 880 tokens, for one SDPA forward fewer each)."""
    context = {"context_fn": partial(create_selective_checkpoint_contexts, _keep_self_attention)} if keep_attention else {}
    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block, preserve_rng_state=False, **context)


def apply_ffn_frame_chunks(model: nn.Module, frames: int) -> None:
    """Recompute every block's feed-forward `frames` latent frames at a time inside the block's
    own recomputation (`GLUMBConvTemporal.frame_chunk`): its 6×-wide intermediates, the largest
    part of a block's backward, then exist for one chunk only, for one more FFN forward."""
    if frames < 1:
        raise ValueError(f"ffn_frame_chunk must be >= 1, got {frames}")
    for block in model.blocks:
        block.ffn.frame_chunk = frames


def single_process_group(device: torch.device) -> None:
    """A process group of one (nccl on CUDA, gloo on CPU), so FSDP2 can wrap a model trained
    by a plain `python` process for its mixed precision."""
    if dist.is_initialized():
        return
    if device.type == "cuda":  # nccl needs a device with an index
        index = device.index if device.index is not None else torch.cuda.current_device()
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1,
                                device_id=torch.device("cuda", index))
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """torch.compile each (checkpointed) block whole (titan: per block, so one graph serves all
    repeated blocks); a graph break is an error, not a silent fall back to eager."""
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block, backend=backend, fullgraph=True)


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, param_dtype: torch.dtype | None) -> None:
    """FSDP2: shard each block, then the root (embeddings, final layer). Gradients are reduced
    in fp32; `param_dtype` (e.g. bf16) is the all-gathered compute dtype, None keeps fp32."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    # The DiT returns views (the permuted velocity, slices of carried state); the trainer never
    # modifies them in place, which is what FSDP2's per-call warning is about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # The root keeps its inputs' dtypes: bf16 timesteps would move t·1000 inside the sinusoid
    # by up to ~2 (the model casts latents and text to the weights' dtype itself).
    root = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    fully_shard(model, mesh=mesh, mp_policy=root)


def parallelize(model: nn.Module, info: DistInfo, *, activation_checkpointing: bool, compile_blocks: bool,
                fsdp: bool, param_dtype: torch.dtype | None = None, ffn_frame_chunk: int | None = None,
                keep_attention: bool = False) -> nn.Module:
    """FFN frame chunks → AC → compile → FSDP2, in place; returns the model.

    FSDP2 wraps the model when `fsdp` and either several ranks train or `param_dtype` is given:
    on one process too (a group of one), its mixed precision keeps fp32 weights for the
    optimiser and runs blocks in `param_dtype` with fp32 gradients, so block inputs (the AC
    checkpoints) and activations are bf16 without autocast, and no autocast weight cache
    exists. `ffn_frame_chunk`: `apply_ffn_frame_chunks`; `keep_attention`:
    `apply_activation_checkpointing`."""
    if ffn_frame_chunk is not None:
        apply_ffn_frame_chunks(model, ffn_frame_chunk)
    if activation_checkpointing:
        apply_activation_checkpointing(model, keep_attention)
    if compile_blocks:
        apply_compile(model)
    if fsdp and (info.distributed or param_dtype is not None):
        single_process_group(info.device)
        apply_fsdp(model, init_device_mesh(info.device.type, (dist.get_world_size(),)), param_dtype)
    return model


@dataclass(frozen=True)
class MeshDims:
    """The data-parallel × context-parallel layout of the world (cp ranks contiguous)."""

    dp: int
    """Data-parallel groups: clips read in parallel."""
    cp: int
    """Ranks per clip."""
    dp_rank: int
    """This rank's data-parallel index (its data stream and flow noise)."""
    cp_group: dist.ProcessGroup | None
    """The ranks sharing this rank's clips (None when cp = 1)."""


def mesh_dims(info: DistInfo, cp: int) -> MeshDims:
    """Split the world into a (dp, cp) device mesh: ranks r·cp … r·cp + cp − 1 share clips (on
    one host, neighbouring GPUs exchange the halos and scan composites)."""
    if cp < 1 or info.world_size % cp:
        raise ValueError(f"context_parallel={cp} does not divide the {info.world_size} ranks")
    if cp == 1:
        return MeshDims(info.world_size, 1, info.rank, None)
    mesh = init_device_mesh(info.device.type, (info.world_size // cp, cp), mesh_dim_names=("dp", "cp"))
    return MeshDims(info.world_size // cp, cp, mesh.get_local_rank("dp"), mesh.get_group("cp"))


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


def _gather_parts(x: torch.Tensor, dim: int, lengths: list[int], group: dist.ProcessGroup | None) -> list[torch.Tensor]:
    """Every rank's x along `dim`, in rank order, where rank r's x has lengths[r] there
    (padded for the collective, then cut). Differentiable: each rank's gradient for its own
    x comes back to it (the all-gather's backward is a reduce-scatter)."""
    longest = max(lengths)
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, longest - x.shape[dim]]
    padded = F.pad(x, pad).contiguous()
    parts = all_gather_single_autograd(padded, dim, group if group is not None else dist.group.WORLD)
    return [part.narrow(dim, 0, n) for part, n in zip(parts.split(longest, dim), lengths)]


def gather_tokens(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate every rank's x [B, H, N_r, D] along the token axis in rank order; slices may
    differ in length (padded for the collective, then cut). Differentiable: each rank's
    gradient for its own slice comes back to it."""
    world = dist.get_world_size(group)
    # on x's device: NCCL gathers only CUDA tensors
    lengths = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([x.shape[2]], device=x.device), group=group)
    return torch.cat(_gather_parts(x, 2, [int(n) for n in lengths], group), 2)


def context_parallel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                               spans: list[tuple[int, int, int]] | None = None,
                               group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Softmax attention of this rank's query tokens against every rank's keys and values.

    q, k, v: [B, H, N_local, D] (this rank's tokens, slices in rank order); spans: block-causal
    key prefixes of this rank's queries in global token indexes (`chunk_spans` of its frames)
    or None (every key). The all-gather is differentiable, so key and value gradients flow
    back to the rank that owns them. Returns [B, H, N_local, D]."""
    k_all, v_all = gather_tokens(k, group), gather_tokens(v, group)
    if spans is None:
        return F.scaled_dot_product_attention(q, k_all, v_all)
    return chunk_causal_attention(q, k_all, v_all, spans)


class GroupExchange:
    """The collectives of a context-parallel `GDNDiT` forward (`wmkit.model.FrameExchange`)
    over `group`, whose rank r holds frames `slices[r]` of the clip (rank order = frame order).

    The slice lengths are known up front, so no collective exchanges sizes (no host sync)."""

    def __init__(self, group: dist.ProcessGroup | None, slices: list[tuple[int, int]]) -> None:
        if len(slices) != dist.get_world_size(group):
            raise ValueError(f"GroupExchange: {len(slices)} slices for a group of {dist.get_world_size(group)} ranks")
        self.group, self.rank = group, dist.get_rank(group)
        self.lengths = [b - a for a, b in slices]

    def halo(self, x: torch.Tensor, before: int, after: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T_local, ...] → (the `before` frames preceding this slice, the `after` frames
        following it), zeros beyond the clip's ends; a slice shorter than the halo passes on
        its neighbours' frames too. One differentiable all-gather of each rank's edge frames."""
        heads = [min(after, n) for n in self.lengths]
        tails = [min(before, n) for n in self.lengths]
        T = x.shape[1]
        edges = torch.cat([x[:, : heads[self.rank]], x[:, T - tails[self.rank] :]], 1)
        parts = _gather_parts(edges, 1, [h + t for h, t in zip(heads, tails)], self.group)
        zeros = lambda n: x.new_zeros(x.shape[0], n, *x.shape[2:])  # noqa: E731
        past = torch.cat([zeros(before)] + [p[:, heads[r]:] for r, p in enumerate(parts[: self.rank])], 1)
        ahead = [p[:, : heads[r]] for r, p in enumerate(parts) if r > self.rank]
        return past[:, past.shape[1] - before :], torch.cat(ahead + [zeros(after)], 1)[:, :after]

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, T_local·S, D] → every rank's tokens in rank order [B, H, T·S, D]."""
        S = x.shape[2] // self.lengths[self.rank]
        return torch.cat(_gather_parts(x, 2, [n * S for n in self.lengths], self.group), 2)

    def gdn(self, op: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            beta: torch.Tensor, gamma: torch.Tensor, q_rot: torch.Tensor, k_rot: torch.Tensor, *, mode: str,
            chunk_sizes: list[int] | None, first_chunk_continues: bool, eps: float) -> torch.Tensor:
        """Frame-wise GDN of this slice by scan-composite exchange (`frame_gdn_context_parallel`)."""
        return frame_gdn_context_parallel(q, k, v, beta, gamma, q_rot, k_rot, mode=mode, chunk_sizes=chunk_sizes,
                                          first_chunk_continues=first_chunk_continues, eps=eps, group=self.group,
                                          op=op)


def cp_context(frames: int, group: dist.ProcessGroup | None = None) -> CPContext:
    """This rank's `CPContext` for a clip of `frames` latent frames split by `frame_slice` over
    the ranks of `group` (default: the world)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if frames < world:
        raise ValueError(f"context parallelism over {world} ranks needs clips of at least {world} latent frames, "
                         f"got {frames} (lower context_parallel or filter short clips)")
    slices = [frame_slice(frames, r, world) for r in range(world)]
    return CPContext(slices[rank], frames, GroupExchange(group, slices))


__all__ = ["DistInfo", "GroupExchange", "MeshDims", "apply_activation_checkpointing", "apply_compile", "apply_fsdp",
           "apply_ffn_frame_chunks", "single_process_group", "unwrapped_name",
           "context_parallel_attention", "context_parallel_gdn", "cp_context", "frame_slice", "gather_tokens",
           "init_distributed", "mesh_dims", "parallelize"]
