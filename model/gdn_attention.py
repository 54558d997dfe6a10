"""Frame-wise Gated DeltaNet attention layer with a UCPE camera branch (DESIGN §3 steps 1–6).

Main branch (NVlabs/Sana `sana_gdn_blocks.py` semantics):
  1. q, k, v = W x; a depthwise conv over frames (kernel 4, no bias) on k only —
     causal taps over the past (global, history carried) plus the flipped taps over the
     future confined to the frame's chunk, centre tap once (`frame_shift`);
  2. RMSNorm on q and k over all heads (eps 1e-5); ReLU; k scaled by 1/sqrt(D·S);
     3D RoPE gives q̃, k̃;
  3. β = sigmoid(W_β x) per token; γ = exp(−exp(A_log)·softplus(W_γ mean_S(x) + dt_bias))
     per frame and head;
  4–6. `frame_gdn` (Triton on CUDA, the torch reference elsewhere: `gdn_op`).
Camera branch (SANA-WM's coarse camera branch, NVlabs/Sana `sana_gdn_camctrl_blocks.py`):
  its own q, k, v projections, frame conv and q/k norms, β and γ shared with the main
  branch; UCPE on the first half of each head's channels (Pᵀ on q̃, P⁻¹ on k̃ and v,
  P on the output) and RoPE on the other half. The unrotated q, k (after ReLU) keep the
  denominator positive, exactly as RoPE does in the main branch. Its output passes a
  zero-initialised projection and is added to the main output before the shared output
  gate silu(W_g x + b) (fp32) and the output projection, so at init the layer is the
  plain GDN layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from wmkit.kernels import frame_gdn, frame_gdn_ref

from .config import DiTConfig
from .context_parallel import CPContext
from .frame_shift import empty_history, new_history, shift_frames
from .layers import RMSNorm, row_chunks
from .positional import UCPE, apply_rope

GDNBackend = Literal["auto", "triton", "reference"]
AttentionMode = Literal["bidirectional", "chunk_causal"]


def _checked_eagerly(op: Callable[..., object]) -> Callable[..., object]:
    """`op` with its value checks (gamma range, NaN in the inputs) in eager mode only: under
    torch.compile their host syncs would break the reference's graph and, in the Triton custom
    op, drain the GPU's queue twice a call; there the trainer's non-finite gradient-norm check
    stops a diverged step instead."""
    def call(*args: torch.Tensor, **kwargs: object) -> object:
        return op(*args, check_values=not torch.compiler.is_compiling(), **kwargs)
    return call


_TRITON_OP, _REFERENCE_OP = _checked_eagerly(frame_gdn), _checked_eagerly(frame_gdn_ref)


def gdn_op(backend: GDNBackend, device: torch.device) -> Callable[..., object]:
    """The frame-wise GDN function to call: "auto" takes the Triton op on CUDA and the
    torch reference elsewhere (the interpreter is far too slow for model shapes)."""
    if backend == "triton" or (backend == "auto" and device.type == "cuda"):
        return _TRITON_OP
    if backend in ("auto", "reference"):
        return _REFERENCE_OP
    raise ValueError(f"unknown GDN backend {backend!r}; choose 'auto', 'triton' or 'reference'")


@dataclass(frozen=True)
class Positions:
    """Position encodings of one call: RoPE tables for full and half heads, UCPE transforms."""

    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [T, S, D/2]
    rope_half: tuple[torch.Tensor, torch.Tensor]  # cos, sin [T, S, D/4] for the camera branch
    ucpe: UCPE


@dataclass(frozen=True)
class GDNState:
    """What a chunk-causal rollout carries across chunks for one GDN layer.

    states: forward-scan (S [B, H, D, D], z [B, H, D]) fp32 of the main and camera branch;
    k_history: the last conv_kernel − 1 frames of pre-conv k [B, K−1, S, C] per branch."""

    main: tuple[torch.Tensor, torch.Tensor] | None
    cam: tuple[torch.Tensor, torch.Tensor] | None
    k_history: torch.Tensor
    k_history_cam: torch.Tensor


class FrameConv(nn.Module):
    """Depthwise conv over frames on [B, T, S, C] with `taps` taps and no bias (DESIGN §3.1)."""

    def __init__(self, channels: int, taps: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, taps))
        nn.init.uniform_(self.weight, -1 / math.sqrt(taps), 1 / math.sqrt(taps))  # nn.Conv1d's default bound

    def forward(
        self, x: torch.Tensor, chunks: torch.Tensor, history: torch.Tensor, future: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Causal taps over x and its history plus flipped taps inside each chunk, centre once;
        `future`: the frames after x (context parallelism, `shift_frames`).

        weight[:, -1] is the centre tap, weight[:, -1 − s] reaches s frames away."""
        taps = self.weight.shape[1]
        w = self.weight.to(x.dtype)
        out = w[:, -1] * x
        for s in range(1, taps):
            ahead = shift_frames(x, s, history, chunks, future)
            out = out + w[:, -1 - s] * (shift_frames(x, -s, history, chunks) + ahead)
        return out


def _gdn_inputs(q: torch.Tensor, k: torch.Tensor, S: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU on q and k and the key scaling 1/sqrt(D·S) (keeps the delta update contractive)."""
    D = q.shape[-1]
    return F.relu(q), F.relu(k) / math.sqrt(D * S)


def _op_dtype(dtype: torch.dtype, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """The op takes q, k, v and the rotated copies in one dtype; under autocast the norms and
    UCPE return fp32 while the projections return bf16, so all follow the projection's."""
    return [t.to(dtype).contiguous() for t in tensors]


def _gated(raw: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (raw.float() * F.silu(gate.float())).to(dtype)


class _SiluGate(torch.autograd.Function):
    """raw · silu(gate) computed in fp32, returned in `dtype`. Saves the two inputs in their
    own (bf16) dtype and recomputes silu in the backward, where autograd would keep three
    fp32 copies (~27 KB a token at width 2240); the same values and gradients."""

    @staticmethod
    def forward(ctx, raw: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(raw, gate)
        return _gated(raw, gate, dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:  # noqa: ANN001
        raw, gate = ctx.saved_tensors
        d_raw, d_gate = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (raw, gate))
        for dr, dg, r, g, gr in row_chunks(d_raw, d_gate, raw, gate, grad):  # fp32 a few rows at a time
            g, gr = g.float(), gr.float()
            dr.copy_(gr * F.silu(g))
            dg.copy_(torch.ops.aten.silu_backward(gr * r.float(), g))
        return d_raw, d_gate, None


def silu_gate(raw: torch.Tensor, gate: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The GDN output gate raw · silu(gate) in fp32 (DESIGN §3.5), cast to `dtype`; raw, gate [..., C].
    Under torch.compile the plain math (inductor fuses it and picks what to save)."""
    if torch.compiler.is_compiling():
        return _gated(raw, gate, dtype)
    return _SiluGate.apply(raw, gate, dtype)


class GDNAttention(nn.Module):
    """Frame-wise GDN self-attention with the UCPE camera branch on [B, T, S, C] tokens."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        C, self.heads, self.head_dim = cfg.hidden, cfg.heads, cfg.head_dim
        self.eps = cfg.gdn_eps
        self.conv_taps = cfg.conv_kernel
        self.backend: GDNBackend = "auto"
        self.qkv = nn.Linear(C, 3 * C)
        self.k_conv = FrameConv(C, cfg.conv_kernel)
        self.q_norm, self.k_norm = RMSNorm(C, eps=cfg.norm_eps), RMSNorm(C, eps=cfg.norm_eps)
        self.beta = nn.Linear(C, self.heads)
        self.gamma = nn.Linear(C, self.heads, bias=False)
        # Decay rates exp(A_log) in [1, 16] and time steps softplus(dt_bias) in [1e-3, 1e-1]:
        # the Mamba-2 / GDN initialisation, γ starting between ~0.2 and ~1.
        self.A_log = nn.Parameter(torch.empty(self.heads).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(self.heads).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.gate = nn.Linear(C, C)
        self.proj = nn.Linear(C, C)
        self.qkv_cam = nn.Linear(C, 3 * C)
        self.k_conv_cam = FrameConv(C, cfg.conv_kernel)
        self.q_norm_cam, self.k_norm_cam = RMSNorm(C, eps=cfg.norm_eps), RMSNorm(C, eps=cfg.norm_eps)
        self.out_cam = nn.Linear(C, C)
        nn.init.zeros_(self.out_cam.weight)
        nn.init.zeros_(self.out_cam.bias)

    def empty_state(self, x: torch.Tensor) -> GDNState:
        """The state at the start of a clip for tokens like x [B, T, S, C]."""
        hist = empty_history(x, self.conv_taps - 1)
        return GDNState(None, None, hist, hist)

    def _beta_gamma(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta = torch.sigmoid(self.beta(x).float())  # [B, T, S, H]
        rate = torch.exp(self.A_log.float()) * F.softplus(self.gamma(x.mean(2)).float() + self.dt_bias.float())
        # exp(−rate) underflows to 0 for rate > ~100; the op needs γ in (0, 1].
        gamma = torch.exp(-rate).clamp_min(torch.finfo(torch.float32).tiny)  # [B, T, H]
        return beta.contiguous(), gamma.contiguous()

    def forward(
        self,
        x: torch.Tensor,
        pos: Positions,
        mode: AttentionMode,
        chunk_sizes: list[int],
        chunks: torch.Tensor,
        state: GDNState,
        cp: CPContext | None = None,
    ) -> tuple[torch.Tensor, GDNState]:
        """x: [B, T, S, C] (normalised, modulated); chunk_sizes: frames per chunk of this
        call (chunk_causal); chunks: [T] chunk index per frame; state: carried from the
        previous chunk (or `empty_state`). Returns (out [B, T, S, C], next state).

        With `cp`, x is this rank's frame slice, chunk_sizes the clip's layout and chunks
        covers the slice and the frames of the k-conv halo after it; the frame conv reads
        halos, the op exchanges scan composites, and the state is returned as given."""
        B, T, S, C = x.shape
        H, D = self.heads, self.head_dim
        op = gdn_op(self.backend, x.device)
        kw = {"mode": mode, "chunk_sizes": list(chunk_sizes) if mode == "chunk_causal" else None, "eps": self.eps}
        beta, gamma = self._beta_gamma(x)
        heads = lambda t: t.unflatten(-1, (H, D)).contiguous()  # noqa: E731

        q, k, v = self.qkv(x).chunk(3, -1)
        k_conv = self._frame_conv(self.k_conv, k, chunks, state.k_history, cp)
        q, k_conv = _gdn_inputs(self.q_norm(q), self.k_norm(k_conv), S)
        q, k_conv, v = heads(q), heads(k_conv), heads(v)
        q_rot, k_rot = apply_rope(q, *pos.rope).contiguous(), apply_rope(k_conv, *pos.rope).contiguous()
        q, k_conv, v, q_rot, k_rot = _op_dtype(v.dtype, q, k_conv, v, q_rot, k_rot)
        o, main = self._scan(op, (q, k_conv, v, beta, gamma, q_rot, k_rot), state.main, kw, cp)

        qc, kc, vc = self.qkv_cam(x).chunk(3, -1)
        kc_conv = self._frame_conv(self.k_conv_cam, kc, chunks, state.k_history_cam, cp)
        qc, kc_conv = _gdn_inputs(self.q_norm_cam(qc), self.k_norm_cam(kc_conv), S)
        qc, kc_conv, vc = heads(qc), heads(kc_conv), heads(vc)
        half = D // 2
        qc_rot = torch.cat([pos.ucpe.query(qc)[..., :half], apply_rope(qc[..., half:], *pos.rope_half)], -1).contiguous()
        kc_rot = torch.cat([pos.ucpe.key(kc_conv)[..., :half], apply_rope(kc_conv[..., half:], *pos.rope_half)], -1).contiguous()
        qc, kc_conv, vc_local, qc_rot, kc_rot = _op_dtype(vc.dtype, qc, kc_conv, pos.ucpe.key(vc), qc_rot, kc_rot)
        oc, cam = self._scan(op, (qc, kc_conv, vc_local, beta, gamma, qc_rot, kc_rot), state.cam, kw, cp)
        oc = pos.ucpe.output(oc)

        raw = o.flatten(-2) + self.out_cam(oc.flatten(-2))
        gated = silu_gate(raw, self.gate(x), x.dtype)
        if cp is not None:
            return self.proj(gated), state
        next_state = GDNState(main, cam, new_history(k, state.k_history), new_history(kc, state.k_history_cam))
        return self.proj(gated), next_state

    def _frame_conv(
        self, conv: FrameConv, k: torch.Tensor, chunks: torch.Tensor, history: torch.Tensor, cp: CPContext | None
    ) -> torch.Tensor:
        """The k frame conv; under context parallelism its past and future taps read halos."""
        if cp is None:
            return conv(k, chunks, history)
        past, future = cp.exchange.halo(k, self.conv_taps - 1, self.conv_taps - 1)
        return conv(k, chunks, past, future)

    def _scan(
        self,
        op: Callable[..., object],
        tensors: tuple[torch.Tensor, ...],
        initial: tuple[torch.Tensor, torch.Tensor] | None,
        kw: dict,
        cp: CPContext | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The GDN op from the carried state, or split over the ranks of `cp` (no final state)."""
        if cp is None:
            return op(*tensors, initial_state=initial, return_final_state=True, **kw)
        return cp.gdn(op, *tensors, mode=kw["mode"], chunk_sizes=kw["chunk_sizes"], eps=self.eps), None
