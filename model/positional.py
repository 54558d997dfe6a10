"""3D RoPE over (frame, row, column) and the UCPE per-token 4×4 transforms.

RoPE rotates channel pairs (2i, 2i+1); of n pairs, rows and columns get ⌊n/3⌋ each and
frames the rest (the Wan split), each axis with frequencies θ^(−i/n_axis). Positions are
integer token indexes; frame positions are absolute in the clip (`frame_offset`), so a
chunk of a rollout rotates exactly as in the full pass.
"""

from __future__ import annotations

import torch


def rope_split(pairs: int) -> tuple[int, int, int]:
    """Pairs given to the (frame, row, column) axes out of `pairs` rotated channel pairs."""
    hw = pairs // 3
    return pairs - 2 * hw, hw, hw


def rope_tables(
    channels: int, frames: tuple[int, int], grid_hw: tuple[int, int], theta: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [T, S, channels/2] (fp32) for frames [start, stop) of an H'×W' grid."""
    if channels % 2:
        raise ValueError(f"rope_tables: channels must be even, got {channels}")
    (start, stop), (Hl, Wl) = frames, grid_hw
    angles = []
    for n, pos in zip(rope_split(channels // 2), (torch.arange(start, stop), torch.arange(Hl), torch.arange(Wl))):
        freqs = theta ** (-torch.arange(n, dtype=torch.float64) / max(n, 1))
        angles.append(pos.double()[:, None] * freqs)  # [len, n]
    t, h, w = angles
    T, S = stop - start, Hl * Wl
    grid = torch.cat(
        [
            t[:, None, None, :].expand(T, Hl, Wl, -1),
            h[None, :, None, :].expand(T, Hl, Wl, -1),
            w[None, None, :, :].expand(T, Hl, Wl, -1),
        ],
        -1,
    ).reshape(T, S, -1)
    return grid.cos().float().to(device), grid.sin().float().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [B, T, S, H, D] by the tables [T, S, D/2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2)


def apply_block_transform(x: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Multiply each group of 4 channels of x [B, T, S, H, 4·g] by the token's P [B, T, S, 4, 4]."""
    xs = x.unflatten(-1, (-1, 4))  # [B, T, S, H, g, 4]
    return torch.einsum("btsij,btshgj->btshgi", P.to(x.dtype), xs).flatten(-2)


class UCPE:
    """The per-token transforms of UCPE for one call: Pᵀ on q, P⁻¹ on k and v, P on the output.

    Applied to the first half of each head's channels (the geometric channels), so a
    query–key product there is qᵀ P_i P_j⁻¹ k, a function of the relative transform only."""

    def __init__(self, P: torch.Tensor) -> None:
        """P: [B, T, S, 4, 4] world → ray-local transforms of the tokens."""
        self.P = P
        self.P_t = P.transpose(-1, -2)
        self.P_inv = torch.linalg.inv(P.float()).to(P.dtype)

    @staticmethod
    def _half(x: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat([apply_block_transform(x[..., :half], P), x[..., half:]], -1)

    def query(self, q: torch.Tensor) -> torch.Tensor:
        """Pᵀ on the geometric half of q [B, T, S, H, D]."""
        return self._half(q, self.P_t)

    def key(self, k: torch.Tensor) -> torch.Tensor:
        """P⁻¹ on the geometric half of k (or v) [B, T, S, H, D]."""
        return self._half(k, self.P_inv)

    def output(self, o: torch.Tensor) -> torch.Tensor:
        """P on the geometric half of an attention output [B, T, S, H, D]."""
        return self._half(o, self.P)
