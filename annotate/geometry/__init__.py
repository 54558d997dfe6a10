"""Geometry networks written in wmkit (DESIGN §4): the DINOv2 encoder, Pi3X and MoGe-2.

Each network loads its published checkpoint from a local file with strict key
checking; no download paths.
"""

from wmkit.annotate.geometry.dinov2 import DinoV2, DinoV2Config

__all__ = ["DinoV2", "DinoV2Config"]
