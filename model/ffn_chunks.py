"""The feed-forward's per-frame part (GLU-MBConv: expand + SiLU, 3×3 depthwise conv, GLU,
project) run over frame chunks as one opaque op whose backward recomputes one chunk at a time.

Why an op: the per-frame part's 6×-wide intermediates (2·inner channels a token) are the largest
transient of a block's backward. Recomputed a few frames at a time they exist for one chunk only
(exact: the 3×3 conv never crosses frames). Nested activation checkpoints did that in eager mode,
but inside a torch.compile'd block inductor recomputes every chunk before their backward, which
measured like no chunking at all (`bench/compiled_memory.py`). As the custom op
`wmkit::glu_spatial_chunked` with its own backward, the chunk order holds in both modes.

Backward of one chunk, with u = x·Weᵀ + be, h = silu(u), c = dwconv(h) + bd, (a, g) = c,
m = a·silu(g), out = m·Wpᵀ::

    dm = dout·Wp,  dWp += doutᵀm
    da = dm·silu(g),  dg = silu'(g)·dm·a
    dh, dWd, dbd = conv backward of (da, dg)
    du = silu'(u)·dh,  dx = du·We,  dWe += duᵀx,  dbe += Σ du
Weight gradients accumulate in fp32 (fp64 for fp64 weights) over the chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gate_inputs(x: torch.Tensor, expand_w: torch.Tensor, expand_b: torch.Tensor, dw_w: torch.Tensor,
                 dw_b: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """x [B, T, S, C] → (u [N, 2I] the expand output, h [B·T, 2I, H', W'] the conv input, and the
    GLU halves a, g [N, I]) over its N = B·T·S tokens: what the backward recomputes."""
    B, T, S, C = x.shape
    u = F.linear(x.reshape(-1, C), expand_w, expand_b)
    h = F.silu(u).reshape(B * T, *grid_hw, -1).permute(0, 3, 1, 2)
    c = F.conv2d(h, dw_w, dw_b, padding=1, groups=h.shape[1]).permute(0, 2, 3, 1).reshape(B * T * S, -1)
    a, g = c.chunk(2, -1)
    return u, h, a, g


def glu_spatial(x: torch.Tensor, expand_w: torch.Tensor, expand_b: torch.Tensor, dw_w: torch.Tensor,
                dw_b: torch.Tensor, project_w: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """x [B, T, S, C] → expand + SiLU, 3×3 depthwise conv per frame, GLU, project [B, T, S, C_out]."""
    _, _, a, g = _gate_inputs(x, expand_w, expand_b, dw_w, dw_b, grid_hw)
    return F.linear(a * F.silu(g), project_w).reshape(*x.shape[:-1], -1)


@torch.library.custom_op("wmkit::glu_spatial_chunked", mutates_args=())
def _forward_op(x: torch.Tensor, expand_w: torch.Tensor, expand_b: torch.Tensor, dw_w: torch.Tensor,
                dw_b: torch.Tensor, project_w: torch.Tensor, grid_h: int, grid_w: int, frames: int) -> torch.Tensor:
    parts = [glu_spatial(p, expand_w, expand_b, dw_w, dw_b, project_w, (grid_h, grid_w)) for p in x.split(frames, 1)]
    return torch.cat(parts, 1)


@_forward_op.register_fake
def _(x, expand_w, expand_b, dw_w, dw_b, project_w, grid_h, grid_w, frames):  # noqa: ANN001, ANN202
    return x.new_empty(*x.shape[:-1], project_w.shape[0])


@torch.library.custom_op("wmkit::glu_spatial_chunked_backward", mutates_args=())
def _backward_op(grad: torch.Tensor, x: torch.Tensor, expand_w: torch.Tensor, expand_b: torch.Tensor,
                 dw_w: torch.Tensor, dw_b: torch.Tensor, project_w: torch.Tensor, grid_h: int, grid_w: int,
                 frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dx = torch.empty_like(x)
    weights = (expand_w, expand_b, dw_w, dw_b, project_w)
    acc = [torch.zeros_like(w, dtype=torch.promote_types(w.dtype, torch.float32)) for w in weights]
    for xc, gc, dxc in zip(x.split(frames, 1), grad.split(frames, 1), dx.split(frames, 1)):
        B, T, S, C = xc.shape
        u, h, a, g = _gate_inputs(xc, expand_w, expand_b, dw_w, dw_b, (grid_h, grid_w))
        m = a * F.silu(g)
        dout = gc.reshape(-1, gc.shape[-1])
        acc[4] += dout.t() @ m
        dm = dout @ project_w
        dc = torch.cat([dm * F.silu(g), torch.ops.aten.silu_backward(dm * a, g)], -1)
        dc = dc.reshape(B * T, grid_h, grid_w, -1).permute(0, 3, 1, 2)
        dh, d_dw, d_db = torch.ops.aten.convolution_backward(
            dc, h, dw_w, [dw_w.shape[0]], [1, 1], [1, 1], [1, 1], False, [0, 0], h.shape[1], [True, True, True])
        acc[2] += d_dw
        acc[3] += d_db
        du = torch.ops.aten.silu_backward(dh.permute(0, 2, 3, 1).reshape(B * T * S, -1), u)
        dxc.copy_((du @ expand_w).reshape(B, T, S, C))
        acc[0] += du.t() @ xc.reshape(-1, C)
        acc[1] += du.sum(0, dtype=acc[1].dtype)
    return (dx, *(a.to(w.dtype) for a, w in zip(acc, weights)))


@_backward_op.register_fake
def _(grad, x, expand_w, expand_b, dw_w, dw_b, project_w, grid_h, grid_w, frames):  # noqa: ANN001, ANN202
    return tuple(torch.empty_like(t) for t in (x, expand_w, expand_b, dw_w, dw_b, project_w))


def _setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
    *tensors, grid_h, grid_w, frames = inputs
    ctx.save_for_backward(*tensors)
    ctx.sizes = (grid_h, grid_w, frames)


def _backward(ctx, grad):  # noqa: ANN001, ANN202
    grads = torch.ops.wmkit.glu_spatial_chunked_backward(grad.contiguous(), *ctx.saved_tensors, *ctx.sizes)
    return (*grads, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def glu_spatial_chunked(x: torch.Tensor, expand_w: torch.Tensor, expand_b: torch.Tensor, dw_w: torch.Tensor,
                        dw_b: torch.Tensor, project_w: torch.Tensor, grid_hw: tuple[int, int],
                        frames: int) -> torch.Tensor:
    """`glu_spatial` `frames` latent frames at a time, saving only x and the weights for the
    backward (which recomputes each chunk). Under autocast everything is cast to its dtype first,
    as the linear layers would be."""
    tensors = [x, expand_w, expand_b, dw_w, dw_b, project_w]
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        tensors = [t.to(dtype) for t in tensors]
    return torch.ops.wmkit.glu_spatial_chunked(*(t.contiguous() for t in tensors), *grid_hw, frames)
