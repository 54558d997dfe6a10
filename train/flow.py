"""Flow-matching training objective (DESIGN §3 "Training"; conventions of `wmkit.model.sampling`).

Per clip and latent frame::

    u ~ N(logit_mean, logit_std²),  t = sigmoid(u)              logit-normal t in (0, 1)
    σ = s·t / (1 + (s − 1)·t)                                   flow shift s (≈ 9.95 at 720p)
    x_σ = (1 − σ)·x₀ + σ·ε,   target v = ε − x₀                 `add_noise`, the sampler's convention

Every latent frame draws its own σ (per-frame timesteps: the chunk-causal rollout later
denoises frames at different levels). With probability `image_condition_prob` a clip's
first latent frame is held clean (σ = 0, the encoded conditioning image, as the sampler
holds it) and left out of the loss; the loss is the mean squared velocity error over the
remaining latent frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wmkit.model.camera_rays import CameraInputs
from wmkit.model.context_parallel import CPContext
from wmkit.model.dit import GDNDiT
from wmkit.model.sampling import add_noise


@dataclass(frozen=True)
class FlowConfig:
    """Knobs of the objective (copied from `TrainConfig`)."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    image_condition_prob: float = 0.9


def shift_sigma(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow shift σ = s·t / (1 + (s − 1)·t), elementwise on t in [0, 1] (s > 1 moves mass to noise)."""
    return shift * t / (1 + (shift - 1) * t)


def sample_sigmas(batch: int, frames: int, cfg: FlowConfig, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-frame noise levels σ [batch, frames] float32: logit-normal t, then the flow shift."""
    u = torch.randn(batch, frames, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
    return shift_sigma(torch.sigmoid(u), cfg.shift)


def image_condition(batch: int, cfg: FlowConfig, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """[batch] bool: which clips hold their first latent frame clean (probability image_condition_prob)."""
    return torch.rand(batch, generator=generator, device=device) < cfg.image_condition_prob


@dataclass(frozen=True)
class FlowBatch:
    """One draw of the objective's randomness for latents x₀ [B, C, T', H', W']."""

    noisy: torch.Tensor
    """x_σ [B, C, T', H', W']."""
    sigma: torch.Tensor
    """σ [B, T'] (0 on held first frames): the model's per-frame timesteps."""
    target: torch.Tensor
    """v = ε − x₀ [B, C, T', H', W']."""
    loss_weight: torch.Tensor
    """[B, T'] 1 on frames in the loss, 0 on held first frames."""


def flow_batch(x0: torch.Tensor, cfg: FlowConfig, generator: torch.Generator) -> FlowBatch:
    """Draw σ, the conditioning choice and ε for clean latents x0 [B, C, T', H', W'] (fp32)."""
    B, _, T = x0.shape[:3]
    dev = x0.device
    sigma = sample_sigmas(B, T, cfg, generator, dev)
    held = image_condition(B, cfg, generator, dev)
    first = torch.zeros(B, T, dtype=torch.bool, device=dev)
    first[:, 0] = held
    sigma = sigma.masked_fill(first, 0.0)
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    return FlowBatch(add_noise(x0, noise, sigma), sigma, noise - x0, (~first).to(x0.dtype))


def frame_errors(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per clip and latent frame [B, T'] of pred, target [B, C, T', H', W'] (fp32)."""
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of (pred − target)² over the frames with weight 1; pred, target [B, C, T', H', W'], weight [B, T']."""
    return (frame_errors(pred, target) * weight).sum() / weight.sum().clamp_min(1.0)


def flow_matching_loss(
    model: GDNDiT | torch.nn.Module,
    x0: torch.Tensor,
    cameras: CameraInputs,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    cfg: FlowConfig,
    generator: torch.Generator,
    *,
    mode: str = "bidirectional",
    cp: CPContext | None = None,
) -> torch.Tensor:
    """Scalar flow-matching loss of `model` on clean latents x0 [B, 128, T', H', W'] with
    their cameras and caption embeddings text [B, L, C_text], text_mask [B, L].

    With `cp` (context parallelism) every rank of the group passes the same clip and
    generator state, so all draw the same σ and noise; the model runs on this rank's frames
    `cp.frames` and the result is this rank's share of the loss: its frames' squared errors
    over the whole clip's loss frames. The shares of the group's ranks sum to the loss."""
    fb = flow_batch(x0, cfg, generator)
    if cp is None:
        pred = model(fb.noisy, fb.sigma, cameras, text, text_mask, mode=mode)
        return masked_mse(pred, fb.target, fb.loss_weight)
    a, b = cp.frames
    pred = model(fb.noisy[:, :, a:b], fb.sigma[:, a:b], cameras.frames(a, b), text, text_mask, mode=mode, cp=cp)
    errors = frame_errors(pred, fb.target[:, :, a:b])  # [B, T_local]
    return (errors * fb.loss_weight[:, a:b]).sum() / fb.loss_weight.sum().clamp_min(1.0)


__all__ = ["FlowBatch", "FlowConfig", "flow_batch", "flow_matching_loss", "frame_errors", "image_condition", "masked_mse",
           "sample_sigmas", "shift_sigma"]
