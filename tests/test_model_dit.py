"""GDN DiT: configs, parameter count, shapes, camera-branch init, modes and rollout, learning."""

from __future__ import annotations

import pytest
import torch

from _model_fixtures import clip_inputs, single_thread, tiny_model  # noqa: F401 (fixture)
from wmkit.kernels import chunk_sizes_for
from wmkit.model import CameraInputs, GDNDiT, preset, rollout
from wmkit.model.gdn_attention import GDNAttention
from wmkit.model.softmax_attention import SoftmaxAttention

ARTICLE_PARAMS = 2.6e9
pytestmark = pytest.mark.usefixtures("single_thread")


def run(model: GDNDiT, inputs: dict, **kw) -> torch.Tensor:
    return model(inputs["latents"], inputs["timesteps"], inputs["cameras"], inputs["text"], inputs["text_mask"], **kw)


def test_2p6b_parameter_count_matches_the_article():
    with torch.device("meta"):
        model = GDNDiT(preset("2.6b"))
    n = sum(p.numel() for p in model.parameters())
    print(f"2.6b preset: {n:,} parameters ({n / 1e9:.3f} B) vs article 2.6 B")
    assert abs(n - ARTICLE_PARAMS) / ARTICLE_PARAMS < 0.05
    kinds = [type(b.attn) for b in model.blocks]
    assert [i for i, k in enumerate(kinds) if k is SoftmaxAttention] == [3, 7, 11, 15, 19]
    assert kinds.count(GDNAttention) == 15


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"hidden": 65}, "hidden 65 != heads"),
        ({"softmax_blocks": (4,)}, "outside 0..3"),
        ({"heads": 2, "head_dim": 12, "hidden": 24}, "divisible by 8"),
        ({"ffn_time_kernel": 2}, "must be odd"),
    ],
)
def test_bad_config_fails_at_construction(fields, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", **fields)


def test_unknown_preset_is_named():
    with pytest.raises(KeyError, match="'huge'"):
        preset("huge")


@pytest.mark.parametrize("mode", ["bidirectional", "chunk_causal"])
def test_output_has_the_latent_shape(mode):
    model, inputs = tiny_model(), clip_inputs(T_latent=5)
    out = run(model, inputs, mode=mode)
    assert out.shape == inputs["latents"].shape
    assert torch.isfinite(out).all()


def test_bf16_autocast_forward_and_backward_run():
    # Under autocast the norms return fp32 and the projections bf16; the GDN op needs one dtype.
    model, inputs = tiny_model(), clip_inputs(T_latent=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, inputs, mode="chunk_causal")
    out.float().square().mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_fresh_model_predicts_zero():
    model, inputs = tiny_model(wake_zero_inits=False), clip_inputs(T_latent=2)
    assert torch.equal(run(model, inputs), torch.zeros_like(inputs["latents"]))


def test_bad_inputs_name_the_argument():
    model, inputs = tiny_model(), clip_inputs(T_latent=3)
    with pytest.raises(ValueError, match="timesteps must be per latent frame"):
        model(inputs["latents"], inputs["timesteps"][:, :1], inputs["cameras"], inputs["text"], inputs["text_mask"])
    with pytest.raises(ValueError, match="at least one unmasked text token"):
        model(inputs["latents"], inputs["timesteps"], inputs["cameras"], inputs["text"], torch.zeros_like(inputs["text_mask"]))
    with pytest.raises(ValueError, match="cameras must be"):
        model(inputs["latents"], inputs["timesteps"], inputs["cameras"].frames(0, 2), inputs["text"], inputs["text_mask"])


def test_camera_branch_is_silent_at_init_yet_learns():
    """Zero-initialised camera outputs: other cameras give the same output, but the output
    projections of both camera branches get gradient."""
    model = tiny_model(keep_camera_zero=True)
    inputs = clip_inputs(T_latent=3)
    other = dict(inputs, cameras=CameraInputs(inputs["cameras"].plucker.flip(1) * 3, inputs["cameras"].ucpe.flip(1)))
    out = run(model, inputs)
    torch.testing.assert_close(run(model, other), out, rtol=0, atol=0)
    out.square().mean().backward()
    for i, block in enumerate(model.blocks):
        assert block.plucker_proj.weight.grad.abs().sum() > 0, f"block {i}: no gradient on the Plücker projection"
        assert block.attn.out_cam.weight.grad.abs().sum() > 0, f"block {i}: no gradient on the UCPE output"


@pytest.mark.parametrize("T_latent", [7, 11])
def test_rollout_equals_the_full_chunk_causal_pass(T_latent):
    model, inputs = tiny_model(), clip_inputs(T_latent=T_latent)
    assert len(chunk_sizes_for(T_latent)) >= 2
    with torch.no_grad():
        full = run(model, inputs, mode="chunk_causal")
        streamed = rollout(model, inputs["latents"], inputs["timesteps"], inputs["cameras"], inputs["text"], inputs["text_mask"])
    torch.testing.assert_close(streamed, full, rtol=1e-5, atol=1e-5)


def test_later_frames_reach_earlier_ones_only_in_bidirectional_mode():
    model, inputs = tiny_model(), clip_inputs(T_latent=7)  # chunks [4, 3]
    changed = dict(inputs, latents=inputs["latents"].clone())
    changed["latents"][:, :, 5] += 1.0
    with torch.no_grad():
        bi, bi_changed = run(model, inputs), run(model, changed)
        cc, cc_changed = run(model, inputs, mode="chunk_causal"), run(model, changed, mode="chunk_causal")
    assert (bi[:, :, :4] - bi_changed[:, :, :4]).abs().max() > 1e-4
    torch.testing.assert_close(cc_changed[:, :, :4], cc[:, :, :4], rtol=0, atol=0)
    assert (cc[:, :, 4:] - cc_changed[:, :, 4:]).abs().max() > 1e-4  # frame 5 still reaches its own chunk (4..6)
    assert (cc[:, :, 4] - cc_changed[:, :, 4]).abs().max() > 1e-4  # ... including frame 4 before it


def test_triton_and_reference_gdn_give_the_same_model_output():
    """The Triton op (interpreted on CPU) and the torch reference behind the same switch."""
    model, inputs = tiny_model(), clip_inputs(B=1, T_latent=5)
    with torch.no_grad():
        model.set_gdn_backend("reference")
        ref = run(model, inputs, mode="chunk_causal")
        model.set_gdn_backend("triton")
        tri = run(model, inputs, mode="chunk_causal")
    torch.testing.assert_close(tri, ref, rtol=1e-4, atol=1e-5)


def test_tiny_model_overfits_one_batch():
    """A synthetic camera-motion task: the clean clip shifts with the camera; the tiny model
    learns to predict the flow velocity on one batch."""
    torch.manual_seed(0)
    model = GDNDiT(preset("tiny"))
    inputs = clip_inputs(B=2, T_latent=3)
    x0 = torch.zeros_like(inputs["latents"])
    for t in range(3):
        x0[:, :, t] = torch.roll(inputs["latents"][:, :, 0], shifts=t, dims=-1)
    noise, sigma = torch.randn_like(x0), torch.rand(2, 3)
    xt = (1 - sigma[:, None, :, None, None]) * x0 + sigma[:, None, :, None, None] * noise
    target = noise - x0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(xt, sigma, inputs["cameras"], inputs["text"], inputs["text_mask"])
        loss = (out - target).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0], losses
