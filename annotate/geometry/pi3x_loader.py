"""Load Pi3X weights from a local file with strict key checking (DESIGN §6: local paths only, no pickle).

``read_state_dict`` and ``load_strict`` are generic (any network, e.g. MoGe-2);
``load_Pi3X`` applies them to the Pi3X checkpoint layout.

The official Pi3X checkpoint also holds the prior-conditioning branch
(``depth_encoder.*``, ``depth_emb``, ``ray_embed.*``, ``pose_inject_blk.*``),
which acts only when depth/ray/pose priors are fed; wmkit runs images only
(upstream's ``disable_multimodal`` removes the same modules), so those keys are
set aside by exact prefix and every other key must match the model exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from wmkit.annotate.geometry.pi3x_model import Pi3X, Pi3XConfig

__all__ = ["CheckpointError", "read_state_dict", "load_strict", "load_Pi3X", "PI3X_CONDITIONING_PREFIXES"]

PI3X_CONDITIONING_PREFIXES = ("depth_encoder.", "depth_emb", "ray_embed.", "pose_inject_blk.")
_SHOWN = 5  # key names quoted per list in an error message


class CheckpointError(ValueError):
    """A weight file that is missing, unreadable, or does not match the network; the message names the file."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pt``/``.pth`` flat state dict read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return load_file(path, device="cpu")
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling refused or corrupt file: name the file, keep the cause
            raise CheckpointError(f"weight file {str(path)!r} could not be read with weights_only=True: {err}") from err
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError(f"weight file {str(path)!r} is not a flat {{name: tensor}} state dict")
        return state
    raise CheckpointError(f"weight file {str(path)!r}: unknown format {path.suffix!r} (use .safetensors or .pt)")


def _listing(kind: str, keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {kind} key(s): {', '.join(sorted(keys)[:_SHOWN])}{more}"


def load_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``model`` with ``strict=True``; raise CheckpointError naming ``source`` and the keys otherwise."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state) if state[k].shape != own[k].shape
    )
    kinds = (("missing", missing), ("unexpected", unexpected), ("file-vs-model shape", reshaped))
    parts = [_listing(kind, keys) for kind, keys in kinds if keys]
    if parts:
        raise CheckpointError(f"weight file {source!r} does not match {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def load_Pi3X(path: str | Path, config: Pi3XConfig | None = None) -> Pi3X:
    """A :class:`Pi3X` (eval mode, CPU, fp32) with the weights of the local file ``path``.

    ``config`` defaults to the official architecture. Conditioning-branch keys
    (:data:`PI3X_CONDITIONING_PREFIXES`) are dropped; any other missing or
    unexpected key raises :class:`CheckpointError` listing them.
    """
    state = read_state_dict(path)
    image_path = {k: v for k, v in state.items() if not k.startswith(PI3X_CONDITIONING_PREFIXES)}
    model = Pi3X(config or Pi3XConfig())
    return load_strict(model, image_path, str(path)).eval()
