"""Load and save MoGe-2 weights from local files, refusing any checkpoint whose keys do not match exactly.

Accepted files (no downloads; a path that does not exist is an error naming it):

- ``*.safetensors``: the state dict; the config in the metadata key
  ``moge2_config`` (JSON of :meth:`MoGe2Config.to_dict`, what :func:`save_moge2` writes)
  or ``model_config`` (JSON of the upstream dict, e.g. a converted official file).
- ``*.pt`` / ``*.pth``: the official layout ``{"model_config": dict, "model": state_dict}``
  read with ``torch.load(weights_only=True)``, or a bare state dict.

Without a config in the file, ``config`` must be given, or the published ViT-L
preset is used (with the normal head when the file has ``normal_head.*`` keys,
as ``moge-2-vitl-normal`` does). Either way the keys are then checked strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from wmkit.annotate.geometry.moge2_config import MoGe2Config
from wmkit.annotate.geometry.moge2_model import MoGe2Model

__all__ = ["CheckpointError", "load_moge2", "save_moge2", "check_state_dict"]

_SHOW_KEYS = 8  # key names quoted per list in a refusal message


class CheckpointError(ValueError):
    """A weight file that cannot be used: missing, unreadable, or keys that do not match the model."""


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming ``source`` unless ``state`` has exactly the model's keys and shapes."""
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    shapes = sorted(k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", shapes)):
            if keys:
                more = f" ... (+{len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
                detail = [f"{k} {tuple(state[k].shape)} vs {tuple(want[k].shape)}" if label == "shape-mismatched" else k
                          for k in keys[:_SHOW_KEYS]]
                parts.append(f"{len(keys)} {label} keys: {', '.join(detail)}{more}")
        raise CheckpointError(f"MoGe-2 checkpoint {source} does not match the model: " + "; ".join(parts))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], MoGe2Config | None]:
    """State dict and embedded config (or None) of a weight file."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        if "moge2_config" in meta:
            return state, MoGe2Config.from_dict(json.loads(meta["moge2_config"]))
        if "model_config" in meta:
            return state, MoGe2Config.from_upstream(json.loads(meta["model_config"]))
        return state, None
    if path.suffix in (".pt", ".pth"):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
            cfg = blob.get("model_config")
            return blob["model"], MoGe2Config.from_upstream(cfg) if cfg else None
        if isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
            return blob, None
        raise CheckpointError(f"MoGe-2 checkpoint {path}: expected a state dict or {{'model_config', 'model'}}")
    raise CheckpointError(f"MoGe-2 checkpoint {path}: unsupported suffix {path.suffix!r} (.safetensors, .pt or .pth)")


def load_moge2(path: str | Path, config: MoGe2Config | None = None, device: str | torch.device = "cpu") -> MoGe2Model:
    """A MoGe-2 model in eval mode with the weights of the local file ``path`` (strict keys and shapes).

    ``config`` overrides a config stored in the file. Raises CheckpointError
    naming the file when it is missing, unreadable, or its keys differ from the
    model's (the first missing/unexpected names and their counts).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"MoGe-2 checkpoint {path} does not exist (weights load from local files only)")
    try:
        state, stored = _read(path)
    except (OSError, RuntimeError, json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"MoGe-2 checkpoint {path} could not be read: {err}") from err
    if config is None:
        config = stored or MoGe2Config.vitl(normal_head=any(k.startswith("normal_head.") for k in state))
    with torch.device("meta"):
        model = MoGe2Model(config)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def save_moge2(model: MoGe2Model, path: str | Path) -> Path:
    """Write ``model``'s weights and config to ``path`` (.safetensors) for :func:`load_moge2`."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"moge2_config": json.dumps(model.cfg.to_dict())})
    return path
