"""Triton frame-wise GDN against the torch reference: forward, every input gradient,
initial/final state, every mode; its custom-op registration. CPU: Triton interpreter at tiny shapes that break
tiling (odd S and D, T = 1, chunk edges). GPU (marked): production shapes, bf16."""

from __future__ import annotations

import pytest
import torch

from _gdn_fixtures import NAMES, err_ratio, gdn_inputs, random_state
from wmkit.kernels import frame_gdn, frame_gdn_ref

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def _compare(xs, mode, tol_out, tol_grad, *, chunk_sizes=None, initial_state=None, seed=0):
    """Run op and reference on the same leaves with one random cotangent; compare o and
    every gradient (the initial state's too) by RMS error ratio."""
    kw = {"mode": mode, "chunk_sizes": chunk_sizes}
    leaves = list(xs) + ([] if initial_state is None else list(initial_state))
    o, (S_last, z_last) = frame_gdn(*xs, **kw, initial_state=initial_state, return_final_state=True)
    ref, (S_ref, z_ref) = frame_gdn_ref(*xs, **kw, initial_state=initial_state, return_final_state=True)
    assert o.shape == ref.shape and o.dtype == xs[0].dtype
    assert torch.isfinite(o).all()
    assert err_ratio(o, ref) < tol_out, f"o: {err_ratio(o, ref):.2e}"
    assert err_ratio(S_last, S_ref) < tol_out and err_ratio(z_last, z_ref) < tol_out
    g = torch.Generator(device=o.device).manual_seed(seed)
    do = torch.randn(o.shape, generator=g, device=o.device).to(o.dtype)
    dS = torch.randn(S_last.shape, generator=g, device=o.device)
    loss = (o.float() * do.float()).sum() + (S_last * dS).sum() + z_last.sum()
    loss_ref = (ref.float() * do.float()).sum() + (S_ref * dS).sum() + z_ref.sum()
    grads = torch.autograd.grad(loss, leaves)
    grads_ref = torch.autograd.grad(loss_ref, leaves)
    names = list(NAMES) + ["S0", "z0"]
    for name, a, b in zip(names, grads, grads_ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.isfinite(a).all(), f"d{name} not finite"
        assert err_ratio(a, b) < tol_grad, f"d{name}: {err_ratio(a, b):.2e}"


CPU_CASES = [
    # (mode, B, T, S, H, D, Dv)
    ("causal", 1, 1, 5, 2, 7, 5),
    ("bidirectional", 1, 1, 3, 1, 16, 16),
    ("causal", 2, 9, 13, 2, 20, 12),
    ("bidirectional", 2, 9, 13, 2, 20, 12),
    ("chunk_causal", 2, 9, 13, 2, 20, 12),
    ("chunk_causal", 1, 11, 6, 2, 16, 9),
    ("bidirectional", 1, 4, 70, 1, 9, 18),
]


@pytest.mark.parametrize(("mode", "B", "T", "S", "H", "D", "Dv"), CPU_CASES, ids=lambda x: str(x))
def test_matches_reference_fp32(mode, B, T, S, H, D, Dv):
    _compare(gdn_inputs(B, T, S, H, D, Dv), mode, 1e-5, 1e-5)


def test_initial_state_and_custom_chunks():
    xs = gdn_inputs(1, 8, 5, 2, 12, 8, seed=3)
    _compare(xs, "chunk_causal", 1e-5, 1e-5, chunk_sizes=[2, 6], initial_state=random_state(1, 2, 12, 8))


def test_fp16_close_to_fp32_reference():
    # Half-precision casts inside the kernels; bf16 itself runs on the GPU tests only,
    # because Triton's interpreter multiplies bf16 dot operands wrongly (numpy has no bf16).
    xs = gdn_inputs(1, 5, 33, 2, 16, 16, seed=4)
    lo = [x.detach().half().requires_grad_() for x in xs]
    o = frame_gdn(*lo, mode="chunk_causal")
    ref = frame_gdn_ref(*xs, mode="chunk_causal")
    assert o.dtype == torch.float16
    assert err_ratio(o, ref) < 5e-3
    do = torch.randn_like(ref)
    grads = torch.autograd.grad(o.float(), lo, do)
    for name, a, b in zip(NAMES, grads, torch.autograd.grad(ref, xs, do)):
        assert a.dtype == torch.float16 and err_ratio(a, b) < 5e-3, name


def test_nonfinite_input_is_named():
    xs = [x.detach() for x in gdn_inputs(1, 3, 4, 2, 4, 4)]
    xs[0][0, 2, 1, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="q / q_rot at batch 0, frame 2, head 1"):
        frame_gdn(*xs, mode="causal")
    xs = [x.detach() for x in gdn_inputs(1, 3, 4, 2, 4, 4)]
    xs[1][0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="k / beta at batch 0, frame 1, head 0"):
        frame_gdn(*xs, mode="bidirectional")
    xs[4][0, 0, 0] = 1.25
    with pytest.raises(ValueError, match=r"gamma\[0, 0, 0\] = 1.25"):
        frame_gdn(*xs, mode="bidirectional")


@pytest.mark.parametrize(("mode", "with_state"), [("causal", True), ("bidirectional", False), ("chunk_causal", True)])
def test_custom_op_registration(mode, with_state):
    """torch.library's own checks of `wmkit::frame_gdn_forward`: schema, autograd registration,
    the fake (shape-only) kernel against the real outputs, and tracing by AOT autograd
    (what torch.compile does with it), backward op included."""
    S0, z0 = random_state(1, 2, 16, 16) if with_state else (None, None)
    args = (*gdn_inputs(1, 5, 4, 2, 16, 16), S0, z0, mode, [2, 3] if mode == "chunk_causal" else None, 1e-8, True)
    results = torch.library.opcheck(torch.ops.wmkit.frame_gdn_forward, args)
    assert set(results.values()) == {"SUCCESS"}, results


def test_rejects_float64():
    xs = [x.detach().double() for x in gdn_inputs(1, 2, 3, 1, 4, 4)]
    with pytest.raises(TypeError, match="q has dtype torch.float64"):
        frame_gdn(*xs, mode="causal")


# ---- GPU, production shapes: H = 20, D = 112, S = 900 (not a power of two) ----

@gpu
@needs_cuda
@pytest.mark.parametrize("mode", ["causal", "bidirectional", "chunk_causal"])
def test_gpu_production_shape_bf16(mode):
    xs = gdn_inputs(1, 11, 900, 20, 112, 112, dtype=torch.bfloat16, device="cuda", seed=5)
    _compare(xs, mode, 1e-2, 2e-2, initial_state=random_state(1, 20, 112, 112, device="cuda"))


@gpu
@needs_cuda
def test_gpu_fp32_tight():
    xs = gdn_inputs(2, 9, 901, 4, 112, 112, device="cuda", seed=6)
    _compare(xs, "chunk_causal", 3e-3, 3e-3)


@gpu
@needs_cuda
def test_gpu_T121_chunk_causal_bf16():
    xs = gdn_inputs(1, 121, 900, 20, 112, 112, dtype=torch.bfloat16, device="cuda", seed=7)
    _compare(xs, "chunk_causal", 1e-2, 2e-2)
