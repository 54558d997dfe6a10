"""Geometry networks written in wmkit (DESIGN §4): the DINOv2 encoder, Pi3X and MoGe-2.

Each network loads its published checkpoint from a local file with strict key
checking (``read_state_dict`` / ``load_strict`` are shared); no download paths.
Pi3X over long videos: :mod:`.pi3x_inference` (windows of 16, overlap 6, Sim(3)).
"""

from wmkit.annotate.geometry.dinov2 import DinoV2, DinoV2Config
from wmkit.annotate.geometry.pi3x_inference import WindowConfig, predict_video, run_windows
from wmkit.annotate.geometry.pi3x_loader import CheckpointError, load_Pi3X, load_strict, read_state_dict
from wmkit.annotate.geometry.pi3x_model import Pi3X, Pi3XConfig, Pi3XOutput

__all__ = [
    "DinoV2", "DinoV2Config",
    "CheckpointError", "read_state_dict", "load_strict",
    "Pi3X", "Pi3XConfig", "Pi3XOutput", "load_Pi3X", "WindowConfig", "run_windows", "predict_video",
]
