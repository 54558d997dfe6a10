"""Per-block torch.compile of checkpointed blocks (titan's order, AC → compile): every block
compiles to one graph (fullgraph: the GDN op is an opaque custom op), keeps the eager math, and
selective AC still saves the self-attention outputs instead of recomputing them.

The compiles run in a spawned process: after dynamo has run, the Triton interpreter that other
tests use on CPU refuses nested @triton.jit calls in the same process."""

from __future__ import annotations

import copy
from functools import partial

import torch

from _dist_fixtures import spawn_collect
from _model_fixtures import clip_inputs, loss_and_grads, tiny_model
from wmkit.train import parallel
from wmkit.train.parallel import _SDPA_OPS, DistInfo, parallelize

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def _recording_backend(graphs: dict[str, list]) -> object:
    """aot_eager with inductor's partitioner (min-cut, which honours the AC policy), keeping the
    (query tokens, key tokens) of every SDPA forward in the forward and the backward graphs:
    one in the backward is an attention the backward recomputes."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    def sdpa_tokens(node: torch.fx.Node) -> tuple[int, int] | None:
        """(query tokens, key tokens) of an SDPA forward node, bare or inside AOT's rng wrappers
        (flash-style SDPA counts as random: run_and_save_rng_state(op, *args) in the forward,
        run_with_rng_state(rng, op, *args) where the backward recomputes it); else None."""
        call = [node.target, *node.args]
        for i, op in enumerate(call):
            if isinstance(op, torch._ops.OpOverload) and op in _SDPA_OPS:
                q, k = call[i + 1 : i + 3]
                return q.meta["val"].shape[-2], k.meta["val"].shape[-2]
        return None

    def recorder(kind: str):  # noqa: ANN202
        def compiler(gm: torch.fx.GraphModule, example_inputs: list) -> object:
            calls = (sdpa_tokens(n) for n in gm.graph.nodes if n.op == "call_function")
            graphs[kind] += [c for c in calls if c is not None]
            return make_boxed_func(gm.forward)
        return compiler

    return aot_autograd(fw_compiler=recorder("fw"), bw_compiler=recorder("bw"),
                        partition_fn=min_cut_rematerialization_partition)


def _compiled_against_eager(rank: int, port: int, results: dict, cases: list[tuple[str, str, str, bool, tuple[str, ...]]]) -> None:
    """Per case (name, dynamo backend or "recording", GDN op backend, keep_attention, modes): a
    compiled, checkpointed tiny model against the eager one, its outputs and gradients that differ
    beyond float32 round-off (max difference above 1e-4 of the tensor's largest value + 1e-9),
    dynamo's graph count and, with the recording backend, the SDPA calls of the compiled graphs,
    stored in results[name] (one process)."""
    from torch._dynamo.utils import counters

    torch.set_num_threads(1)
    inputs = clip_inputs(B=1, T_latent=5)
    model = tiny_model()
    apply_compile = parallel.apply_compile
    for name, dynamo_backend, gdn_backend, keep, modes in cases:
        model.set_gdn_backend(gdn_backend)
        graphs = {"fw": [], "bw": []}
        torch._dynamo.reset()
        backend = _recording_backend(graphs) if dynamo_backend == "recording" else dynamo_backend
        parallel.apply_compile = partial(apply_compile, backend=backend)
        compiled = parallelize(copy.deepcopy(model), CPU, activation_checkpointing=True, compile_blocks=True,
                               fsdp=False, ffn_frame_chunk=2, keep_attention=keep)
        mismatched = {}
        for mode in modes:
            ref, ref_grads = loss_and_grads(model, inputs, mode)
            out, grads = loss_and_grads(compiled, inputs, mode)
            pairs = {"output": (out, ref), **{n: (g, ref_grads[n]) for n, g in grads.items()}}
            for tensor, (a, b) in pairs.items():
                diff = float((a - b).abs().max())
                if diff > 1e-4 * float(b.abs().max()) + 1e-9:
                    mismatched[f"{mode} {tensor}"] = diff
            model.zero_grad()
            compiled.zero_grad()
        results[name] = {"mismatched": mismatched, "graphs": counters["stats"]["unique_graphs"], **graphs}
        counters.clear()


def test_compiled_checkpointed_blocks_keep_the_math_and_the_saved_attention():
    """aot_eager with inductor's partitioner: selective AC with the GPU's GDN op (a custom op; the
    Triton interpreter here), and plain AC with the reference op."""
    report = spawn_collect(_compiled_against_eager, 1, [
        ("kept", "recording", "triton", True, ("bidirectional", "chunk_causal")),
        ("recomputed", "recording", "reference", False, ("bidirectional",)),
    ])
    for case in report.values():
        assert not case["mismatched"], case["mismatched"]
        assert case["graphs"] >= 2, case  # GDN and softmax blocks ran compiled
    self_attention = lambda calls: [(nq, nk) for nq, nk in calls if nk >= nq]  # noqa: E731
    kept, recomputed = report["kept"], report["recomputed"]
    assert self_attention(kept["fw"]) and self_attention(recomputed["fw"])
    assert not self_attention(kept["bw"]), kept["bw"]  # saved: no self-attention forward in the backward
    assert self_attention(recomputed["bw"]) == self_attention(recomputed["fw"])  # plain AC recomputes each


def test_inductor_compiled_blocks_with_selective_ac_match_eager():
    """Inductor's generated code with selective AC and the GDN custom op (the GPU step's setup;
    the pair once gave wrong gradients when compilation sat inside the checkpoint)."""
    case = spawn_collect(_compiled_against_eager, 1, [("inductor", "inductor", "triton", True, ("bidirectional",))])
    assert not case["inductor"]["mismatched"], case["inductor"]["mismatched"]
    assert case["inductor"]["graphs"] >= 2
