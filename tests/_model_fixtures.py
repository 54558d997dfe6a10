"""Small inputs for the model tests: a tiny DiT, latents, a moving camera and a caption."""

from __future__ import annotations

import pytest
import torch

from wmkit.model import CameraInputs, GDNDiT, camera_inputs, preset
from wmkit.train.parallel import unwrapped_name

IMAGE_HW = (96, 128)  # pixels of the frames behind a 3 × 4 latent grid
LATENT_HW = (3, 4)


def tiny_model(seed: int = 0, *, wake_zero_inits: bool = True, keep_camera_zero: bool = False) -> GDNDiT:
    """The tiny preset in fp32. `wake_zero_inits` gives the zero-initialised projections
    (final layer, temporal taps, camera outputs) small random weights so every path shows
    in the output; `keep_camera_zero` leaves the camera outputs at their zero init."""
    torch.manual_seed(seed)
    model = GDNDiT(preset("tiny"))
    if wake_zero_inits:
        with torch.no_grad():
            for name, p in model.named_parameters():
                camera = "out_cam" in name or "plucker_proj" in name
                if bool((p == 0).all()) and not (camera and keep_camera_zero):
                    p.normal_(std=0.05)
    return model


def moving_cameras(B: int, T_latent: int, *, speed: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """c2w [B, T, 4, 4] walking along +x and turning about y, K [B, T, 3, 3]; T = 8·(T' − 1) + 1."""
    T = 8 * (T_latent - 1) + 1
    angle = torch.linspace(0, 0.3, T, dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64).repeat(B, T, 1, 1)
    c2w[..., 0, 0], c2w[..., 0, 2] = angle.cos(), angle.sin()
    c2w[..., 2, 0], c2w[..., 2, 2] = -angle.sin(), angle.cos()
    c2w[..., 0, 3] = speed * torch.arange(T, dtype=torch.float64)
    c2w[1:, ..., 1, 3] = 0.05  # a second sample at another height
    K = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]], dtype=torch.float64).repeat(B, T, 1, 1)
    return c2w, K


def clip_inputs(B: int = 2, T_latent: int = 7, seed: int = 1, text_len: int = 5) -> dict:
    """Latents [B, 128, T', 3, 4], timesteps [B, T'], CameraInputs, text [B, L, 32] and mask."""
    g = torch.Generator().manual_seed(seed)
    cameras: CameraInputs = camera_inputs(*moving_cameras(B, T_latent), LATENT_HW, IMAGE_HW)
    mask = torch.ones(B, text_len, dtype=torch.bool)
    mask[-1, text_len // 2 + 1 :] = False
    return {
        "latents": torch.randn(B, 128, T_latent, *LATENT_HW, generator=g),
        "timesteps": torch.rand(B, T_latent, generator=g),
        "cameras": cameras,
        "text": torch.randn(B, text_len, preset("tiny").text_dim, generator=g),
        "text_mask": mask,
    }


def block_causal_mask(query_chunks: torch.Tensor, key_chunks: torch.Tensor, S: int, cached: int = 0) -> torch.Tensor:
    """The dense oracle of chunk-causal attention: [Nq, cached + Nk] bool, True where a query
    token may attend; query_chunks / key_chunks: chunk index per frame, S tokens each;
    the `cached` keys before the clip's are always visible."""
    q, k = (torch.repeat_interleave(c, S) for c in (query_chunks, key_chunks))
    within = q[:, None] >= k[None, :]
    return torch.cat([within.new_ones(q.numel(), cached), within], 1)


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: the tiny model's ops take microseconds, and on a
    shared 2-core machine OpenMP thread hand-offs made them 30× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def loss_and_grads(model: torch.nn.Module, inputs: dict, mode: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and parameter gradients of mean(out²), keyed by the unwrapped model's names
    (activation-checkpoint and torch.compile wrappers removed)."""
    out = model(**inputs, mode=mode)
    out.square().mean().backward()
    return out.detach(), {unwrapped_name(n): p.grad for n, p in model.named_parameters()}
