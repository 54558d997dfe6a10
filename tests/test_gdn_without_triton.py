"""A CPU install without Triton imports wmkit, trains on the reference op, and gets a clear error from the Triton op."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["triton"] = None  # as if Triton were not installed
import torch
from wmkit.kernels import frame_gdn, frame_gdn_ref
from wmkit.model.config import preset
from wmkit.model.dit import GDNDiT
B, T, S, H, D = 1, 2, 3, 2, 4
q, k, v = (torch.randn(B, T, S, H, D) for _ in range(3))
beta, gamma = torch.rand(B, T, S, H), torch.rand(B, T, H).clamp_min(0.1)
out = frame_gdn_ref(q, k, v, beta, gamma, q, k, mode="bidirectional")
assert out.shape == (B, T, S, H, D) and torch.isfinite(out).all()
GDNDiT(preset("tiny"))
try:
    frame_gdn(q, k, v, beta, gamma, q, k, mode="bidirectional")
except ModuleNotFoundError as err:
    print("ERROR:", err)
"""


def test_reference_and_model_need_no_triton_and_the_triton_op_says_what_is_missing() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERROR: frame_gdn needs Triton" in proc.stdout and "wmkit[kernels]" in proc.stdout
