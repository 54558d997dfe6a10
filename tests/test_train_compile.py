"""Per-block torch.compile inside activation checkpointing: the blocks really compile (the GDN
op is the only graph break) and keep the eager math; selective AC is refused beside it.

The compile runs in a spawned process: after dynamo has run, the Triton interpreter that other
tests use on CPU refuses nested @triton.jit calls in the same process."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from _dist_fixtures import spawn_collect
from _model_fixtures import clip_inputs, loss_and_grads, tiny_model
from wmkit.train import parallel
from wmkit.train.parallel import DistInfo, parallelize

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _compiled_against_eager(rank: int, port: int, results: dict) -> None:
    """A compiled, checkpointed tiny model against eager: the outputs and gradients that differ
    beyond float32 round-off (rtol 1e-4, atol 1e-9: some gradients are ~1e-7), dynamo's counters."""
    from torch._dynamo.utils import counters

    torch.set_num_threads(1)
    # aot_eager: dynamo capture and AOT autograd without inductor's code generation (seconds, not minutes)
    parallel.apply_compile = partial(parallel.apply_compile, backend="aot_eager")
    inputs = clip_inputs(B=1, T_latent=5)
    model = tiny_model()
    compiled = parallelize(copy.deepcopy(model), CPU, activation_checkpointing=True, compile_blocks=True,
                           fsdp=False, ffn_frame_chunk=2)
    mismatched = {}
    for mode in ("bidirectional", "chunk_causal"):
        ref, ref_grads = loss_and_grads(model, inputs, mode)
        out, grads = loss_and_grads(compiled, inputs, mode)
        pairs = {"output": (out, ref), **{n: (g, ref_grads[n]) for n, g in grads.items()}}
        for name, (a, b) in pairs.items():
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-9):
                mismatched[f"{mode} {name}"] = float((a - b).abs().max())
        model.zero_grad()
        compiled.zero_grad()
    results[rank] = {"mismatched": mismatched, "graphs": counters["stats"]["unique_graphs"],
                     "breaks": list(counters["graph_break"])}


def test_compiled_checkpointed_blocks_capture_graphs_and_keep_the_math():
    result = spawn_collect(_compiled_against_eager, 1)[0]
    assert not result["mismatched"], result["mismatched"]
    assert result["graphs"] >= 2  # the blocks ran compiled, not back in eager
    breaks = result["breaks"]
    assert breaks and all("torch.compiler.disable" in reason for reason in breaks), breaks  # only the GDN op


def test_selective_ac_with_compiled_blocks_is_refused():
    with pytest.raises(ValueError, match="keep_attention"):
        parallelize(tiny_model(), CPU, activation_checkpointing=True, compile_blocks=True, fsdp=False,
                    keep_attention=True)
