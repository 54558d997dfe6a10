"""Accuracy of annotated cameras and depth against ground truth (issue 5, DESIGN §4).

Measures, all in ground-truth units (metres for the synthetic scenes):

- ``ate_sim3_m``: absolute trajectory error, the RMSE of camera centres after
  the Sim(3) (scale, rotation, translation) alignment that fits predicted
  centres to true ones best (Umeyama). Shape of the path, whatever its scale.
- ``ate_se3_m``: the same after a rigid SE(3) alignment, scale fixed to 1, so
  a wrong metric scale shows up here and not in ``ate_sim3_m``.
- ``scale_err``: ``|s - 1|`` for the Sim(3) scale ``s`` (predicted units -> true
  units); ``sim3_scale`` is ``s`` itself.
- ``rpe_trans_m``, ``rpe_rot_deg``: relative pose error between consecutive
  frames, RMSE over frame pairs of the translation and of the rotation angle of
  ``(G_i^-1 G_{i+1})^-1 (P_i^-1 P_{i+1})``. Metric predictions are compared as
  they are (a scale error counts); non-metric ones are first multiplied by the
  Sim(3) scale, since their units are arbitrary.
- ``focal_err_rel_mean``, ``focal_err_rel_max``: ``|f_pred - f_true| / f_true``
  over every frame's fx and fy.
- :func:`depth_abs_rel`: mean ``|d_pred - d_true| / d_true`` over valid pixels.

Frames are matched by ``frame_index``: a prediction may cover a subset of the
true frames (keyframes), never frames the truth lacks.

Example::

    metrics = evaluate_cameras(Cameras.load("pred/cameras.npz"), Cameras.load("gt/cameras.npz"))
    plot_trajectories(pred, gt, Path("trajectory.png"))
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from wmkit.datasets.cameras import CameraError, Cameras, invert_rigid

__all__ = ["align_trajectories", "evaluate_cameras", "depth_abs_rel", "plot_trajectories", "match_frames"]

_STATIC_SPREAD_M2 = 1e-12  # below this mean squared spread the centres define no rotation or scale


def align_trajectories(
    pred_c2w: np.ndarray, gt_c2w: np.ndarray, mode: Literal["sim3", "se3"]
) -> tuple[np.ndarray, float]:
    """Align predicted cameras to true ones by their centres (Umeyama); return (aligned c2w, scale).

    Args:
        pred_c2w: (T, 4, 4) predicted camera-to-world, any units.
        gt_c2w: (T, 4, 4) true camera-to-world.
        mode: ``"sim3"`` fits scale, rotation and translation; ``"se3"`` fixes the scale to 1.

    Returns:
        ``aligned`` (T, 4, 4): ``S @ pred_c2w`` with the similarity ``S`` applied so the
        rotations stay orthonormal (``R_i' = R R_i``, ``c_i' = s R c_i + t``), and the scale ``s``.
        A static prediction (all centres equal) keeps scale 1 and aligns the mean orientation.
    """
    pred_c2w, gt_c2w = np.asarray(pred_c2w, dtype=np.float64), np.asarray(gt_c2w, dtype=np.float64)
    if pred_c2w.shape != gt_c2w.shape or pred_c2w.shape[1:] != (4, 4):
        raise CameraError(f"align_trajectories: shapes {pred_c2w.shape} and {gt_c2w.shape} must both be (T, 4, 4)")
    if mode not in ("sim3", "se3"):
        raise CameraError(f"align_trajectories: mode must be 'sim3' or 'se3', got {mode!r}")
    pred_c, gt_c = pred_c2w[:, :3, 3], gt_c2w[:, :3, 3]
    pred_mean, gt_mean = pred_c.mean(axis=0), gt_c.mean(axis=0)
    pred_d, gt_d = pred_c - pred_mean, gt_c - gt_mean
    scale = 1.0
    if (pred_d**2).sum(axis=1).mean() <= _STATIC_SPREAD_M2:
        rotation = Rotation.from_matrix(gt_c2w[:, :3, :3] @ pred_c2w[:, :3, :3].transpose(0, 2, 1)).mean()
    else:
        with warnings.catch_warnings():  # collinear paths leave the roll about the line free; any choice fits
            warnings.simplefilter("ignore", UserWarning)
            rotation, _ = Rotation.align_vectors(gt_d, pred_d)  # Kabsch: min sum |gt_d - R pred_d|^2
        if mode == "sim3":
            # Umeyama's scale for the optimal rotation: sum gt_d . R pred_d / sum |pred_d|^2.
            scale = float((gt_d * rotation.apply(pred_d)).sum() / (pred_d**2).sum())
    R = rotation.as_matrix()
    similarity = np.eye(4)
    similarity[:3, :3] = scale * R
    similarity[:3, 3] = gt_mean - scale * R @ pred_mean
    aligned = similarity @ pred_c2w
    aligned[:, :3, :3] = R @ pred_c2w[:, :3, :3]  # rotations without the scale
    return aligned, scale


def match_frames(pred: Cameras, gt: Cameras) -> Cameras:
    """The frames of ``gt`` whose ``frame_index`` the prediction has, in the prediction's order.

    Raises :class:`CameraError` naming the predicted frames that ``gt`` lacks.
    """
    position = {int(f): i for i, f in enumerate(gt.frame_index)}
    missing = [int(f) for f in pred.frame_index if int(f) not in position]
    if missing:
        raise CameraError(f"evaluate: predicted frames {missing[:8]} are not in the ground truth")
    return gt.select(np.array([position[int(f)] for f in pred.frame_index], dtype=np.int64))


def _rmse(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if len(values) else 0.0


def _relative_pose_errors(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation (T-1,) and rotation angle (T-1,) degrees of the error between consecutive-frame motions."""
    pred_rel = invert_rigid(pred_c2w[:-1]) @ pred_c2w[1:]
    gt_rel = invert_rigid(gt_c2w[:-1]) @ gt_c2w[1:]
    error = invert_rigid(gt_rel) @ pred_rel
    angle = Rotation.from_matrix(error[:, :3, :3]).magnitude()
    return np.linalg.norm(error[:, :3, 3], axis=1), np.degrees(angle)


def evaluate_cameras(pred: Cameras, gt: Cameras) -> dict:
    """ATE (Sim(3), SE(3)), scale error, RPE and focal error of ``pred`` against ``gt``.

    See the module docstring for each measure. Returns a JSON-ready dict of floats
    with keys ``ate_sim3_m, ate_se3_m, rpe_trans_m, rpe_rot_deg, focal_err_rel_mean,
    focal_err_rel_max, scale_err, sim3_scale`` and the int ``num_frames``.
    """
    pred.validate("predicted cameras")
    gt = match_frames(pred, gt.validate("ground-truth cameras"))
    sim3, scale = align_trajectories(pred.c2w, gt.c2w, "sim3")
    se3, _ = align_trajectories(pred.c2w, gt.c2w, "se3")
    centres = gt.c2w[:, :3, 3]
    rpe_input = pred.c2w.copy()
    if not pred.metric:
        rpe_input[:, :3, 3] *= scale
    rpe_trans, rpe_rot = _relative_pose_errors(rpe_input, gt.c2w)
    focal_pred = np.stack([pred.K[:, 0, 0], pred.K[:, 1, 1]], axis=1)
    focal_gt = np.stack([gt.K[:, 0, 0], gt.K[:, 1, 1]], axis=1)
    focal_err = np.abs(focal_pred - focal_gt) / focal_gt
    return {
        "num_frames": len(pred),
        "ate_sim3_m": _rmse(np.linalg.norm(sim3[:, :3, 3] - centres, axis=1)),
        "ate_se3_m": _rmse(np.linalg.norm(se3[:, :3, 3] - centres, axis=1)),
        "rpe_trans_m": _rmse(rpe_trans),
        "rpe_rot_deg": _rmse(rpe_rot),
        "focal_err_rel_mean": float(focal_err.mean()),
        "focal_err_rel_max": float(focal_err.max()),
        "scale_err": abs(scale - 1.0),
        "sim3_scale": scale,
    }


def depth_abs_rel(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean absolute relative depth error ``|pred - gt| / gt`` over valid pixels.

    Args:
        pred: (T, H, W) predicted depth, same units as ``gt`` (no scale is fitted).
        gt: (T, H, W) true depth; pixels with ``gt <= 0`` or non-finite values are skipped.
        valid: optional (T, H, W) bool mask of pixels to score (e.g. ``depth.npz``'s ``valid``).
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"depth_abs_rel: predicted depth {pred.shape} and true depth {gt.shape} differ in shape")
    mask = np.isfinite(gt) & (gt > 0) & np.isfinite(pred)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != gt.shape:
            raise ValueError(f"depth_abs_rel: valid mask {valid.shape} does not match depth {gt.shape}")
        mask &= valid
    if not mask.any():
        raise ValueError("depth_abs_rel: no pixel is valid in both depths")
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask]))


def plot_trajectories(pred: Cameras, gt: Cameras, path: Path) -> None:
    """Write a PNG: top view (x-z) of the true and Sim(3)-aligned predicted centres, and focal per frame."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    gt = match_frames(pred, gt)
    aligned, scale = align_trajectories(pred.c2w, gt.c2w, "sim3")
    metrics = evaluate_cameras(pred, gt)
    fig, (top, focal) = plt.subplots(1, 2, figsize=(11, 4.5))
    top.plot(gt.c2w[:, 0, 3], gt.c2w[:, 2, 3], "-", color="black", label="ground truth")
    top.plot(aligned[:, 0, 3], aligned[:, 2, 3], "--", color="tab:red", label=f"prediction (Sim(3), s={scale:.3f})")
    top.plot(gt.c2w[:1, 0, 3], gt.c2w[:1, 2, 3], "o", color="black", label="first frame")
    top.set(xlabel="x (m)", ylabel="z (m)", title=f"top view  ATE Sim(3) {metrics['ate_sim3_m']:.4f} m, "
            f"SE(3) {metrics['ate_se3_m']:.4f} m")
    top.set_aspect("equal", adjustable="datalim")
    top.legend(loc="best", fontsize=8)
    focal.plot(gt.frame_index, gt.K[:, 0, 0], "-", color="black", label="fx ground truth")
    focal.plot(pred.frame_index, pred.K[:, 0, 0], "--", color="tab:red", label="fx prediction")
    focal.set(xlabel="frame", ylabel="fx (px)", title=f"focal error mean {100 * metrics['focal_err_rel_mean']:.2f} %, "
              f"max {100 * metrics['focal_err_rel_max']:.2f} %")
    focal.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
