"""Camera and depth evaluation on hand-made cases whose errors are known exactly."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from wmkit.annotate import eval_cli
from wmkit.annotate.evaluate import align_trajectories, depth_abs_rel, evaluate_cameras, plot_trajectories
from wmkit.datasets.cameras import CameraError, Cameras


def _cameras(c2w: np.ndarray, focal: np.ndarray | float = 100.0, metric: bool = True) -> Cameras:
    T = len(c2w)
    K = np.tile(np.eye(3), (T, 1, 1))
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, 0, 2], K[:, 1, 2] = 80.0, 48.0
    return Cameras(c2w=c2w, K=K, t=np.arange(T) / 10.0, frame_index=np.arange(T), metric=metric)


def _curved_path(T: int = 20, seed: int = 0) -> np.ndarray:
    """A non-collinear path (an arc with height change) with turning cameras -> c2w (T, 4, 4)."""
    s = np.linspace(0, 1, T)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, 3] = np.stack([2 * np.sin(2 * s), 0.3 * s**2, 3 * s], axis=1)
    c2w[:, :3, :3] = Rotation.from_rotvec(np.stack([0.1 * s, 1.2 * s, 0.05 * s], axis=1)).as_matrix()
    return c2w


def _line_path(steps: list[float]) -> np.ndarray:
    """Cameras on the z axis with identity rotations, moved by ``steps`` metres between frames."""
    c2w = np.tile(np.eye(4), (len(steps) + 1, 1, 1))
    c2w[:, 2, 3] = np.concatenate([[0.0], np.cumsum(steps)])
    return c2w


def _similarity(c2w: np.ndarray, scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply x -> scale R x + t to camera centres and R to orientations."""
    out = c2w.copy()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * c2w[:, :3, 3] @ R.T + t
    return out


def test_identical_cameras_score_zero():
    gt = _cameras(_curved_path())
    m = evaluate_cameras(gt, gt)
    for key in ("ate_sim3_m", "ate_se3_m", "rpe_trans_m", "rpe_rot_deg", "focal_err_rel_mean", "scale_err"):
        assert m[key] == pytest.approx(0.0, abs=1e-9), key
    assert m["sim3_scale"] == pytest.approx(1.0) and m["num_frames"] == 20


def test_sim3_alignment_recovers_a_known_similarity():
    gt_c2w = _curved_path()
    R = Rotation.from_euler("xyz", [20, -35, 60], degrees=True).as_matrix()
    pred_c2w = _similarity(gt_c2w, 2.5, R, np.array([1.0, -2.0, 0.5]))
    aligned, scale = align_trajectories(pred_c2w, gt_c2w, "sim3")
    assert scale == pytest.approx(1 / 2.5, rel=1e-9)
    np.testing.assert_allclose(aligned, gt_c2w, atol=1e-9)
    m = evaluate_cameras(_cameras(pred_c2w, metric=False), _cameras(gt_c2w))
    assert m["ate_sim3_m"] < 1e-9 and m["scale_err"] == pytest.approx(0.6)
    # Non-metric predictions are rescaled before RPE, so the relative motion is exact.
    assert m["rpe_trans_m"] < 1e-9 and m["rpe_rot_deg"] < 1e-6
    # SE(3) keeps the scale: it recovers the rotation of a rigidly moved path, not a scaled one.
    rigid, one = align_trajectories(_similarity(gt_c2w, 1.0, R, np.zeros(3)), gt_c2w, "se3")
    assert one == 1.0
    np.testing.assert_allclose(rigid, gt_c2w, atol=1e-9)


def test_se3_ate_grows_with_the_scale_error():
    gt_c2w = _curved_path()
    gt = _cameras(gt_c2w)
    errors = []
    for scale_error in (0.0, 0.05, 0.1, 0.2):
        pred = _cameras(_similarity(gt_c2w, 1 + scale_error, np.eye(3), np.zeros(3)))
        m = evaluate_cameras(pred, gt)
        assert m["ate_sim3_m"] < 1e-9
        assert m["scale_err"] == pytest.approx(1 - 1 / (1 + scale_error))
        errors.append(m["ate_se3_m"])
    assert errors[0] < 1e-9 and all(a < b for a, b in zip(errors, errors[1:]))
    # A metric prediction 10% too large moves ~10% more per frame: RPE sees it.
    m = evaluate_cameras(_cameras(_similarity(gt_c2w, 1.1, np.eye(3), np.zeros(3))), gt)
    steps = np.linalg.norm(np.diff(gt_c2w[:, :3, 3], axis=0), axis=1)
    assert m["rpe_trans_m"] == pytest.approx(0.1 * np.sqrt(np.mean(steps**2)), rel=1e-6)


def test_rpe_on_hand_made_steps_and_turns():
    gt = _cameras(_line_path([1.0, 1.0, 1.0]))
    pred_c2w = _line_path([1.0, 1.5, 1.0])  # frame 2 overshoots by 0.5 m, frame 3 keeps the 1 m step
    pred_c2w[3, :3, :3] = Rotation.from_euler("y", 10, degrees=True).as_matrix()  # last frame turned 10 deg
    m = evaluate_cameras(_cameras(pred_c2w), gt)
    assert m["rpe_trans_m"] == pytest.approx(0.5 / np.sqrt(3))  # errors (0, 0.5, 0) m
    assert m["rpe_rot_deg"] == pytest.approx(10 / np.sqrt(3))  # errors (0, 0, 10) deg


def test_focal_error_per_frame():
    focal = np.full(6, 100.0)
    pred_focal = focal.copy()
    pred_focal[3:] *= 1.1  # 10 % too long on the last three frames
    m = evaluate_cameras(_cameras(_curved_path(6), pred_focal), _cameras(_curved_path(6), focal))
    assert m["focal_err_rel_mean"] == pytest.approx(0.05)
    assert m["focal_err_rel_max"] == pytest.approx(0.1)


def test_frames_are_matched_by_index():
    gt = _cameras(_curved_path(10))
    keyframes = gt.select(np.array([0, 3, 6, 9]))
    keyframes = Cameras(keyframes.c2w, keyframes.K, np.arange(4) / 10.0, keyframes.frame_index, metric=True)
    m = evaluate_cameras(keyframes, gt)
    assert m["num_frames"] == 4 and m["ate_se3_m"] < 1e-9 and m["focal_err_rel_max"] == 0.0
    stray = Cameras(gt.c2w[:2], gt.K[:2], gt.t[:2], np.array([0, 42]), metric=True)
    with pytest.raises(CameraError, match=r"\[42\]"):
        evaluate_cameras(stray, gt)


def test_static_prediction_aligns_without_a_scale():
    gt_c2w = _curved_path(5)
    static = np.tile(gt_c2w[:1], (5, 1, 1))
    aligned, scale = align_trajectories(static, gt_c2w, "sim3")
    assert scale == 1.0 and np.isfinite(aligned).all()
    np.testing.assert_allclose(aligned[:, :3, 3], np.tile(gt_c2w[:, :3, 3].mean(axis=0), (5, 1)), atol=1e-9)


def test_depth_abs_rel():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, size=(3, 8, 10)).astype(np.float32)
    assert depth_abs_rel(gt * 1.1, gt) == pytest.approx(0.1, rel=1e-5)
    pred = gt.copy()
    pred[0, 0, 0] = 100.0
    valid = np.ones_like(gt, dtype=bool)
    valid[0, 0, 0] = False
    assert depth_abs_rel(pred, gt, valid) == pytest.approx(0.0, abs=1e-7)
    assert depth_abs_rel(pred, gt) > 0.0
    with pytest.raises(ValueError, match="shape"):
        depth_abs_rel(gt[:2], gt)
    with pytest.raises(ValueError, match="no pixel"):
        depth_abs_rel(gt, gt, np.zeros_like(valid))


def test_plot_is_written(tmp_path):
    gt_c2w = _curved_path(30)
    rng = np.random.default_rng(1)
    pred_c2w = gt_c2w.copy()
    pred_c2w[:, :3, 3] = 0.8 * pred_c2w[:, :3, 3] + rng.normal(0, 0.03, size=(30, 3))
    plot_trajectories(_cameras(pred_c2w, np.linspace(100, 120, 30), metric=False),
                      _cameras(gt_c2w, np.linspace(100, 130, 30)), tmp_path / "plots" / "trajectory.png")
    with Image.open(tmp_path / "plots" / "trajectory.png") as image:
        assert image.format == "PNG" and image.size == (1100, 450)
        assert np.asarray(image.convert("L")).std() > 10  # something is drawn


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wmkit")
    eval_cli.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_scores_files_and_reports_bad_input(tmp_path, capsys):
    gt_c2w = _curved_path(12)
    _cameras(gt_c2w).save(str(tmp_path / "gt.npz"))
    _cameras(_similarity(gt_c2w, 1.2, np.eye(3), np.zeros(3))).save(str(tmp_path / "pred.npz"))
    code = _cli(["eval", "cameras", str(tmp_path / "pred.npz"), str(tmp_path / "gt.npz"),
                 "--png", str(tmp_path / "t.png"), "--json", str(tmp_path / "m.json")])
    assert code == 0 and (tmp_path / "t.png").stat().st_size > 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["scale_err"] == pytest.approx(1 - 1 / 1.2) and "ate_sim3_m" in capsys.readouterr().out

    depth = np.full((2, 4, 6), 2.0, dtype=np.float32)
    np.savez(tmp_path / "gt_depth.npz", depth=depth, valid=np.ones_like(depth, dtype=bool))
    np.savez(tmp_path / "pred_depth.npz", depth=depth * 1.25)
    code = _cli(["eval", "depth", str(tmp_path / "pred_depth.npz"), str(tmp_path / "gt_depth.npz"),
                 "--json", str(tmp_path / "d.json")])
    assert code == 0 and json.loads((tmp_path / "d.json").read_text())["depth_abs_rel"] == pytest.approx(0.25)

    code = _cli(["eval", "cameras", str(tmp_path / "missing.npz"), str(tmp_path / "gt.npz")])
    assert code == 2 and "missing.npz" in capsys.readouterr().err
