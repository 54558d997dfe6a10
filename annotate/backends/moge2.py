"""``moge2`` backend: MoGe-2 monocular metric depth and per-frame intrinsics (DESIGN §4, metric role).

Options: ``weights`` (path of a local MoGe-2 checkpoint, see
:mod:`wmkit.annotate.geometry.moge2_load`), ``batch_size`` frames per forward
pass, ``resolution_level`` 0..9 or ``num_tokens`` (ViT tokens per frame, see
:mod:`wmkit.annotate.geometry.moge2_infer`), ``device`` (``auto`` = CUDA when
present) and ``mask_threshold``.

Per clip it returns depth in metres (0 where MoGe's mask rejects a pixel, e.g.
sky), conf = the mask probability on valid pixels (0 elsewhere), one K per
frame in pixels of the given frames, ``c2w = None`` and ``metric = True``.
``setup()`` loads the weights once per worker and records their sha256 in
``weights_sha256`` for provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from wmkit.annotate.backends.registry import register_backend
from wmkit.annotate.geometry.moge2_infer import MASK_THRESHOLD, iter_moge2
from wmkit.annotate.geometry.moge2_load import CheckpointError, load_moge2
from wmkit.annotate.geometry.moge2_model import MoGe2Model
from wmkit.annotate.types import AnnotateError, Prediction
from wmkit.model.vae import file_sha256

__all__ = ["MoGe2Backend"]


@register_backend("moge2")
class MoGe2Backend:
    """MoGe-2 from a local checkpoint (module docstring for the options)."""

    name: ClassVar[str] = "moge2"

    def __init__(self, weights: str, batch_size: int = 8, resolution_level: int = 9, num_tokens: int | None = None,
                 device: str = "auto", mask_threshold: float = MASK_THRESHOLD) -> None:
        if batch_size < 1 or not 0 <= resolution_level <= 9 or (num_tokens is not None and num_tokens < 1):
            raise ValueError(f"MoGe2Backend: need batch_size >= 1, resolution_level in 0..9, num_tokens >= 1; got "
                             f"{batch_size}, {resolution_level}, {num_tokens}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"MoGe2Backend: mask_threshold must be in (0, 1), got {mask_threshold}")
        self.weights = str(weights)
        self.batch_size, self.resolution_level, self.num_tokens = batch_size, resolution_level, num_tokens
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.mask_threshold = mask_threshold
        self.model: MoGe2Model | None = None
        self.weights_sha256: str | None = None

    def setup(self) -> None:
        """Load the checkpoint (strict keys) onto the device and hash the file; AnnotateError names a bad file."""
        try:
            self.model = load_moge2(self.weights, device=self.device)
        except CheckpointError as err:
            raise AnnotateError(f"backend 'moge2': {err}") from err
        self.weights_sha256 = file_sha256(Path(self.weights))

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        """Metric depth, conf and K per frame of ``frames`` uint8 (T, H, W, 3) RGB."""
        where = f"clip {clip_id!r}: backend 'moge2'"
        if self.model is None:
            raise AnnotateError(f"{where}: setup() was not called")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise AnnotateError(f"{where}: frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
        T, H, W, _ = frames.shape
        depth = np.zeros((T, H, W), np.float32)
        conf = np.zeros((T, H, W), np.float32)
        K = np.zeros((T, 3, 3), np.float64)
        for out in iter_moge2(self.model, frames, self.batch_size, self.resolution_level, self.num_tokens,
                              self.mask_threshold):
            span = slice(out.start, out.start + len(out.depth))
            depth[span], K[span] = out.depth, out.K
            conf[span] = np.where(out.valid, out.mask, 0.0)
        return Prediction(depth=depth, conf=conf, c2w=None, K=K, metric=True, backend=self.name)
