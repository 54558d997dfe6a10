"""Bundle adjustment in torch (DESIGN §4): Levenberg–Marquardt with a Schur complement, in windows.

Unknowns per frame: pose (w2c rotation by a left axis-angle increment, and
translation), intrinsics fx, fy, cx, cy (one set per frame, or one shared
set when ``per_frame_intrinsics`` is False -- the VIPE setting) and the log
scale ``a`` of the frame's fused depth (see :mod:`ba_problem` for why); per
track a 3D point, initialised by back-projecting the fused metric depth at the
track's first observation in the window. Cost (residuals in :mod:`ba_problem`)::

    sum_obs cauchy(|r_px|) + sum_obs huber(|r_d|) + |A f - B f_prior|^2 + |C a|^2 + |r_pose|^2

``r_pose`` holds each free frame near its initial (fused) pose: the rotation
offset ``log(R R0^T)`` and the camera-centre offset, each with its weight.

Gauge: the first frame's pose is held fixed; the depth prior, through the
per-frame depth scales held near 1 on average, fixes the metric scale (with
``depth_prior_weight = 0`` the scale is left to LM's damping).

Outliers: reprojection residuals go through a Cauchy loss (Huber only bounds
a mismatched track's pull: a 10 px mismatch still pulls like a 2 px residual,
and with per-frame intrinsics 1-2 % of them bent focal length, principal
point and trajectory), depth residuals through Huber. After a window
converges, observations whose reprojection residual exceeds ``outlier_px``
are dropped (with the points left seen fewer than twice) and the window is
solved again, ``outlier_rounds`` times at most; dropped observations stay
out of later windows and out of ``reproj_error_px``.

Each LM step builds the normal equations blockwise -- U (cameras, dense),
V (points, 3x3 blocks), W (camera x point) -- eliminates the points with the
Schur complement ``S = U - W V^-1 W^T`` (the 3x3 blocks inverted in one
batch), solves the reduced camera system by Cholesky and back-substitutes the
point steps.

Windows keep memory flat in video length::

    frames   0 ............ 63
                       48 ............ 111
                                  96 ............ 159
             |-window-|           overlap frames 48..63 held fixed in window 2

A window optimises its frames; its first ``overlap`` frames are held at the
previous window's result (pose and intrinsics), which ties the windows into
one trajectory in one scale. The frames after a window start from the fused
poses moved by the rigid correction the window gave its last frame, so the
next window's free frames start where its held frames ended, not where the
fused trajectory had them (a jump there would be a drift the window has to
undo). Only a window's observations and points are ever materialised.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from wmkit.annotate.ba_problem import (
    cauchy_cost,
    cauchy_weights,
    depth_scale_jacobian,
    depth_scale_prior_matrix,
    huber_cost,
    huber_weights,
    intrinsics_prior_matrix,
    observation_jacobians,
    observation_residuals,
    so3_exp,
)
from wmkit.annotate.fusion import FusedGeometry
from wmkit.annotate.tracks import Tracks
from wmkit.annotate.types import AnnotateError

__all__ = ["BAConfig", "BAResult", "bundle_adjust", "reprojection_error", "window_spans"]


@dataclass(frozen=True)
class BAConfig:
    """Knobs of :func:`bundle_adjust`; weights are per unitless relative error (see ba_problem)."""

    per_frame_intrinsics: bool = True  # False: one fx, fy, cx, cy per window (VIPE's one K per video)
    # Weights are 1 / sigma of each prior's relative error, pixel residuals being O(1 px):
    # a zoom is smooth, so a 1 % second difference of fx, fy, cx or cy costs like a 1 px residual
    smooth_weight: float = 100.0
    # the backend's K is often biased by several % (single-image focal estimation), so the prior
    # is weak (sigma 50 %): it only settles what the images leave open; stronger kept the bias in tests
    k_prior_weight: float = 2.0
    # the principal point trades against rotation and focal length, and the backend's (the image
    # centre, or near it) is good: sigma 2 % of the focal length, ~3 px at 160 px wide. As weak as
    # the focal prior, it drifted 5-50 px on synthetic clips and took the focal length with it
    principal_point_weight: float = 50.0
    # the backend's focal bias is the same in every frame: its frame-to-frame profile (the zoom)
    # is held at sigma 3 %, which stops a focal drift standing in for a dolly (see ba_problem)
    profile_weight: float = 30.0
    # fused depth is consistent to a few % within a frame (sigma ~3 %); it fixes the metric scale
    depth_prior_weight: float = 30.0
    # per-frame log scale of the fused depth: its mean is metric (sigma 10 % a frame, so ~1.5 % over a
    # 48-frame window) while a frame may be off by several % (the geometry backend's scale drift);
    # from frame to frame it changes by ~1 % at most
    depth_scale_weight: float = 10.0
    depth_scale_smooth_weight: float = 100.0
    # the backend's own cameras are measurements too: each free frame is held near its initial pose
    # with sigma 0.6 degrees (per radian) and 1 % of the window's median depth (per relative centre
    # error). Frames with a few dozen track observations have 11 barely fixed unknowns without it,
    # and BA drifted them to 2-3x the backend's error on zoom clips whose texture thins out
    pose_prior_rot: float = 100.0
    pose_prior_centre: float = 100.0
    # scale of the Cauchy loss on reprojection residuals: beyond it an observation's pull falls off
    # (mismatched tracks); SIFT inliers on synthetic clips sit well below (median 0.15 px)
    robust_px: float = 2.0
    # fused depth off by more than this (relative) is down-weighted: depth edges, thin structures
    huber_depth: float = 0.1
    # after a window converges, observations with a larger reprojection residual are dropped and the
    # window re-solved; SIFT inliers on synthetic clips have a median of 0.15 px and a 99th percentile
    # near 1 px, mismatches reach tens of px
    outlier_px: float = 2.0
    outlier_rounds: int = 2  # drop-and-re-solve rounds per window; 0 keeps every observation
    window: int = 64  # frames per window
    overlap: int = 16  # frames shared with (and held fixed from) the previous window
    iterations: int = 20  # LM iterations per window
    device: str | None = None  # None: cuda when available

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"BAConfig.window must be >= 2, got {self.window}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"BAConfig.overlap must be in [0, window), got {self.overlap} (window {self.window})")
        for name in (
            "smooth_weight",
            "k_prior_weight",
            "principal_point_weight",
            "profile_weight",
            "depth_prior_weight",
            "depth_scale_weight",
            "depth_scale_smooth_weight",
            "pose_prior_rot",
            "pose_prior_centre",
            "robust_px",
            "huber_depth",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"BAConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.iterations < 0 or self.outlier_rounds < 0:
            raise ValueError(
                f"BAConfig.iterations and outlier_rounds must be >= 0, got {self.iterations}, {self.outlier_rounds}"
            )
        for name in ("robust_px", "outlier_px"):  # the Cauchy loss divides by robust_px
            if not getattr(self, name) > 0:
                raise ValueError(f"BAConfig.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class BAResult:
    """Refined metric cameras and points of one clip."""

    c2w: np.ndarray  # (T, 4, 4) float64 OpenCV camera-to-world, metres
    K: np.ndarray  # (T, 3, 3) float64 pixels
    depth_scale: np.ndarray  # (T,) float64 factor that makes the fused depth agree with these cameras
    points: np.ndarray  # (num_points, 3) float64 world points; NaN for tracks not reconstructed
    reproj_error_px: float  # mean reprojection error over the kept (not outlier) observations of reconstructed points
    stats: dict = field(default_factory=dict)


def window_spans(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` frame ranges of the windows; consecutive ones share ``overlap`` frames."""
    spans, start = [], 0
    while True:
        end = min(start + window, num_frames)
        spans.append((start, end))
        if end == num_frames:
            return spans
        start = end - overlap


@dataclass
class _Window:
    """One window's problem on the solver device; camera columns -1 mark fixed parameters."""

    R: torch.Tensor  # (F, 3, 3) w2c rotations
    t: torch.Tensor  # (F, 3) w2c translations
    intr: torch.Tensor  # (F, 4) fx, fy, cx, cy
    prior: torch.Tensor  # (F, 4) backend intrinsics
    pose_col: torch.Tensor  # (F,) int64 first column of the frame's pose step, or -1
    intr_col: torch.Tensor  # (F,) int64 first column of the frame's intrinsics, or -1
    log_scale: torch.Tensor  # (F,) log depth scale of each frame
    scale_col: torch.Tensor  # (F,) int64 column of the frame's log depth scale, or -1
    num_cols: int
    frame: torch.Tensor  # (N,) int64 window-local frame of each observation
    point: torch.Tensor  # (N,) int64 window-local point
    uv: torch.Tensor  # (N, 2)
    depth: torch.Tensor  # (N,) fused depth at the observation
    depth_weight: torch.Tensor  # (N,)
    X: torch.Tensor  # (M, 3)
    prior_A: torch.Tensor  # (R, 4F)
    prior_B: torch.Tensor  # (R, 4F)
    scale_C: torch.Tensor  # (R', F) log depth scale prior
    R0: torch.Tensor  # (F, 3, 3) initial w2c rotations (pose prior)
    c0: torch.Tensor  # (F, 3) initial camera centres (pose prior)
    pose_w: torch.Tensor  # (2,) weights of the rotation (per radian) and centre (per metre) prior


def _so3_log(R: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors (..., 3) of rotations (..., 3, 3) away from pi."""
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    v = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    factor = torch.where(angle < 1e-6, 0.5 + angle**2 / 12, angle / (2 * torch.sin(angle).clamp_min(1e-12)))
    return v * factor[..., None]


def _pose_prior(w: _Window, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(F, 6) residuals holding each free frame near its initial pose (zero rows for held frames)."""
    free = (w.pose_col >= 0).to(R.dtype)[:, None]
    r_rot = w.pose_w[0] * _so3_log(R @ w.R0.mT)
    r_c = w.pose_w[1] * (-(R.mT @ t[..., None])[..., 0] - w.c0)
    return torch.cat([r_rot, r_c], 1) * free


def _residuals(w: _Window, R, t, intr, log_scale, X) -> torch.Tensor:
    f = w.frame
    depth = w.depth * torch.exp(log_scale[f])
    return observation_residuals(intr[f], X[w.point], R[f], t[f], w.uv, depth, w.depth_weight)


def _cost(w: _Window, R, t, intr, log_scale, X, config: BAConfig) -> float:
    r = _residuals(w, R, t, intr, log_scale, X)
    prior = w.prior_A @ intr.reshape(-1) - w.prior_B @ w.prior.reshape(-1)
    reproj = cauchy_cost(r[:, :2].norm(dim=1), config.robust_px).sum()
    depth = huber_cost(r[:, 2].abs(), w.depth_weight * config.huber_depth).sum()
    pose = (_pose_prior(w, R, t) ** 2).sum()
    return float(reproj + depth + (prior**2).sum() + ((w.scale_C @ log_scale) ** 2).sum() + pose)


def _normal_equations(w: _Window, config: BAConfig):
    """Gauss-Newton blocks: U (P, P), g_c (P,), V (M, 3, 3), g_p (M, 3), W (P, 3M); g = -J^T r."""
    f, P, M = w.frame, w.num_cols, len(w.X)
    r, j_pose, j_intr, j_point = observation_jacobians(
        w.intr[f], w.X[w.point], w.R[f], w.t[f], w.uv, w.depth * torch.exp(w.log_scale[f]), w.depth_weight
    )
    j_scale = torch.zeros_like(r)
    j_scale[:, 2] = depth_scale_jacobian(r[:, 2], w.depth_weight)
    sw = torch.ones_like(r)
    sw[:, :2] = cauchy_weights(r[:, :2].norm(dim=1), config.robust_px).sqrt()[:, None]
    sw[:, 2] = huber_weights(r[:, 2].abs(), w.depth_weight * config.huber_depth).sqrt()
    r = r * sw
    jc = torch.cat([j_pose, j_intr, j_scale[..., None]], dim=2) * sw[..., None]  # (N, 3, 11)
    jp = j_point * sw[..., None]
    dummy = P  # fixed parameters accumulate into a dropped extra row/column
    pose_cols = torch.where(w.pose_col[f, None] >= 0, w.pose_col[f, None] + torch.arange(6, device=f.device), dummy)
    intr_cols = torch.where(w.intr_col[f, None] >= 0, w.intr_col[f, None] + torch.arange(4, device=f.device), dummy)
    scale_cols = torch.where(w.scale_col[f, None] >= 0, w.scale_col[f, None], dummy)
    cols = torch.cat([pose_cols, intr_cols, scale_cols], dim=1)  # (N, 11)

    U = torch.zeros((P + 1) * (P + 1), dtype=r.dtype, device=r.device)
    U.index_add_(0, (cols[:, :, None] * (P + 1) + cols[:, None, :]).reshape(-1), (jc.mT @ jc).reshape(-1))
    g_c = torch.zeros(P + 1, dtype=r.dtype, device=r.device)
    g_c.index_add_(0, cols.reshape(-1), -(jc.mT @ r[..., None]).reshape(-1))
    V = torch.zeros(M, 3, 3, dtype=r.dtype, device=r.device).index_add_(0, w.point, jp.mT @ jp)
    g_p = torch.zeros(M, 3, dtype=r.dtype, device=r.device).index_add_(0, w.point, -(jp.mT @ r[..., None])[..., 0])
    W = torch.zeros((P + 1) * 3 * M, dtype=r.dtype, device=r.device)
    point_cols = 3 * w.point[:, None, None] + torch.arange(3, device=f.device)
    W.index_add_(0, (cols[:, :, None] * (3 * M) + point_cols).reshape(-1), (jc.mT @ jp).reshape(-1))
    U = U.reshape(P + 1, P + 1)[:P, :P]
    W = W.reshape(P + 1, 3 * M)[:P]
    g_c = g_c[:P]

    # the intrinsics priors are linear: J = A S with S mapping free columns to per-frame intrinsics
    select = torch.zeros(4 * len(w.intr), P, dtype=r.dtype, device=r.device)
    free = torch.nonzero(w.intr_col >= 0)[:, 0]
    for c in range(4):
        select[4 * free + c, w.intr_col[free] + c] = 1.0
    j_prior = w.prior_A @ select
    r_prior = w.prior_A @ w.intr.reshape(-1) - w.prior_B @ w.prior.reshape(-1)
    U = U + j_prior.T @ j_prior
    g_c = g_c - j_prior.T @ r_prior
    select = torch.zeros(len(w.log_scale), P, dtype=r.dtype, device=r.device)
    free = torch.nonzero(w.scale_col >= 0)[:, 0]
    select[free, w.scale_col[free]] = 1.0
    j_prior = w.scale_C @ select
    U = U + j_prior.T @ j_prior
    g_c = g_c - j_prior.T @ (w.scale_C @ w.log_scale)
    # pose prior: d r_rot / d dw ~ w_R I, d r_c / d dt = -w_c R^T (d r_c / d dw = 0 at dt = 0)
    r_pose = _pose_prior(w, w.R, w.t)
    free = torch.nonzero(w.pose_col >= 0)[:, 0]
    cols = w.pose_col[free, None] + torch.arange(6, device=f.device)
    diag = torch.cat([w.pose_w[0].expand(3), w.pose_w[1].expand(3)]) ** 2
    U[cols, cols] += diag
    g_c[cols[:, :3]] -= w.pose_w[0] * r_pose[free, :3]
    g_c[cols[:, 3:]] += w.pose_w[1] * (w.R[free] @ r_pose[free, 3:, None])[..., 0]
    return U, g_c, V, g_p, W


def _solve_step(U, g_c, V, g_p, W, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LM step (camera step (P,), point step (M, 3)) by the Schur complement over the points."""
    P, M = len(U), len(V)
    eye3 = torch.eye(3, dtype=V.dtype, device=V.device)
    U_d = U + lam * torch.diag(U.diagonal() + 1e-9)
    V_d = V + lam * (V.diagonal(dim1=1, dim2=2)[..., None] * eye3 + 1e-9 * eye3)
    V_inv = torch.linalg.inv(V_d)  # (M, 3, 3), one batched call
    WV = torch.einsum("pmi,mij->pmj", W.reshape(P, M, 3), V_inv).reshape(P, 3 * M)
    S = U_d - WV @ W.T
    rhs = g_c - WV @ g_p.reshape(-1)
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) == 0:
        d_c = torch.cholesky_solve(rhs[:, None], L)[:, 0]
    else:  # indefinite in floating point (near-degenerate window): least squares still gives a step
        d_c = torch.linalg.lstsq(S, rhs[:, None]).solution[:, 0]
    d_p = torch.einsum("mij,mj->mi", V_inv, g_p - (W.T @ d_c).reshape(M, 3))
    return d_c, d_p


def _apply(w: _Window, d_c: torch.Tensor, d_p: torch.Tensor):
    """Parameters after the step: poses by left increments, the rest additively."""
    R, t, intr, log_scale = w.R.clone(), w.t.clone(), w.intr.clone(), w.log_scale.clone()
    free = torch.nonzero(w.pose_col >= 0)[:, 0]
    cols = w.pose_col[free, None] + torch.arange(6, device=d_c.device)
    step = d_c[cols]  # (F_free, 6)
    rot = so3_exp(step[:, :3])
    R[free] = rot @ w.R[free]
    t[free] = (rot @ w.t[free, :, None])[..., 0] + step[:, 3:]
    free = torch.nonzero(w.intr_col >= 0)[:, 0]
    intr[free] = intr[free] + d_c[w.intr_col[free, None] + torch.arange(4, device=d_c.device)]
    free = torch.nonzero(w.scale_col >= 0)[:, 0]
    log_scale[free] = log_scale[free] + d_c[w.scale_col[free]]
    return R, t, intr, log_scale, w.X + d_p


def _levenberg_marquardt(w: _Window, config: BAConfig) -> dict:
    """Optimise ``w`` in place; returns the window's stats."""
    cost = _cost(w, w.R, w.t, w.intr, w.log_scale, w.X, config)
    stats = {"initial_cost": cost, "iterations": 0, "accepted": 0, "working_bytes": 0}
    lam = 1e-4
    for _ in range(config.iterations):
        stats["iterations"] += 1
        U, g_c, V, g_p, W = _normal_equations(w, config)
        # the Schur system and the dense camera-point block dominate a window's memory
        stats["working_bytes"] = max(stats["working_bytes"], 2 * W.nbytes + 2 * U.nbytes + 2 * V.nbytes)
        while lam < 1e12:
            d_c, d_p = _solve_step(U, g_c, V, g_p, W, lam)
            R, t, intr, log_scale, X = _apply(w, d_c, d_p)
            new_cost = _cost(w, R, t, intr, log_scale, X, config)
            if np.isfinite(new_cost) and new_cost <= cost:
                w.R, w.t, w.intr, w.log_scale, w.X = R, t, intr, log_scale, X
                stats["accepted"] += 1
                lam = max(lam / 10, 1e-12)
                break
            lam *= 10
        else:
            break  # no step lowers the cost: at a minimum within floating point
        converged = cost - new_cost <= 1e-12 * max(cost, 1e-30)
        cost = new_cost
        if converged:
            break
    stats["final_cost"] = cost
    return stats


def _drop_outliers(w: _Window, outlier_px: float) -> tuple[_Window, np.ndarray, np.ndarray] | None:
    """``w`` without its observations beyond ``outlier_px`` and the points they leave under-observed.

    A point stays when it keeps two observations, one of them in a frame whose pose is free.

    Returns:
        ``(window, kept_observations (N,) bool, kept_points (M,) bool)``, or None when nothing is dropped.
    """
    r = _residuals(w, w.R, w.t, w.intr, w.log_scale, w.X)
    keep = (r[:, :2].norm(dim=1) <= outlier_px).cpu().numpy()
    if keep.all():
        return None
    point, frame = w.point.cpu().numpy(), w.frame.cpu().numpy()
    free = (w.pose_col.cpu().numpy() >= 0)[frame]
    M = len(w.X)
    kept_pts = (np.bincount(point[keep], minlength=M) >= 2) & (np.bincount(point[keep & free], minlength=M) >= 1)
    keep &= kept_pts[point]
    index = torch.as_tensor(np.cumsum(kept_pts) - 1, device=w.point.device)
    sel = torch.as_tensor(keep, device=w.point.device)
    window = dataclasses.replace(
        w,
        frame=w.frame[sel],
        point=index[w.point[sel]],
        uv=w.uv[sel],
        depth=w.depth[sel],
        depth_weight=w.depth_weight[sel],
        X=w.X[torch.as_tensor(kept_pts, device=w.X.device)],
    )
    return window, keep, kept_pts


def _solve_window(w: _Window, config: BAConfig) -> tuple[_Window, np.ndarray, np.ndarray, dict]:
    """LM on ``w``, then up to ``config.outlier_rounds`` rounds of dropping outliers and solving again.

    Returns:
        ``(window, kept_observations, kept_points, stats)``; the masks index the observations and
        points ``w`` came with.
    """
    kept_obs, kept_pts = np.ones(len(w.frame), dtype=bool), np.ones(len(w.X), dtype=bool)
    stats = _levenberg_marquardt(w, config)
    stats["rejected_observations"] = 0
    for _ in range(config.outlier_rounds):
        dropped = _drop_outliers(w, config.outlier_px)
        if dropped is None:
            break
        w, keep, keep_pts = dropped
        stats["rejected_observations"] += int((~keep).sum())
        kept_obs[np.flatnonzero(kept_obs)[~keep]] = False
        kept_pts[np.flatnonzero(kept_pts)[~keep_pts]] = False
        if len(w.X) == 0:
            break
        again = _levenberg_marquardt(w, config)
        stats["iterations"] += again["iterations"]
        stats["accepted"] += again["accepted"]
        stats["working_bytes"] = max(stats["working_bytes"], again["working_bytes"])
        stats["final_cost"] = again["final_cost"]
    return w, kept_obs, kept_pts, stats


def _sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest-pixel values of ``image`` (T, H, W) at (frame, u, v) rows of ``uv`` (N, 3)."""
    T, H, W = image.shape
    col = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, W - 1)
    row = np.clip(np.floor(uv[:, 2]).astype(np.int64), 0, H - 1)
    return image[uv[:, 0].astype(np.int64), row, col]


def _back_project(c2w: np.ndarray, intr: np.ndarray, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """World points (N, 3) at z-depth ``depth`` (N,) along the rays of pixels ``uv`` (N, 2)."""
    x = (uv[:, 0] - intr[:, 2]) / intr[:, 0]
    y = (uv[:, 1] - intr[:, 3]) / intr[:, 1]
    cam = np.stack([x, y, np.ones_like(x)], axis=1) * depth[:, None]
    return np.einsum("nij,nj->ni", c2w[:, :3, :3], cam) + c2w[:, :3, 3]


def _intrinsics(K: np.ndarray) -> np.ndarray:
    return np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], axis=1)


def bundle_adjust(
    tracks: Tracks, init: FusedGeometry, config: BAConfig = BAConfig(), *, clip_id: str = "clip"
) -> BAResult:
    """Refine poses, intrinsics and track points, starting from the fused metric geometry.

    Args:
        tracks: observations over ``T`` frames.
        init: fused metric geometry (c2w, K (T, 3, 3), depth and conf (T, H, W)); its K is
            also the prior of the intrinsics and its depth the depth prior.
        config: solver knobs.
        clip_id: names the clip in errors.

    Returns:
        :class:`BAResult`; ``stats`` has per-window iterations, costs and rejected observations,
        ``peak_window_bytes`` (largest normal-equation working set), ``num_windows``,
        ``num_observations`` (kept ones of reconstructed points), ``rejected_observations``
        (outliers), ``device``, ``time_s``.

    Raises:
        AnnotateError: tracks and geometry disagree on the frame count, or no window has a
        point seen twice.
    """
    started = time.perf_counter()
    where = f"clip {clip_id!r}: bundle adjustment"
    T = len(init.c2w)
    if tracks.num_frames != T:
        raise AnnotateError(f"{where}: tracks cover {tracks.num_frames} frames, geometry {T}")
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float64

    c2w = np.array(init.c2w, dtype=np.float64, copy=True)
    intr = _intrinsics(init.K)
    prior = intr.copy()
    focal_ref = float(np.mean(prior[:, :2]))
    at = np.concatenate([tracks.frame[:, None], tracks.uv], axis=1)
    obs_depth = _sample(init.depth, at).astype(np.float64)
    obs_conf = _sample(init.conf, at).astype(np.float64)
    obs_depth_weight = np.where(obs_depth > 0, config.depth_prior_weight * obs_conf, 0.0)
    log_scale = np.zeros(T)
    points = np.full((tracks.num_points, 3), np.nan)
    inlier = np.ones(len(tracks), dtype=bool)  # observations not dropped as outliers
    windows = []

    for start, end in window_spans(T, config.window, config.overlap):
        F = end - start
        held = 1 if start == 0 else config.overlap  # frames whose pose is held fixed
        in_win = np.flatnonzero((tracks.frame >= start) & (tracks.frame < end) & inlier)
        pts, counts = np.unique(tracks.point[in_win], return_counts=True)
        # a point needs two observations, one of them in a free frame, and a depth to start from
        free_obs = np.zeros(len(pts), dtype=bool)
        np.logical_or.at(free_obs, np.searchsorted(pts, tracks.point[in_win]), tracks.frame[in_win] >= start + held)
        # per point: the earliest observation with a usable depth comes first
        order = np.lexsort((tracks.frame[in_win], obs_depth[in_win] <= 0, tracks.point[in_win]))
        first = in_win[order][np.r_[0, np.cumsum(counts)[:-1]]]
        keep = (counts >= 2) & free_obs & (obs_depth[first] > 0)
        pts, first = pts[keep], first[keep]
        obs = in_win[np.isin(tracks.point[in_win], pts)]
        if len(pts) == 0:
            windows.append({"span": (start, end), "skipped": "no point seen twice"})
            continue
        f0 = tracks.frame[first]
        X0 = _back_project(c2w[f0], intr[f0], tracks.uv[first], obs_depth[first])

        pose_col = np.full(F, -1)
        pose_col[held:] = 6 * np.arange(F - held)
        intr_held = 0 if start == 0 else config.overlap
        intr_col = np.full(F, -1)
        if config.per_frame_intrinsics:
            intr_col[intr_held:] = 6 * (F - held) + 4 * np.arange(F - intr_held)
            num_cols = 6 * (F - held) + 4 * (F - intr_held)
        else:
            intr_col[intr_held:] = 6 * (F - held)
            num_cols = 6 * (F - held) + 4
        scale_col = np.full(F, -1)  # depth scales are held and freed with the intrinsics
        scale_col[intr_held:] = num_cols + np.arange(F - intr_held)
        num_cols += F - intr_held
        A, B = intrinsics_prior_matrix(
            F,
            config.smooth_weight if config.per_frame_intrinsics else 0.0,
            config.k_prior_weight,
            config.principal_point_weight,
            config.profile_weight if config.per_frame_intrinsics else 0.0,
            focal_ref,
            dtype,
        )
        if not config.per_frame_intrinsics:  # the shared set starts from the mean of its frames' K
            intr[start + intr_held : end] = intr[start + intr_held : end].mean(axis=0)
        w2c = np.linalg.inv(c2w[start:end])
        tt = lambda a, dt=dtype: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
        win = _Window(
            R=tt(w2c[:, :3, :3]),
            t=tt(w2c[:, :3, 3]),
            intr=tt(intr[start:end]),
            prior=tt(prior[start:end]),
            pose_col=tt(pose_col, torch.int64),
            intr_col=tt(intr_col, torch.int64),
            log_scale=tt(log_scale[start:end]),
            scale_col=tt(scale_col, torch.int64),
            num_cols=num_cols,
            frame=tt(tracks.frame[obs] - start, torch.int64),
            point=tt(np.searchsorted(pts, tracks.point[obs]), torch.int64),
            uv=tt(tracks.uv[obs]),
            depth=tt(obs_depth[obs]),
            depth_weight=tt(obs_depth_weight[obs]),
            X=tt(X0),
            prior_A=A.to(device),
            prior_B=B.to(device),
            R0=tt(w2c[:, :3, :3]),
            c0=tt(c2w[start:end, :3, 3]),
            pose_w=tt(np.array([config.pose_prior_rot, config.pose_prior_centre / np.median(obs_depth[first])])),
            scale_C=depth_scale_prior_matrix(
                F, config.depth_scale_smooth_weight, config.depth_scale_weight, dtype
            ).to(device),
        )
        win, kept_obs, kept_pts, stats = _solve_window(win, config)
        stats.update(span=(start, end), num_points=int(kept_pts.sum()), num_observations=int(kept_obs.sum()))
        windows.append(stats)
        inlier[obs[~kept_obs]] = False

        R, t = win.R.cpu().numpy(), win.t.cpu().numpy()
        last_before = c2w[end - 1].copy()
        c2w[start:end, :3, :3] = R.transpose(0, 2, 1)
        c2w[start:end, :3, 3] = -np.einsum("fji,fj->fi", R, t)
        c2w[end:] = c2w[end - 1] @ np.linalg.inv(last_before) @ c2w[end:]  # later frames follow the window
        intr[start:end] = win.intr.cpu().numpy()
        log_scale[start:end] = win.log_scale.cpu().numpy()
        log_scale[end:] = log_scale[end - 1]  # later frames start from the last solved scale
        points[pts[kept_pts]] = win.X.cpu().numpy()

    if not np.isfinite(points).any():
        raise AnnotateError(f"{where}: no window has a point seen in two frames ({len(tracks)} observations)")
    K = np.zeros((T, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = *intr.T, 1.0
    return BAResult(
        c2w=c2w,
        K=K,
        depth_scale=np.exp(log_scale),
        points=points,
        reproj_error_px=reprojection_error(tracks, c2w, K, points, inlier),
        stats={
            "windows": windows,
            "num_windows": len(windows),
            "num_observations": int((np.isfinite(points[tracks.point, 0]) & inlier).sum()),
            "rejected_observations": int((~inlier).sum()),
            "peak_window_bytes": max((w.get("working_bytes", 0) for w in windows), default=0),
            "device": str(device),
            "time_s": time.perf_counter() - started,
        },
    )


def reprojection_error(
    tracks: Tracks, c2w: np.ndarray, K: np.ndarray, points: np.ndarray, keep: np.ndarray | None = None
) -> float:
    """Mean pixel distance between observations and projected points (reconstructed points only).

    Args:
        c2w: (T, 4, 4); K: (T, 3, 3); points: (num_points, 3) with NaN rows for missing points.
        keep: (N,) bool observations to count (e.g. the BA's inliers); None counts all.
    """
    ok = np.isfinite(points[tracks.point, 0]) if keep is None else np.isfinite(points[tracks.point, 0]) & keep
    f, X = tracks.frame[ok], points[tracks.point[ok]]
    w2c = np.linalg.inv(c2w)
    x = np.einsum("nij,nj->ni", w2c[f, :3, :3], X) + w2c[f, :3, 3]
    uv = np.einsum("nij,nj->ni", K[f], x / x[:, 2:3])[:, :2]
    return float(np.linalg.norm(uv - tracks.uv[ok], axis=1).mean()) if ok.any() else float("nan")
