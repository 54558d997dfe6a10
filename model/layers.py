"""DiT parts around the attention: timestep and text embedding, adaLN modulation, the
GLU-MBConv feed-forward with its temporal conv, and cross-attention to the caption.

Shapes: B batch, T latent frames, S = H'·W' tokens per frame, C hidden, L text tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .context_parallel import CPContext
from .ffn_chunks import glu_spatial, glu_spatial_chunked
from .frame_shift import new_history, shift_frames


def timestep_features(t: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Sinusoidal features [..., dim] (cos, sin) of t·scale for t [...] in [0, 1] (fp32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * scale)[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], -1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift with x [B, T, S, C] and per-frame shift, scale [B, T, C]."""
    return x * (1 + scale[:, :, None]) + shift[:, :, None]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x·rsqrt(mean(x²) + eps)·w in fp32 (fp64 for fp64 x), returned in x's dtype, and the rsqrt."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * rstd * weight.to(acc)).to(x.dtype), rstd


class _RMSNormFn(torch.autograd.Function):
    """F.rms_norm's fp32 math (x·rsqrt(mean(x²) + eps)·w) that saves x in its own dtype and
    the fp32 rsqrt, and recomputes the normalised x in the backward; autograd through
    F.rms_norm keeps an fp32 copy of x and of the normalised x (18 KB a token at width 2240)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # noqa: ANN001
        out, rstd = rms_norm(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # noqa: ANN001
        x, weight, rstd = ctx.saved_tensors
        d_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        acc = rstd.dtype
        d_weight, w = torch.zeros_like(weight, dtype=acc), weight.to(acc)
        for rows in row_chunks(d_x, x, rstd, grad):  # fp32 temporaries for a few thousand tokens at a time
            dx, xr, r, g = rows
            x_hat, g = xr.to(acc) * r, g.to(acc)
            d_weight += (g * x_hat).sum(0)
            d_hat = g * w
            dx.copy_(r * (d_hat - x_hat * (d_hat * x_hat).mean(-1, keepdim=True)))
        return d_x, d_weight.to(weight.dtype), None


def row_chunks(*tensors: torch.Tensor, rows: int = 4096) -> list[tuple[torch.Tensor, ...]]:
    """Tensors [..., C] of one leading shape, `rows` flattened leading rows at a time [rows, C];
    the chunks of contiguous tensors are views (so a backward can write its outputs there)."""
    flat = [t.reshape(-1, t.shape[-1]) for t in tensors]
    return list(zip(*(t.split(rows) for t in flat)))


class RMSNorm(nn.Module):
    """nn.RMSNorm over the last dimension with a learnable weight (same parameter name), computed
    in fp32 and returned in x's dtype like F.rms_norm, keeping only x and one fp32 number per
    token for the backward (`_RMSNormFn`)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., dim] → the normalised x [..., dim]. Under torch.compile the plain math:
        inductor fuses it and its partitioner picks what to save."""
        if torch.compiler.is_compiling():
            return rms_norm(x, self.weight, self.eps)[0]
        return _RMSNormFn.apply(x, self.weight, self.eps)


class TimestepEmbedder(nn.Module):
    """Per-frame timestep t [B, T] in [0, 1] → embedding [B, T, C] (sinusoid, then MLP)."""

    def __init__(self, hidden: int, freq_dim: int, scale: float) -> None:
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim, self.scale).to(self.mlp[0].weight.dtype))


class CaptionEmbedder(nn.Module):
    """Text-encoder embeddings [B, L, C_text] → [B, L, C]: RMSNorm (small initial weight,
    as the release's y_norm) then a GELU MLP."""

    def __init__(self, text_dim: int, hidden: int, norm_init: float) -> None:
        super().__init__()
        self.norm = RMSNorm(text_dim, eps=1e-5)
        nn.init.constant_(self.norm.weight, norm_init)
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(text))


class CrossAttention(nn.Module):
    """Tokens attend to the caption: q from x, k and v from text, RMSNorm on q and k."""

    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.q_norm, self.k_norm = RMSNorm(hidden, eps=eps), RMSNorm(hidden, eps=eps)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, S, C]; text: [B, L, C]; text_mask: [B, L] bool, True on real tokens."""
        B, T, S, C = x.shape
        q = self.q_norm(self.q(x.reshape(B, T * S, C))).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        k, v = self.kv(text).chunk(2, -1)
        k = self.k_norm(k).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        v = v.unflatten(-1, (self.heads, -1)).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=text_mask[:, None, None, :])
        return self.proj(o.transpose(1, 2).reshape(B, T, S, C))


class GLUMBConvTemporal(nn.Module):
    """Feed-forward of SANA-Video/WM: 1×1 expand + SiLU, 3×3 depthwise conv per frame,
    GLU (SiLU gate), 1×1 project, then a residual temporal conv over `time_kernel` frames
    (full C×C per tap, zero-initialised so it starts as the spatial FFN).

    The temporal conv follows the attention mode: its future taps stop at the chunk end
    (`frame_shift`), its past taps read the carried history.

    `frame_chunk` (set by the trainer, `wmkit.train.parallel`): with gradients on, the spatial
    part runs `frame_chunk` frames at a time and its backward recomputes one chunk at a time, so
    its 6×-wide intermediates exist for one chunk only (`model/ffn_chunks.py`). Exact: the 3×3
    conv never crosses frames."""

    def __init__(self, hidden: int, inner: int, time_kernel: int) -> None:
        super().__init__()
        self.frame_chunk: int | None = None
        self.expand = nn.Linear(hidden, 2 * inner)
        self.depthwise = nn.Conv2d(2 * inner, 2 * inner, 3, padding=1, groups=2 * inner)
        self.project = nn.Linear(inner, hidden, bias=False)
        self.reach = time_kernel // 2
        self.time_taps = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(time_kernel))
        for tap in self.time_taps:
            nn.init.zeros_(tap.weight)

    def spatial(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """The per-frame part: x [B, T, S, C] → expand, 3×3 depthwise, GLU, project [B, T, S, C];
        with `frame_chunk` and gradients on, `frame_chunk` frames at a time (`glu_spatial_chunked`)."""
        weights = (self.expand.weight, self.expand.bias, self.depthwise.weight, self.depthwise.bias,
                   self.project.weight)
        if self.frame_chunk is None or not torch.is_grad_enabled():
            return glu_spatial(x, *weights, grid_hw)
        return glu_spatial_chunked(x, *weights, grid_hw, self.frame_chunk)

    def forward(
        self, x: torch.Tensor, grid_hw: tuple[int, int], chunks: torch.Tensor, history: torch.Tensor,
        cp: CPContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, S, C]; chunks: [T] chunk index; history: [B, reach, S, C] spatial-FFN
        outputs of the frames before x. Returns (y [B, T, S, C], next history).

        With `cp`, x is this rank's frame slice and chunks covers it and the frames after
        it: the taps read `reach` halo frames each side, and the history is returned as given."""
        y = self.spatial(x, grid_hw)
        past, future = (history, None) if cp is None else cp.exchange.halo(y, self.reach, self.reach)
        out = y
        for i, tap in enumerate(self.time_taps):
            out = out + tap(shift_frames(y, i - self.reach, past, chunks, future))
        return out, (new_history(y, history) if cp is None else history)
