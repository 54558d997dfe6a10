"""Flow-matching pieces: logit-normal t, the flow shift, per-frame σ, the first-frame mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from wmkit.model.sampling import add_noise, flow_sigmas
from wmkit.train.flow import FlowConfig, flow_batch, masked_mse, sample_sigmas, shift_sigma


def test_t_is_logit_normal():
    cfg = FlowConfig(logit_mean=0.3, logit_std=1.2, shift=1.0)
    t = sample_sigmas(4000, 8, cfg, torch.Generator().manual_seed(0)).double().numpy().ravel()
    logits = np.log(t / (1 - t))
    res = stats.kstest(logits, stats.norm(loc=0.3, scale=1.2).cdf)
    assert res.pvalue > 1e-3, f"logit(t) is not N(0.3, 1.2²): KS p = {res.pvalue:.2e}"
    assert 0 < t.min() and t.max() < 1


def test_shift_matches_the_sampler_schedule_and_moves_mass_to_noise():
    t = torch.linspace(0, 1, 11)
    # the sampler's shifted sigmas are the same map applied to a uniform grid
    torch.testing.assert_close(shift_sigma(t.flip(0), 3.0), flow_sigmas(10, 3.0))
    assert shift_sigma(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    assert torch.equal(shift_sigma(torch.tensor([0.0, 1.0]), 9.95), torch.tensor([0.0, 1.0]))
    g = torch.Generator().manual_seed(1)
    plain = sample_sigmas(2000, 4, FlowConfig(shift=1.0), g)
    g = torch.Generator().manual_seed(1)
    shifted = sample_sigmas(2000, 4, FlowConfig(shift=9.95), g)
    assert bool((shifted >= plain).all()) and shifted.median() > 0.85


def test_every_latent_frame_draws_its_own_sigma():
    x0 = torch.randn(64, 128, 6, 2, 2)
    fb = flow_batch(x0, FlowConfig(image_condition_prob=0.0), torch.Generator().manual_seed(2))
    assert fb.sigma.shape == (64, 6)
    assert (fb.sigma[:, 1:] - fb.sigma[:, :-1]).abs().min() > 0  # no two neighbours share σ
    noise = fb.target + x0
    torch.testing.assert_close(fb.noisy, add_noise(x0, noise, fb.sigma))  # x_σ = (1−σ)x₀ + σε, v = ε − x₀


def test_first_frame_is_clean_with_probability_0p9_and_out_of_the_loss():
    x0 = torch.randn(4000, 128, 3, 1, 1)
    fb = flow_batch(x0, FlowConfig(image_condition_prob=0.9), torch.Generator().manual_seed(3))
    held = fb.sigma[:, 0] == 0
    assert abs(held.float().mean().item() - 0.9) < 0.02
    torch.testing.assert_close(fb.noisy[held, :, 0], x0[held, :, 0])  # held frames are the clean latent
    assert torch.equal(fb.loss_weight[:, 0], (~held).float()) and bool((fb.loss_weight[:, 1:] == 1).all())
    # an error on held frames does not change the loss; one on other frames does
    pred = fb.target.clone()
    pred[held, :, 0] += 100.0
    assert masked_mse(pred, fb.target, fb.loss_weight).item() == 0.0
    pred[:, :, 1] += 1.0
    assert masked_mse(pred, fb.target, fb.loss_weight).item() == pytest.approx(
        4000 / (3 * 4000 - held.sum().item()), rel=1e-5)  # frame 1 of every clip over all weighted frames
