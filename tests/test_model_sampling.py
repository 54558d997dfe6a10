"""Flow-matching Euler sampler: exact on a straight flow, guidance, image conditioning, AR."""

from __future__ import annotations

import pytest
import torch

from _model_fixtures import clip_inputs, single_thread, tiny_model  # noqa: F401 (fixture)
from wmkit.model.sampling import add_noise, flow_sigmas, sample_chunk_causal, sample_euler


def straight_flow(target: torch.Tensor):
    """The exact velocity towards one data point c: x_σ = (1 − σ)c + σε gives v = (x − c)/σ."""

    def velocity(x, sigma, conditional):
        return (x - target) / sigma[:, None, :, None, None].clamp_min(1e-12)

    return velocity


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_reaches_the_exact_sample_of_a_straight_flow(shift):
    target, noise = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64), torch.randn(2, 4, 3, 2, 2, dtype=torch.float64)
    x = sample_euler(straight_flow(target), noise, flow_sigmas(5, shift).double())
    torch.testing.assert_close(x, target)


def test_guidance_extrapolates_between_the_two_flows():
    cond, uncond = torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 2, 2, 2)
    fields = {True: straight_flow(cond), False: straight_flow(uncond)}
    x = sample_euler(lambda x, s, c: fields[c](x, s, c), torch.randn(1, 4, 2, 2, 2), flow_sigmas(4), guidance=3.0)
    torch.testing.assert_close(x, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_first_frame_stays_clean_and_is_seen_at_timestep_zero():
    image, target = torch.randn(1, 4, 1, 2, 2), torch.randn(1, 4, 3, 2, 2)
    seen = []

    def velocity(x, sigma, conditional):
        seen.append((sigma[:, 0].clone(), x[:, :, :1].clone()))
        return straight_flow(target)(x, sigma, conditional)

    x = sample_euler(velocity, torch.randn(1, 4, 3, 2, 2), flow_sigmas(3), first_frame=image)
    assert torch.equal(x[:, :, :1], image)
    torch.testing.assert_close(x[:, :, 1:], target[:, :, 1:])
    assert all(bool((s == 0).all()) and torch.equal(f, image) for s, f in seen)


def test_flow_sigmas_and_noise_convention():
    s = flow_sigmas(4, 3.0)
    assert s[0] == 1 and s[-1] == 0 and bool((s[1:] < s[:-1]).all())
    assert s[2] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    x0, eps = torch.randn(1, 2, 2, 1, 1), torch.randn(1, 2, 2, 1, 1)
    xt = add_noise(x0, eps, torch.tensor([[0.0, 1.0]]))
    assert torch.equal(xt[:, :, 0], x0[:, :, 0]) and torch.equal(xt[:, :, 1], eps[:, :, 1])


@pytest.mark.usefixtures("single_thread")
def test_chunk_causal_generation_with_the_tiny_model():
    model, inputs = tiny_model(), clip_inputs(B=1, T_latent=7)
    image = inputs["latents"][:, :, :1]
    null = torch.zeros_like(inputs["text"][:, :1])
    out = sample_chunk_causal(
        model, torch.randn_like(inputs["latents"]), inputs["cameras"], inputs["text"], inputs["text_mask"],
        null, torch.ones(1, 1, dtype=torch.bool), flow_sigmas(2, 3.0), guidance=2.0, first_frame=image,
    )
    assert out.shape == inputs["latents"].shape and torch.isfinite(out).all()
    assert torch.equal(out[:, :, :1], image)
