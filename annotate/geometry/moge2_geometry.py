"""From MoGe-2's affine point map to depth, intrinsics and camera-space points (microsoft/MoGe ``infer``).

MoGe predicts points ``(x, y, z)`` whose z is known only up to an additive
shift. With the optical centre at the image centre, a pinhole camera of focal
``f`` (in units of the half image diagonal, the unit of :func:`view_plane_uv`)
sees a point at view-plane position ``uv = f * xy / (z + shift)``. We find the
shift by least squares over a 64 x 64 nearest-neighbour subsample of the valid
pixels (for each shift the best focal is closed form), then::

    depth = z + shift                            (up to the metric scale)
    fx_px = f * sqrt(W^2 + H^2) / 2,  fy_px = fx_px,  cx = W / 2,  cy = H / 2
    points = depth * K^-1 [u_px + 0.5, v_px + 0.5, 1]   (projection forced exactly)

so square pixels are assumed, and the principal point is the image centre.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares

from wmkit.annotate.geometry.moge2_model import view_plane_uv

__all__ = ["recover_focal_shift", "intrinsics_px", "depth_to_points", "SOLVE_GRID"]

SOLVE_GRID = (64, 64)  # subsample for the shift/focal fit: enough pixels, solved in milliseconds per frame
_SHIFT_FTOL = 1e-3  # the upstream solver tolerance (relative change of the cost)


def _fit_one(uv: np.ndarray, xyz: np.ndarray) -> tuple[float, float]:
    """(focal, shift) minimising ||f * xy / (z + shift) - uv|| for (N, 2) uv and (N, 3) xyz."""
    xy, z = xyz[:, :2].astype(np.float64), xyz[:, 2].astype(np.float64)

    def best_focal(xy_proj: np.ndarray) -> float:
        return float((xy_proj * uv).sum() / np.square(xy_proj).sum())

    def residual(shift: np.ndarray) -> np.ndarray:
        xy_proj = xy / (z + shift[0])[:, None]
        return (best_focal(xy_proj) * xy_proj - uv).ravel()

    shift = float(least_squares(residual, x0=[0.0], ftol=_SHIFT_FTOL, method="lm").x[0])
    return best_focal(xy / (z + shift)[:, None]), shift


def recover_focal_shift(points: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal (B,) in half-diagonal units and z shift (B,) of affine point maps ``points`` (B, H, W, 3).

    ``mask`` (B, H, W) bool marks pixels to fit (all when None). A frame with
    fewer than 2 usable pixels gets focal 1 and shift 0 (a 90-degree diagonal
    field of view, the solver's neutral start) rather than an error, so one
    blank frame does not stop a video. The fit is not differentiable (points are detached).
    """
    B, H, W, _ = points.shape
    uv = view_plane_uv(W, H, W / H, dtype=torch.float32, device=points.device)
    nearest = lambda t: F.interpolate(t, SOLVE_GRID, mode="nearest")  # noqa: E731
    pts = nearest(points.detach().float().permute(0, 3, 1, 2)).permute(0, 2, 3, 1).cpu().numpy()
    uv_lr = nearest(uv.permute(2, 0, 1)[None]).permute(0, 2, 3, 1)[0].cpu().numpy()
    keep = (np.ones(pts.shape[:3], bool) if mask is None
            else nearest(mask.float()[:, None]).squeeze(1).cpu().numpy() > 0)
    focal, shift = np.ones(B), np.zeros(B)
    for i in range(B):
        if keep[i].sum() >= 2:
            focal[i], shift[i] = _fit_one(uv_lr[keep[i]], pts[i][keep[i]])
    as_tensor = lambda a: torch.as_tensor(a, dtype=points.dtype, device=points.device)  # noqa: E731
    return as_tensor(focal), as_tensor(shift)


def intrinsics_px(focal: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pinhole K (B, 3, 3) in pixels of a height x width image from focal (B,) in half-diagonal units."""
    f_px = focal * (0.5 * (height**2 + width**2) ** 0.5)
    K = torch.zeros(*focal.shape, 3, 3, dtype=focal.dtype, device=focal.device)
    K[..., 0, 0] = K[..., 1, 1] = f_px
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = width / 2, height / 2, 1.0
    return K


def depth_to_points(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-space points (B, H, W, 3), OpenCV axes, of z-depth (B, H, W) seen through K (B, 3, 3) in pixels."""
    B, H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=depth.dtype, device=depth.device) + 0.5,
                          torch.arange(W, dtype=depth.dtype, device=depth.device) + 0.5, indexing="ij")
    fx, fy, cx, cy = (K[:, i, j].to(depth.dtype)[:, None, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    return torch.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], dim=-1)
