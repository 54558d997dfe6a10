"""Flow-matching Euler sampling with classifier-free guidance and first-frame conditioning.

Convention (the release's `linear_flow` with `predict_flow_v`): with clean latents x₀ and
noise ε, x_σ = (1 − σ)·x₀ + σ·ε and the model predicts v = ε − x₀; sampling integrates
dx/dσ = v from σ = 1 (noise) to σ = 0. Flow shift s bends the schedule towards high
noise, σ ← s·σ / (1 + (s − 1)·σ) (the release uses s ≈ 9.8 at 720p inference).

Image conditioning: the first latent frame is the encoded image, held clean with
timestep 0 at every step, and only the other frames are integrated.
"""

from __future__ import annotations

from typing import Callable

import torch

from wmkit.kernels import chunk_sizes_for

from .camera_rays import CameraInputs
from .dit import DiTCache, GDNDiT

Velocity = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
"""v = f(x [B, C, T', H', W'], sigma [B, T'], conditional) — the velocity field to integrate."""


def flow_sigmas(steps: int, shift: float = 1.0, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """[steps + 1] noise levels from 1 to 0, uniform before the flow shift."""
    if steps < 1 or shift <= 0:
        raise ValueError(f"flow_sigmas: need steps >= 1 and shift > 0, got {steps}, {shift}")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).float().to(device)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = (1 − σ)·x₀ + σ·ε for latents [B, C, T', H', W'] and per-frame σ [B, T']."""
    s = sigma[:, None, :, None, None].to(x0.dtype)
    return (1 - s) * x0 + s * noise


def guided(velocity: Velocity, x: torch.Tensor, sigma: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance v_u + g·(v_c − v_u); one conditional call when g == 1."""
    v_c = velocity(x, sigma, True)
    if guidance == 1.0:
        return v_c
    v_u = velocity(x, sigma, False)
    return v_u + guidance * (v_c - v_u)


def sample_euler(
    velocity: Velocity,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    guidance: float = 1.0,
    first_frame: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate from noise [B, C, T', H', W'] along `sigmas` (1 → 0) with Euler steps.

    first_frame: [B, C, 1, H', W'] clean latent of the conditioning image, kept at σ = 0.
    Returns the sample x₀ [B, C, T', H', W']."""
    x = noise.clone()
    B, T = x.shape[0], x.shape[2]
    held = torch.zeros(T, dtype=torch.bool, device=x.device)
    if first_frame is not None:
        x[:, :, :1] = first_frame
        held[0] = True
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sigma = torch.where(held, 0.0, s).expand(B, T).to(x.device)
        v = guided(velocity, x, sigma, guidance)
        step = torch.where(held, 0.0, s_next - s).to(x.dtype)[None, None, :, None, None]
        x = x + step * v
    return x


def dit_velocity(
    model: GDNDiT,
    cameras: CameraInputs,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    *,
    mode: str = "bidirectional",
    caches: dict[bool, DiTCache | None] | None = None,
) -> Velocity:
    """The DiT as a `Velocity`: conditional calls use the caption, unconditional ones the
    null caption (e.g. the encoded empty prompt); `caches` continue a chunk-causal rollout."""

    def velocity(x: torch.Tensor, sigma: torch.Tensor, conditional: bool) -> torch.Tensor:
        y, m = (text, text_mask) if conditional else (null_text, null_mask)
        cache = None if caches is None else caches[conditional]
        kw = {"mode": mode} if cache is None else {"mode": "chunk_causal", "chunk_sizes": [x.shape[2]], "cache": cache}
        return model(x, sigma, cameras, y, m, **kw)

    return velocity


@torch.no_grad()
def sample_chunk_causal(
    model: GDNDiT,
    noise: torch.Tensor,
    cameras: CameraInputs,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    null_text: torch.Tensor,
    null_mask: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    guidance: float = 1.0,
    first_frame: torch.Tensor | None = None,
) -> torch.Tensor:
    """Autoregressive generation: each chunk of `chunk_sizes_for(T')` latent frames is
    denoised with Euler steps on top of the caches of the clean earlier chunks, then run
    once clean (σ = 0) to extend the caches (one per guidance branch)."""
    T = noise.shape[2]
    caches: dict[bool, DiTCache | None] = {True: None, False: None}
    out, start = [], 0
    for size in chunk_sizes_for(T):
        stop = start + size
        cams = cameras.frames(start, stop)
        held = first_frame if start == 0 else None
        velocity = dit_velocity(model, cams, text, text_mask, null_text, null_mask, mode="chunk_causal",
                                caches=caches if start else None)
        x = sample_euler(velocity, noise[:, :, start:stop], sigmas, guidance=guidance, first_frame=held)
        clean = torch.zeros(x.shape[0], size, device=x.device)
        for cond, (y, m) in ((True, (text, text_mask)), (False, (null_text, null_mask))):
            if cond or guidance != 1.0:
                kw = {"cache": caches[cond]} if start else {}
                _, caches[cond] = model(x, clean, cams, y, m, mode="chunk_causal", chunk_sizes=[size], return_cache=True, **kw)
        out.append(x)
        start = stop
    return torch.cat(out, 2)
