"""Temporal flicker of rendered frames: the depth-and-camera-warped frame difference (DESIGN §5).

For each pair (t, t+1), every pixel p of frame t with valid depth is carried into
frame t+1 through the scene and sampled there::

    X_t   = d_t(p) · K_t⁻¹ [u, v, 1]ᵀ               pixel centres at (col + 0.5, row + 0.5)
    X_t+1 = w2c_t+1 · c2w_t · X_t                   OpenCV cameras, c2w [T, 4, 4], K [T, 3, 3] px
    p'    = K_t+1 X_t+1 / z_t+1                      bilinear sample of frame t+1 (and its depth) at p'
    err_t = mean over valid p of |frame_t(p) − frame_t+1(p')|   (8-bit levels, all 3 channels)

A pixel is valid when its depth is > 0 and finite, ``z_t+1 > 0``, p' lies inside
frame t+1 with its four bilinear taps (centres in [0.5, W − 0.5] × [0.5, H − 0.5]),
it is not occluded in t+1 (``z_t+1 ≤ (1 + occlusion_rtol) · d_t+1(p')``: a point
behind the surface frame t+1 shows is hidden there), and, when alphas are given,
both ``alpha_t(p)`` and ``alpha_t+1(p')`` are ≥ ``min_alpha``. A scene-consistent
render leaves only resampling and view-dependent colour in the error; frame-to-frame
flicker (per-frame noise, exposure or hallucination changes) adds to it. The
refiner does not move geometry, so refined frames are measured with the rendered
depth: :func:`flicker_before_after`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Flicker", "FlickerError", "flicker_before_after", "warped_frame_error"]

# A pixel warped exactly onto an edge centre (e.g. a pure 2-px shift) lands there up to
# float64 round-off; this slack keeps it (its weight on grid_sample's zero padding is ~1e-6).
_EDGE_TOL_PX = 1e-6


class FlickerError(ValueError):
    """Frames, depths, alphas or cameras whose shapes or dtypes do not fit together; the message quotes them."""


@dataclass(frozen=True)
class Flicker:
    """Warped frame error of a clip.

    Attributes:
        pairs: (P,) the t of each measured pair (t, t+1): 0, every, 2·every, …
        per_pair: (P,) mean abs error of each pair in 8-bit levels; NaN where no pixel is valid.
        valid_fraction: (P,) share of frame t's pixels that were compared.
        mean: error over all valid pixels of all pairs (pixel-weighted), 8-bit levels; NaN if none.
    """

    pairs: np.ndarray
    per_pair: np.ndarray
    valid_fraction: np.ndarray
    mean: float


def _check(frames: np.ndarray, depth: np.ndarray, c2w: np.ndarray, K: np.ndarray, alpha: np.ndarray | None) -> None:
    """Raise :class:`FlickerError` quoting the shapes unless they describe one clip of T ≥ 2 frames."""
    T = frames.shape[0] if frames.ndim == 4 else -1
    ok = (
        frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3 and T >= 2
        and depth.shape == frames.shape[:3] and c2w.shape == (T, 4, 4) and K.shape == (T, 3, 3)
        and (alpha is None or alpha.shape == frames.shape[:3])
    )  # fmt: skip
    if not ok:
        raise FlickerError(
            f"flicker: need frames uint8 [T≥2, H, W, 3], depth/alpha [T, H, W], c2w [T, 4, 4], K [T, 3, 3]; got "
            f"frames {frames.dtype} {frames.shape}, depth {depth.shape}, c2w {c2w.shape}, K {K.shape}, "
            f"alpha {None if alpha is None else alpha.shape}"
        )


def _arrays(depth: np.ndarray, c2w: np.ndarray, K: np.ndarray, alpha: np.ndarray | None) -> tuple:
    """The geometry inputs as numpy arrays (alpha stays ``None`` when absent)."""
    return np.asarray(depth), np.asarray(c2w), np.asarray(K), None if alpha is None else np.asarray(alpha)


def _warped_errors(
    clips: list[np.ndarray],
    depth: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    alpha: np.ndarray | None,
    min_alpha: float,
    occlusion_rtol: float,
    every: int,
    device: torch.device | str,
) -> list[Flicker]:
    """:class:`Flicker` of each clip in ``clips`` (same T, H, W), all warped through one geometry pass."""
    for frames in clips:
        _check(frames, depth, c2w, K, alpha)
    if every < 1:
        raise FlickerError(f"flicker: every must be ≥ 1, got {every}")
    T, H, W, _ = clips[0].shape
    dev = torch.device(device)
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=dev) + 0.5,
                                torch.arange(W, dtype=torch.float64, device=dev) + 0.5, indexing="ij")  # fmt: skip
    pix = torch.stack([cols, rows, torch.ones_like(rows)], -1)  # [H, W, 3] pixel centres, homogeneous
    c2w_t = torch.as_tensor(c2w, dtype=torch.float64, device=dev)
    K_t = torch.as_tensor(K, dtype=torch.float64, device=dev)
    lo, hi_u, hi_v = 0.5 - _EDGE_TOL_PX, W - 0.5 + _EDGE_TOL_PX, H - 0.5 + _EDGE_TOL_PX
    pairs = np.arange(0, T - 1, every)
    per_pair, valid_fraction = np.full((len(clips), len(pairs)), np.nan), np.zeros(len(pairs))
    err_sum, n_sum = np.zeros(len(clips)), 0
    for i, t in enumerate(pairs):
        d = torch.as_tensor(depth[t], dtype=torch.float64, device=dev)
        rays = pix @ torch.linalg.inv(K_t[t]).T  # [H, W, 3], z = 1
        world = (rays * d[..., None]) @ c2w_t[t, :3, :3].T + c2w_t[t, :3, 3]
        w2c = torch.linalg.inv(c2w_t[t + 1])
        cam = world @ w2c[:3, :3].T + w2c[:3, 3]
        z = cam[..., 2]
        uv = (cam @ K_t[t + 1].T)[..., :2] / z.clamp_min(1e-9)[..., None]
        grid = torch.stack([2 * uv[..., 0] / W - 1, 2 * uv[..., 1] / H - 1], -1)[None].float()  # align_corners=False
        # Planes sampled from frame t+1 in one grid_sample: each clip's RGB, then depth, then alpha if given.
        planes = [c[t + 1].astype(np.float32) for c in clips] + [depth[t + 1].astype(np.float32)[..., None]]
        if alpha is not None:
            planes.append(alpha[t + 1].astype(np.float32)[..., None])
        nxt = torch.as_tensor(np.concatenate(planes, axis=-1), device=dev).permute(2, 0, 1)[None]
        warped = F.grid_sample(nxt, grid, mode="bilinear", align_corners=False)[0].permute(1, 2, 0)  # [H, W, C]
        k = 3 * len(clips)
        valid = (
            torch.isfinite(d) & (d > 0) & (z > 0)
            & (uv[..., 0] >= lo) & (uv[..., 0] <= hi_u) & (uv[..., 1] >= lo) & (uv[..., 1] <= hi_v)
            & (z <= (1 + occlusion_rtol) * warped[..., k].double())
        )  # fmt: skip
        if alpha is not None:
            valid &= (torch.as_tensor(alpha[t], device=dev) >= min_alpha) & (warped[..., k + 1] >= min_alpha)
        n = int(valid.sum())
        valid_fraction[i] = n / (H * W)
        n_sum += n
        for j, frames in enumerate(clips):
            cur = torch.as_tensor(frames[t], dtype=torch.float32, device=dev)
            err = float((warped[..., 3 * j : 3 * j + 3] - cur).abs()[valid].sum())  # over pixels and RGB
            err_sum[j] += err
            if n:
                per_pair[j, i] = err / (3 * n)
    return [
        Flicker(pairs=pairs, per_pair=per_pair[j], valid_fraction=valid_fraction,
                mean=float(err_sum[j] / (3 * n_sum)) if n_sum else float("nan"))  # fmt: skip
        for j in range(len(clips))
    ]


def warped_frame_error(
    frames: np.ndarray,
    depth: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    min_alpha: float = 0.5,
    occlusion_rtol: float = 0.05,
    every: int = 1,
    device: torch.device | str = "cpu",
) -> Flicker:
    """Flicker of ``frames``: frame t+1 warped into frame t through depth and cameras (module docstring).

    Args:
        frames: uint8 [T, H, W, 3].
        depth: [T, H, W] camera z-depth of each frame (rendered expected depth); ≤ 0 or non-finite = none.
        c2w: [T, 4, 4] camera-to-world, OpenCV axes.
        K: [T, 3, 3] intrinsics in pixels of the W × H frames.
        alpha: optional [T, H, W] rendered opacity; pixels below ``min_alpha`` are not compared.
        min_alpha: opacity a compared pixel needs in both frames.
        occlusion_rtol: relative depth margin before a warped point counts as hidden in frame t+1.
        every: measure the pairs (t, t+1) for t = 0, every, 2·every, … (a cheaper estimate on long clips).
        device: torch device for the warps (one pair at a time, float32 pixels, float64 cameras).
    """
    return _warped_errors([np.asarray(frames)], *_arrays(depth, c2w, K, alpha), min_alpha, occlusion_rtol, every, device)[0]


def flicker_before_after(
    before: np.ndarray,
    after: np.ndarray,
    depth: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    min_alpha: float = 0.5,
    occlusion_rtol: float = 0.05,
    every: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Flicker of rendered frames and of their refined version, through the same rendered geometry.

    Args:
        before: uint8 [T, H, W, 3] rendered frames.
        after: uint8 [T, H, W, 3] the same frames after the refiner.
        depth, c2w, K, alpha, min_alpha, occlusion_rtol, every, device: as :func:`warped_frame_error`.

    Returns ``{"flicker_before", "flicker_after", "valid_fraction"}``, errors in 8-bit levels;
    both are averaged over the same pixels (validity depends on geometry only).
    """
    first, second = _warped_errors(
        [np.asarray(before), np.asarray(after)], *_arrays(depth, c2w, K, alpha), min_alpha, occlusion_rtol, every, device
    )
    return {
        "flicker_before": first.mean,
        "flicker_after": second.mean,
        "valid_fraction": float(first.valid_fraction.mean()),
    }

