"""wmkit.model: the SANA-WM GDN DiT with camera control (DESIGN §3).

Public API::

    from wmkit.model import preset, GDNDiT, camera_inputs, rollout, sample_euler

    cfg = preset("tiny")                       # or "small", "2.6b"
    model = GDNDiT(cfg)
    cams = camera_inputs(c2w, K, latent_hw=(Hl, Wl), image_hw=(H, W))   # c2w [B, T, 4, 4], K [B, T, 3, 3]
    v = model(latents, timesteps, cams, text, text_mask, mode="bidirectional")
    v = model(latents, timesteps, cams, text, text_mask, mode="chunk_causal")
    v = rollout(model, latents, timesteps, cams, text, text_mask)         # same, chunk by chunk
    v = model(latents[:, :, a:b], timesteps[:, a:b], cams.frames(a, b), text, text_mask,
              cp=CPContext((a, b), T, exchange))                          # one rank's frames of a split clip

`model/` never imports torch.distributed: parallelism is applied by `train/`, which also
implements the collectives of context parallelism (`wmkit.train.parallel.GroupExchange`).
"""

from .camera_rays import CameraInputs, camera_inputs, num_latent_frames, plucker_rays, ray_directions, ucpe_transforms
from .config import PRESETS, DiTConfig, preset
from .context_parallel import CPContext, FrameExchange
from .dit import BlockState, DiTCache, GDNDiT, rollout
from .gdn_attention import GDNAttention, gdn_op
from .softmax_attention import SoftmaxAttention

__all__ = [
    "BlockState",
    "CPContext",
    "CameraInputs",
    "DiTCache",
    "DiTConfig",
    "FrameExchange",
    "GDNAttention",
    "GDNDiT",
    "PRESETS",
    "SoftmaxAttention",
    "camera_inputs",
    "gdn_op",
    "num_latent_frames",
    "plucker_rays",
    "preset",
    "ray_directions",
    "rollout",
    "ucpe_transforms",
]
