"""Residuals and Jacobians of the bundle-adjustment problem (DESIGN §4).

Per observation n of point X_j in frame i (w2c rotation R_i, translation t_i,
intrinsics f_i = (fx, fy, cx, cy))::

    x = R_i X_j + t_i                         camera coordinates (OpenCV, z forward)
    r_px = (fx x/z + cx - u, fy y/z + cy - v)  reprojection, pixels (robustified by Cauchy)
    r_d  = w_n (z - D_n) / D_n                 depth prior, D_n = exp(a_i) d_n: relative to the fused
                                               metric depth d_n times the frame's depth scale exp(a_i)

The per-frame log depth scale ``a_i`` is there because the fused depth is
metric on average but not frame by frame: the geometry backend's scale drifts
along a clip and fusion's EMA keeps that drift (by design: it averages the
metric network's per-frame noise), so frame i's depth can be a few % off
while its neighbours' are not. Held to ``D = d`` exactly, BA moves each
camera along its axis to meet its frame's depth and bends the trajectory; with
``a_i`` free (and held near 0 and smooth in time by
:func:`depth_scale_prior_matrix`) the depth prior keeps the shape and the
mean scale of the scene and the tracks decide the rest. Callers pass ``D`` as
``depth``; ``dr_d/da_i = -w_n z / D_n = -(r_d + w_n)`` (:func:`depth_scale_jacobian`).

Poses are updated on the left, ``x' = Exp(dw) x + dt`` (dw axis-angle); the
Jacobians are taken by autograd (``torch.func.jacrev`` vmapped over
observations) at dw = dt = 0, where ``Exp(dw) x`` may be replaced by its first
order ``x + dw x x`` without changing the derivative. The intrinsics priors
(second difference along frames, pull to the backend's K) are linear in the
intrinsics and given as a matrix.
"""

from __future__ import annotations

import torch
from torch.func import jacrev, vmap

__all__ = [
    "skew",
    "so3_exp",
    "observation_residual",
    "observation_residuals",
    "observation_jacobians",
    "huber_weights",
    "huber_cost",
    "cauchy_weights",
    "cauchy_cost",
    "intrinsics_prior_matrix",
    "depth_scale_jacobian",
    "depth_scale_prior_matrix",
]


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices of ``v`` (..., 3) -> (..., 3, 3)."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors ``omega`` (..., 3) in radians."""
    return torch.linalg.matrix_exp(skew(omega))


def observation_residual(
    pose_delta: torch.Tensor,
    intrinsics: torch.Tensor,
    point: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    uv: torch.Tensor,
    depth: torch.Tensor,
    depth_weight: torch.Tensor,
) -> torch.Tensor:
    """Residual (3,) ``[r_u, r_v, r_d]`` of one observation (see the module docstring).

    Args:
        pose_delta: (6,) left pose increment (dw, dt), evaluated at 0 for Jacobians.
        intrinsics: (4,) fx, fy, cx, cy in pixels.
        point: (3,) world point; R: (3, 3), t: (3,) world-to-camera.
        uv: (2,) observed pixel; depth: () fused depth at it (> 0 where weighted); depth_weight: ().
    """
    x = R @ point + t
    x = x + torch.linalg.cross(pose_delta[:3], x) + pose_delta[3:]
    z = x[2]
    u = intrinsics[0] * x[0] / z + intrinsics[2]
    v = intrinsics[1] * x[1] / z + intrinsics[3]
    r_d = depth_weight * (z - depth) / torch.where(depth > 0, depth, torch.ones_like(depth))
    return torch.stack([u - uv[0], v - uv[1], r_d])


def _residual_with_aux(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = observation_residual(*args)
    return r, r


_batched_residual = vmap(observation_residual, in_dims=(None, 0, 0, 0, 0, 0, 0, 0))
_batched_jacobian = vmap(jacrev(_residual_with_aux, argnums=(0, 1, 2), has_aux=True), in_dims=(None, 0, 0, 0, 0, 0, 0, 0))


def observation_residuals(
    intrinsics: torch.Tensor,
    points: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    uv: torch.Tensor,
    depth: torch.Tensor,
    depth_weight: torch.Tensor,
) -> torch.Tensor:
    """Residuals (N, 3) of N observations; every argument is gathered per observation ((N, ...) shapes)."""
    zero = torch.zeros(6, dtype=points.dtype, device=points.device)
    return _batched_residual(zero, intrinsics, points, R, t, uv, depth, depth_weight)


def observation_jacobians(
    intrinsics: torch.Tensor,
    points: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    uv: torch.Tensor,
    depth: torch.Tensor,
    depth_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residuals and Jacobians of N observations (arguments as :func:`observation_residuals`).

    Returns:
        ``(r, J_pose, J_intrinsics, J_point)`` with shapes (N, 3), (N, 3, 6), (N, 3, 4), (N, 3, 3).
    """
    zero = torch.zeros(6, dtype=points.dtype, device=points.device)
    (j_pose, j_intr, j_point), r = _batched_jacobian(zero, intrinsics, points, R, t, uv, depth, depth_weight)
    return r, j_pose, j_intr, j_point


def huber_weights(norm: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """IRLS weights of the Huber loss for residual norms ``norm`` (N,): 1 up to ``delta``, ``delta / norm`` beyond."""
    return torch.where(norm <= delta, torch.ones_like(norm), delta / norm.clamp_min(1e-12))


def huber_cost(norm: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """Huber cost of residual norms ``norm`` (N,): ``s^2`` up to ``delta``, ``2 delta s - delta^2`` beyond."""
    return torch.where(norm <= delta, norm**2, 2 * delta * norm - delta**2)


def cauchy_weights(norm: torch.Tensor, scale: float) -> torch.Tensor:
    """IRLS weights ``1 / (1 + (s / scale)^2)`` of the Cauchy loss for residual norms ``norm`` (N,).

    Unlike Huber's, they fall to 0 for large residuals: a mismatched track 20 px off pulls
    1/100 as hard as an inlier instead of 1/10, which with per-frame intrinsics free was
    enough for a few percent of mismatches to bend focal length and trajectory.
    """
    return 1.0 / (1.0 + (norm / scale) ** 2)


def cauchy_cost(norm: torch.Tensor, scale: float) -> torch.Tensor:
    """Cauchy cost ``scale^2 log(1 + (s / scale)^2)`` of residual norms ``norm`` (N,); ``s^2`` near 0."""
    return scale**2 * torch.log1p((norm / scale) ** 2)


def intrinsics_prior_matrix(
    num_frames: int,
    smooth_weight: float,
    focal_weight: float,
    principal_point_weight: float,
    profile_weight: float,
    focal_ref: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear maps ``(A, B)`` with ``r = A f - B f_prior`` the prior residuals of per-frame intrinsics.

    ``f`` and ``f_prior`` are (F, 4) flattened row-major. Rows: ``smooth_weight * (f_{i-1} - 2 f_i +
    f_{i+1}) / focal_ref`` for every inner frame and component (a zoom is smooth in time, so its
    second difference is small, while the backend's per-frame K jitters); then ``w_c * (f_i -
    prior_i) / focal_ref`` with ``w_c = focal_weight`` for fx, fy and ``principal_point_weight``
    for cx, cy; then the *profile* rows ``profile_weight * (e_i - mean_j e_j) / focal_ref`` of the
    focal errors ``e_i = f_i - prior_i`` (fx and fy).

    Why three pulls to the prior: the principal point is nearly unobservable from tracks (a
    shift of cx is a small yaw of the camera, and a drift of it soaks up focal and pose errors)
    while the backend's cx, cy (the image centre, or close to it) are reliable. The backend's
    focal length is often biased by several % but the bias is the same in every frame, so the
    level is held loosely (the tracks of all frames together measure it) and the profile
    tightly: a drift of the focal length across the window that the backend did not see is
    the zoom-for-dolly trade (focal up, camera back, depth scale down) that the tracks alone
    barely tell apart. Dividing by the focal length makes the weights unitless per relative change.

    Returns:
        A, B: (R, 4 F) each, R = 4 (F - 2) + 8 F when F > 2, else 8 F.
    """
    n = 4 * num_frames
    smooth = torch.zeros(0, n, dtype=dtype)
    if num_frames > 2:
        second = torch.zeros(num_frames - 2, num_frames, dtype=dtype)
        idx = torch.arange(num_frames - 2)
        second[idx, idx], second[idx, idx + 1], second[idx, idx + 2] = 1.0, -2.0, 1.0
        smooth = smooth_weight * torch.kron(second, torch.eye(4, dtype=dtype))
    weights = torch.tensor([focal_weight, focal_weight, principal_point_weight, principal_point_weight], dtype=dtype)
    prior = torch.diag(weights.repeat(num_frames))
    centre = torch.eye(num_frames, dtype=dtype) - 1.0 / num_frames
    profile = profile_weight * torch.kron(centre, torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=dtype)))
    A = torch.cat([smooth, prior, profile]) / focal_ref
    B = torch.cat([torch.zeros_like(smooth), prior, profile]) / focal_ref
    return A, B


def depth_scale_jacobian(r_d: torch.Tensor, depth_weight: torch.Tensor) -> torch.Tensor:
    """``dr_d / da`` (N,) of depth-prior residuals ``r_d`` (N,) for the frame's log depth scale ``a``.

    ``r_d = w (z / (e^a d) - 1)``, so the derivative is ``-w z / (e^a d) = -(r_d + w)``.
    """
    return -(r_d + depth_weight)


def depth_scale_prior_matrix(num_frames: int, smooth_weight: float, weight: float, dtype: torch.dtype) -> torch.Tensor:
    """Linear map ``C`` with ``r = C a`` the prior residuals of per-frame log depth scales ``a`` (F,).

    Rows: ``smooth_weight * (a_i - a_{i-1})`` for i = 1 .. F-1 (the backend's scale drifts slowly,
    so a frame's scale is close to its neighbour's), then ``weight * a_i`` (the fused depth is
    metric on average: its mean scale is what anchors the reconstruction in metres).

    Returns:
        C: (F - 1 + F, F).
    """
    eye = torch.eye(num_frames, dtype=dtype)
    return torch.cat([smooth_weight * (eye[1:] - eye[:-1]), weight * eye])
