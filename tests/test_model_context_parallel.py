"""`GDNDiT` context-parallel over 2 gloo ranks: a 9-latent-frame clip split [0, 5) | [5, 9)
(uneven, and cutting the chunk-causal chunk [4, 9)) gives on each rank its slice of the
unsplit forward, and the parameter gradients summed over the ranks equal the unsplit
gradients, in both modes (every zero-initialised projection woken up so that the halos,
the scan composites and the K/V gather all show). float64 through the torch reference op:
in fp32 the unsplit model's own cross-attention query gradients carry ~2e-3 relative
rounding noise (checked against float64), too much for an exact comparison. The GDN layer
computes β and γ in fp32 on purpose, so their parameters' gradients agree to ~4e-7."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from _dist_fixtures import spawn_collect
from _model_fixtures import clip_inputs, tiny_model
from wmkit.train.parallel import cp_context

FRAMES = 9


def _errors(rank: int, mode: str) -> dict[str, float]:
    """Largest differences, relative to the unsplit value's largest magnitude."""
    model = tiny_model(seed=2).double()
    inputs = clip_inputs(B=2, T_latent=FRAMES, seed=3)
    inputs |= {"latents": inputs["latents"].double(), "text": inputs["text"].double()}
    do = torch.randn(2, 128, FRAMES, 3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    full = model(**inputs, mode=mode)
    (full * do).sum().backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    cp = cp_context(FRAMES)
    a, b = cp.frames
    out = model(inputs["latents"][:, :, a:b], inputs["timesteps"][:, a:b], inputs["cameras"].frames(a, b),
                inputs["text"], inputs["text_mask"], mode=mode, cp=cp)
    (out * do[:, :, a:b]).sum().backward()
    rel = lambda x, ref: ((x - ref).abs().max() / ref.abs().max()).item()  # noqa: E731
    errs = {f"{mode} out": rel(out.detach(), full[:, :, a:b].detach())}
    for name, p in model.named_parameters():
        grad = p.grad.clone()
        dist.all_reduce(grad)  # each rank's gradient is its frames' share
        assert full_grads[name].abs().max() > 0, f"{name}: zero gradient, the comparison would prove nothing"
        errs[f"{mode} d{name}"] = rel(grad, full_grads[name])
    return errs


def _worker(rank: int, port: int, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = _errors(rank, "bidirectional") | _errors(rank, "chunk_causal")
    finally:
        dist.destroy_process_group()


def test_split_frames_match_the_unsplit_model():
    results = spawn_collect(_worker, 2)
    assert set(results) == {0, 1}
    for rank, errs in results.items():
        assert len(errs) > 100  # output and every parameter of the tiny model, both modes
        for name, err in errs.items():
            assert err < 1e-6, f"rank {rank} {name}: {err:.2e}"


def test_context_parallel_call_refuses_a_cache():
    model = tiny_model()
    inputs = clip_inputs(B=2, T_latent=FRAMES)

    class NoExchange:  # never reached: the call is refused first
        pass

    from wmkit.model import CPContext

    cp = CPContext((0, FRAMES), FRAMES, NoExchange())
    with pytest.raises(ValueError, match="cache"):
        model(**inputs, mode="chunk_causal", cp=cp, return_cache=True)
    with pytest.raises(ValueError, match="latents hold"):
        model(**inputs, cp=CPContext((0, 4), FRAMES, NoExchange()))
