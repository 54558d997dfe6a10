"""Export a training run's newest checkpoint to the plain weight files `wmkit generate` reads.

A run keeps DCP checkpoints (model, optimiser, EMA, counters, RNG, data position) under
``RUN/checkpoints``; sampling needs only the weights, as ``model.safetensors`` plus its
``model.json`` config (`wmkit.model.generate.save_model_weights`). EMA weights are the
default: they are what a user samples from.

Usage::

    wmkit train export runs/tiny --out runs/tiny/model.safetensors
"""

from __future__ import annotations

import json
from pathlib import Path

from wmkit.model import GDNDiT
from wmkit.model.generate import save_model_weights

from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from .config import config_from_dict


def export_model_weights(run: str | Path, out: str | Path, *, use_ema: bool = True) -> Path:
    """Write the newest checkpoint of ``run`` as ``out`` (safetensors) + ``out``.json; return ``out``.

    Raises :class:`CheckpointError` naming the run when it has no checkpoint (or a damaged one).
    """
    run = Path(run)
    saved = json.loads((run / "config.json").read_text())
    saved.pop("hash", None)
    cfg = config_from_dict(saved)
    found = list_checkpoints(run / "checkpoints")
    if not found:
        raise CheckpointError(f"{run}: no checkpoint under {run / 'checkpoints'}")
    model = GDNDiT(cfg.dit)
    part = "ema" if use_ema else "model"
    # Templates with the saved names and shapes; DCP loads into them in place.
    parts = {part: {name: p.detach().clone() for name, p in model.named_parameters()}}
    if not use_ema:
        parts[part] = model.state_dict()
    load_checkpoint(found[-1], parts, {})
    model.load_state_dict(parts[part], strict=not use_ema)  # EMA holds parameters, not buffers
    return save_model_weights(model, out)


__all__ = ["export_model_weights"]
