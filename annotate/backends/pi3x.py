"""Pi3X backend: feed-forward points, confidences and poses over windows, up to scale (DESIGN §4).

Built with ``make_backend("pi3x", weights="/ckpt/pi3x.safetensors")``; ``setup()``
loads the local checkpoint strictly (:func:`wmkit.annotate.geometry.load_Pi3X`),
moves it to ``device`` and records the file's sha256 in ``weights_sha256``.
``predict`` runs :func:`wmkit.annotate.geometry.pi3x_inference.predict_video`:
windows of 16 frames with overlap 6 chained by confidence-weighted Sim(3), the
first frame's camera the identity, K fitted per frame to the local points.
Depth and c2w share one unknown scale (Pi3X's own metric estimate is not
trusted as metres: ``metric=False``; fusion scales to MoGe-2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from wmkit.annotate.backends.registry import register_backend
from wmkit.annotate.geometry.pi3x_inference import WindowConfig, predict_video
from wmkit.annotate.geometry.pi3x_loader import load_Pi3X
from wmkit.annotate.geometry.pi3x_model import Pi3X, Pi3XConfig
from wmkit.annotate.types import AnnotateError, Prediction
from wmkit.model.vae import file_sha256

__all__ = ["Pi3XBackend"]


@register_backend("pi3x")
@dataclass
class Pi3XBackend:
    """Pi3X geometry backend; options are plain data so a config can name them."""

    name: ClassVar[str] = "pi3x"
    weights: str  # local .safetensors (preferred) or .pt file
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    window: int = 16
    overlap: int = 6
    pixel_budget: int = 255_000
    config: Pi3XConfig = field(default_factory=Pi3XConfig)  # Pi3XConfig.tiny() in tests
    weights_sha256: str = field(default="", init=False)
    _model: Pi3X | None = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        """Load the weights once per worker and hash the file for provenance."""
        self._model = load_Pi3X(self.weights, self.config).to(self.device)
        self.weights_sha256 = file_sha256(self.weights)

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        """Depth, conf, c2w (up to scale, frame 0 = identity) and per-frame K of uint8 ``frames`` (T, H, W, 3)."""
        if self._model is None:
            raise AnnotateError(f"clip {clip_id!r}: backend 'pi3x' used before setup()")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise AnnotateError(f"clip {clip_id!r}: backend 'pi3x' needs uint8 (T, H, W, 3) frames, got "
                                f"{frames.dtype} {frames.shape}")
        try:
            out = predict_video(self._model, frames, WindowConfig(self.window, self.overlap, self.pixel_budget))
        except ValueError as err:
            raise AnnotateError(f"clip {clip_id!r}: backend 'pi3x': {err}") from err
        pred = Prediction(depth=out["depth"], conf=out["conf"], c2w=out["c2w"], K=out["K"], metric=False,
                          backend=self.name)
        return pred.validate(clip_id, len(frames), frames.shape[1:3])
