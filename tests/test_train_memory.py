"""Memory savers of a training step keep the math: FFN frame chunks (exact), FSDP2 bf16 mixed
precision on one process (bf16 tolerance), and the Triton GDN op's saved states pass autograd's
saved-tensor hooks (so activation checkpointing discards them)."""

from __future__ import annotations

import copy

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from _dist_fixtures import spawn_collect
from _model_fixtures import clip_inputs, loss_and_grads, single_thread, tiny_model  # noqa: F401 (fixture)
from wmkit.train.parallel import _SDPA_OPS, DistInfo, parallelize

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def test_ffn_frame_chunks_match_the_whole_clip(single_thread):
    inputs = clip_inputs(B=1, T_latent=7)
    for mode in ("bidirectional", "chunk_causal"):
        model = tiny_model()
        chunked = parallelize(copy.deepcopy(model), CPU, activation_checkpointing=True, compile_blocks=False,
                              fsdp=False, ffn_frame_chunk=3)  # 7 frames: chunks of 3, 3, 1
        ref, ref_grads = loss_and_grads(model, inputs, mode)
        out, grads = loss_and_grads(chunked, inputs, mode)
        torch.testing.assert_close(out, ref)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], msg=lambda m, n=name: f"{mode} {n}: {m}")


class _CountSelfAttention(TorchDispatchMode):
    """Counts softmax self-attention SDPA calls (as many keys as queries) under the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SDPA_OPS and args[1].shape[-2] >= args[0].shape[-2]:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def test_keeping_attention_outputs_skips_their_recomputation_and_keeps_the_math(single_thread):
    inputs = clip_inputs(B=1, T_latent=5)
    counts = {}
    results = {}
    for keep in (False, True):
        model = parallelize(tiny_model(), CPU, activation_checkpointing=True, compile_blocks=False, fsdp=False,
                            ffn_frame_chunk=2, keep_attention=keep)
        with _CountSelfAttention() as counter:
            results[keep] = loss_and_grads(model, inputs, "chunk_causal")
        counts[keep] = counter.calls
    (out, grads), (ref, ref_grads) = results[True], results[False]
    torch.testing.assert_close(out, ref)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], msg=lambda m, n=name: f"{n}: {m}")
    # plain AC runs each self-attention forward twice (forward, recomputation), kept outputs once
    assert counts[True] >= 2 * len(tiny_model().cfg.softmax_blocks) and counts[False] == 2 * counts[True]


def _mixed_precision_step(rank: int, port: int, results: dict) -> None:
    """One FSDP2 bf16 step of the tiny model in a world of one, against the fp32 model."""
    torch.set_num_threads(1)
    inputs = clip_inputs(B=1, T_latent=5)
    model = tiny_model()
    ref = model(**inputs).detach()
    block_inputs = []
    parallelize(model, CPU, activation_checkpointing=True, compile_blocks=False, fsdp=True,
                param_dtype=torch.bfloat16, ffn_frame_chunk=2)
    model.blocks[0].register_forward_pre_hook(lambda m, args: block_inputs.append(args[0].dtype))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(**inputs)
    out.float().square().mean().backward()
    optim.step()
    locals_ = [(p.to_local(), p.grad.to_local()) for p in model.parameters()]
    results[rank] = {
        "block_input": str(block_inputs[0]), "out": str(out.dtype),
        "err": float((out.detach().float() - ref).norm() / ref.norm()),
        "fp32": all(p.dtype == torch.float32 and g.dtype == torch.float32 for p, g in locals_),
        "finite": all(bool(torch.isfinite(g).all()) for _, g in locals_),
    }


def test_bf16_mixed_precision_runs_a_step_on_one_process():
    r = spawn_collect(_mixed_precision_step, 1)[0]
    assert r["block_input"] == "torch.bfloat16" and r["out"] == "torch.bfloat16"  # residual stream in bf16
    assert r["fp32"] and r["finite"]  # fp32 weights and gradients for the optimiser
    assert r["err"] < 1.5e-2, r["err"]  # bf16 rounding against the fp32 model (bf16 autocast: 0.4 %)


def test_triton_gdn_op_saves_its_states_for_backward_through_autograd():
    """The op's fp32 Grams and per-frame states go through autograd's saved-tensor hooks (what
    activation checkpointing intercepts to discard and recompute them), and the backward uses
    what the hooks hand back: gradients are the same when every saved tensor is a copy."""
    from _gdn_fixtures import gdn_inputs
    from wmkit.kernels import frame_gdn

    B, T, S, H, D = 1, 3, 4, 2, 8
    xs = gdn_inputs(B, T, S, H, D, D)
    do = torch.randn(B, T, S, H, D)
    plain = torch.autograd.grad(frame_gdn(*xs, mode="bidirectional"), xs, do)
    packed = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        packed.append((tuple(t.shape), t.dtype))
        return t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        o = frame_gdn(*xs, mode="bidirectional")
    fp32 = lambda *shape: (shape, torch.float32)  # noqa: E731
    assert packed.count(fp32(B * H, T, D, D)) == 4  # Grams M, N and the states S_t, R_t (Dv = D)
    assert packed.count(fp32(B * H, T, 1, D)) == 2  # normalisers z_t, r_t
    for a, b in zip(torch.autograd.grad(o, xs, do), plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rms_norm_matches_torch_and_keeps_its_input_dtype():
    from wmkit.model.layers import RMSNorm

    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        norm, ref = RMSNorm(24, eps=1e-5), torch.nn.RMSNorm(24, eps=1e-5)
        with torch.no_grad():
            norm.weight.normal_()
            ref.weight.copy_(norm.weight)
        qkv = torch.randn(2, 2600, 72, dtype=dtype, requires_grad=True)  # 5,200 rows: two row chunks
        x = qkv.chunk(3, -1)[1]  # a strided view, as the q/k norms get
        w = torch.randn(2, 2600, 24)
        out, out_ref = norm(x), ref(x)
        assert out.dtype == dtype and torch.equal(out, out_ref)
        grads = torch.autograd.grad((out.float() * w).sum(), (qkv, norm.weight))
        grads_ref = torch.autograd.grad((out_ref.float() * w).sum(), (qkv, ref.weight))
        tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, **tol)


def test_silu_gate_matches_autograd():
    from wmkit.model.gdn_attention import silu_gate

    torch.manual_seed(0)
    raw, gate = (torch.randn(3, 2000, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    w = torch.randn(3, 2000, 16)
    for dtype in (torch.bfloat16, torch.float32):
        out = silu_gate(raw, gate, dtype)
        ref = (raw.float() * torch.nn.functional.silu(gate.float())).to(dtype)
        assert out.dtype == dtype and torch.equal(out, ref)
        grads = torch.autograd.grad((out.float() * w).sum(), (raw, gate))
        grads_ref = torch.autograd.grad((ref.float() * w).sum(), (raw, gate))
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-2, atol=1e-2)


def test_chunked_ffn_op_registration_and_gradients():
    """`wmkit::glu_spatial_chunked`: torch.library's checks (schema, fake kernel, autograd, AOT
    tracing) and its hand-written backward against autograd through the unchunked math."""
    from wmkit.model.ffn_chunks import glu_spatial, glu_spatial_chunked

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 12, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
               for shape in ((20, 8), (20,), (20, 1, 3, 3), (20,), (8, 10))]
    results = torch.library.opcheck(torch.ops.wmkit.glu_spatial_chunked, (x, *weights, 3, 4, 2))
    assert set(results.values()) == {"SUCCESS"}, results
    do = torch.randn(2, 5, 12, 8, generator=g, dtype=torch.float64)
    ref = torch.autograd.grad(glu_spatial(x, *weights, (3, 4)), [x, *weights], do)
    got = torch.autograd.grad(glu_spatial_chunked(x, *weights, (3, 4), 2), [x, *weights], do)
    for name, a, b in zip(("x", "expand_w", "expand_b", "dw_w", "dw_b", "project_w"), got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, n=name: f"d{n}: {m}")
