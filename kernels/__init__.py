"""wmkit.kernels: the frame-wise Gated DeltaNet op (DESIGN §3), Triton and torch reference.

No nn.Module and no other wmkit imports: the model's GDN block owns projections, the
frame conv, norms, gates and RoPE tables, and calls `frame_gdn`.
"""

import os

import torch

# Without a GPU the Triton kernels can only run in Triton's interpreter, which Triton
# picks when a function is decorated: set it before anything here imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from .chunks import chunk_sizes_for
from .frame_gdn import frame_gdn
from .reference import frame_gdn_ref
from .scan import (
    FrameMaps,
    apply_composite,
    combine_composites,
    frame_affine_maps,
    frame_gdn_context_parallel,
    incoming_state,
    scan_composite,
)

__all__ = [
    "FrameMaps",
    "apply_composite",
    "chunk_sizes_for",
    "combine_composites",
    "frame_affine_maps",
    "frame_gdn",
    "frame_gdn_context_parallel",
    "frame_gdn_ref",
    "incoming_state",
    "scan_composite",
]
