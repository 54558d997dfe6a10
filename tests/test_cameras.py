"""Tests for wmkit.datasets.cameras: conventions, conversions, interpolation, validity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from wmkit.datasets.cameras import (
    CameraError,
    Cameras,
    from_colmap,
    from_nerfstudio,
    from_omniworld,
    from_sekai_game,
    from_spatialvid,
    interpolate_cameras,
    intrinsics_from_normalized,
    intrinsics_to_normalized,
    invert_rigid,
    matrix_to_quat,
    nerfstudio_distortion,
    opencv_to_opengl,
    opengl_to_opencv,
    quat_to_matrix,
    to_colmap,
    to_nerfstudio,
    to_omniworld,
    to_sekai_game,
    to_spatialvid,
)

BATCH_DIMS = [(), (2,), (1, 2)]
W, H, FPS = 64, 48, 16.0

# A hand-built camera at (1, 2, 3) looking along world +x with world +z up.
# OpenCV camera axes in world coordinates: x (right) = -y_w, y (down) = -z_w, z (forward) = +x_w.
CENTRE = np.array([1.0, 2.0, 3.0])
R_LOOK_X = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: x, y, z axes
C2W_LOOK_X = np.block([[R_LOOK_X, CENTRE[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
# Its world-to-camera written by hand: R^T and -R^T c, quaternion of R^T (w, x, y, z).
W2C_T_LOOK_X = np.array([2.0, 3.0, -1.0])
W2C_Q_WXYZ_LOOK_X = np.array([0.5, 0.5, -0.5, 0.5])
K_HAND = np.array([[32.0, 0.0, 30.0], [0.0, 40.0, 25.0], [0.0, 0.0, 1.0]])
# The nerfstudio default applied_transform (colmap_to_json): x' = x, y' = z, z' = -y.
NS_APPLIED = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]])


def random_cameras(T: int = 9, seed: int = 0, metric: bool = False) -> Cameras:
    """Random valid cameras at frames 0..T-1 with t = frame_index / FPS."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    c2w[:, :3, :3] = Rotation.random(T, rng=rng).as_matrix()
    c2w[:, :3, 3] = rng.normal(size=(T, 3)) * 3.0
    K = np.tile(np.eye(3), (T, 1, 1))
    K[:, 0, 0] = rng.uniform(30, 90, T)
    K[:, 1, 1] = rng.uniform(30, 90, T)
    K[:, 0, 2] = W / 2 + rng.normal(size=T)
    K[:, 1, 2] = H / 2 + rng.normal(size=T)
    idx = np.arange(T)
    return Cameras(c2w=c2w, K=K, t=idx / FPS, frame_index=idx, metric=metric).validate()


def assert_same_cameras(got: Cameras, want: Cameras, atol: float = 1e-9) -> None:
    np.testing.assert_allclose(got.c2w, want.c2w, atol=atol)
    np.testing.assert_allclose(got.K, want.K, atol=atol)
    np.testing.assert_allclose(got.t, want.t, atol=atol)
    np.testing.assert_array_equal(got.frame_index, want.frame_index)
    assert got.metric == want.metric


def rot_z(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


# ---------------------------------------------------------------------------
# Elementwise conversions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_dims", BATCH_DIMS)
@pytest.mark.parametrize("order", ["wxyz", "xyzw"])
def test_quat_matrix_round_trip(batch_dims, order):
    rng = np.random.default_rng(1)
    q = rng.normal(size=batch_dims + (4,))
    R = quat_to_matrix(q, order)
    assert R.shape == batch_dims + (3, 3)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    q2 = matrix_to_quat(R, order)
    assert q2.shape == batch_dims + (4,)
    q_unit = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w = q_unit[..., 0] if order == "wxyz" else q_unit[..., 3]
    np.testing.assert_allclose(q2, q_unit * np.sign(w)[..., None], atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q2, order), R, atol=1e-12)


@pytest.mark.parametrize(
    "axis, deg, R_want",
    [
        ("z", 90, [[0, -1, 0], [1, 0, 0], [0, 0, 1]]),
        ("x", 90, [[1, 0, 0], [0, 0, -1], [0, 1, 0]]),
        ("y", 180, [[-1, 0, 0], [0, 1, 0], [0, 0, -1]]),
    ],
)
def test_quat_known_rotations(axis, deg, R_want):
    half = np.deg2rad(deg) / 2
    vec = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}[axis]
    q_wxyz = np.array([np.cos(half), *(np.sin(half) * np.array(vec))])
    np.testing.assert_allclose(quat_to_matrix(q_wxyz, "wxyz"), R_want, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(np.roll(q_wxyz, -1), "xyzw"), R_want, atol=1e-12)
    # Unnormalised input is normalised first.
    np.testing.assert_allclose(quat_to_matrix(5.0 * q_wxyz, "wxyz"), R_want, atol=1e-12)


def test_matrix_to_quat_sign_is_canonical():
    q_neg = np.array([-0.5, 0.5, -0.5, 0.5])  # w < 0: same rotation as -q
    R = quat_to_matrix(q_neg, "wxyz")
    np.testing.assert_allclose(matrix_to_quat(R, "wxyz"), -q_neg, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(R, "xyzw"), np.roll(-q_neg, -1), atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(np.eye(3), "wxyz"), [1, 0, 0, 0], atol=1e-12)


@pytest.mark.parametrize("bad", [np.zeros(4), np.array([np.nan, 0, 0, 1]), np.array([np.inf, 0, 0, 1])])
def test_quat_to_matrix_rejects_degenerate(bad):
    q = np.stack([np.array([1.0, 0, 0, 0]), bad])
    with pytest.raises(CameraError, match=r"poses of clip_a.*index \[1\]"):
        quat_to_matrix(q, "wxyz", name="poses of clip_a")


def test_quat_order_is_checked():
    with pytest.raises(CameraError, match="order"):
        quat_to_matrix(np.array([1.0, 0, 0, 0]), "wzyx")


@pytest.mark.parametrize("batch_dims", BATCH_DIMS)
def test_invert_rigid(batch_dims):
    rng = np.random.default_rng(2)
    n = int(np.prod(batch_dims, dtype=int))
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, rng=rng).as_matrix()
    T[:, :3, 3] = rng.normal(size=(n, 3))
    T = T.reshape(batch_dims + (4, 4))
    T_inv = invert_rigid(T)
    assert T_inv.shape == T.shape
    np.testing.assert_allclose(T_inv, np.linalg.inv(T), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(T_inv), T, atol=1e-12)


@pytest.mark.parametrize("batch_dims", BATCH_DIMS)
def test_opengl_opencv_flip(batch_dims):
    rng = np.random.default_rng(3)
    c2w = np.broadcast_to(C2W_LOOK_X, batch_dims + (4, 4)) + 0.0
    c2w[..., :3, 3] += rng.normal(size=batch_dims + (3,))
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    np.testing.assert_allclose(opengl_to_opencv(c2w), c2w @ flip, atol=0)
    np.testing.assert_allclose(opencv_to_opengl(opengl_to_opencv(c2w)), c2w, atol=0)
    # The camera centre does not move.
    np.testing.assert_array_equal(opengl_to_opencv(c2w)[..., :3, 3], c2w[..., :3, 3])
    # (3, 4) poses are accepted too.
    np.testing.assert_allclose(opengl_to_opencv(c2w[..., :3, :]), (c2w @ flip)[..., :3, :], atol=0)


def test_opengl_identity_looks_along_minus_z():
    """An OpenGL camera with identity rotation looks along world -z: OpenCV rotation is diag(1, -1, -1)."""
    c2w_cv = opengl_to_opencv(np.eye(4))
    np.testing.assert_array_equal(c2w_cv[:3, :3], np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_array_equal(c2w_cv[:3, 2], [0.0, 0.0, -1.0])  # OpenCV forward axis in world


@pytest.mark.parametrize("batch_dims", BATCH_DIMS)
def test_intrinsics_normalized_round_trip(batch_dims):
    rng = np.random.default_rng(4)
    f = rng.uniform(0.2, 1.5, size=batch_dims + (4,))
    K = intrinsics_from_normalized(f, W, H)
    assert K.shape == batch_dims + (3, 3)
    np.testing.assert_allclose(K[..., 0, 0], f[..., 0] * W)
    np.testing.assert_allclose(K[..., 1, 1], f[..., 1] * H)
    np.testing.assert_allclose(K[..., 0, 2], f[..., 2] * W)
    np.testing.assert_allclose(K[..., 1, 2], f[..., 3] * H)
    np.testing.assert_array_equal(K[..., 2, :], np.broadcast_to([0.0, 0.0, 1.0], batch_dims + (3,)))
    np.testing.assert_allclose(intrinsics_to_normalized(K, W, H), f, atol=1e-15)


def test_intrinsics_reject_bad_shape_and_size():
    with pytest.raises(CameraError, match="shape"):
        intrinsics_from_normalized(np.ones(3), W, H)
    with pytest.raises(CameraError, match="size"):
        intrinsics_to_normalized(np.eye(3), 0, H)


# ---------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------


def _keys(index, degs, centres, focals):
    c2w = np.tile(np.eye(4), (len(index), 1, 1))
    c2w[:, :3, :3] = [rot_z(d) for d in degs]
    c2w[:, :3, 3] = centres
    K = np.tile(K_HAND, (len(index), 1, 1))
    K[:, 0, 0] = focals
    return c2w, K, np.asarray(index)


def test_interpolation_exact_at_keys():
    cams = random_cameras(T=6, seed=5)
    c2w, K = interpolate_cameras(cams.c2w, cams.K, cams.frame_index * 3, cams.frame_index * 3)
    np.testing.assert_array_equal(c2w, cams.c2w)
    np.testing.assert_array_equal(K, cams.K)


def test_interpolation_midpoint_slerp_and_linear():
    c2w, K, index = _keys([0, 10], [0.0, 90.0], [[0, 0, 0], [10, -20, 4]], [30.0, 50.0])
    out, K_out = interpolate_cameras(c2w, K, index, np.array([0, 2, 5, 10]))
    np.testing.assert_allclose(out[2, :3, :3], rot_z(45.0), atol=1e-12)
    np.testing.assert_allclose(out[1, :3, :3], rot_z(18.0), atol=1e-12)  # constant angular speed
    np.testing.assert_allclose(out[1, :3, 3], [2, -4, 0.8], atol=1e-12)
    np.testing.assert_allclose(out[2, :3, 3], [5, -10, 2], atol=1e-12)
    np.testing.assert_allclose(K_out[:, 0, 0], [30, 34, 40, 50], atol=1e-12)
    np.testing.assert_allclose(out[:, 3], np.tile([0, 0, 0, 1.0], (4, 1)), atol=0)


def test_interpolation_holds_outside_range():
    c2w, K, index = _keys([3, 7, 9], [10.0, 40.0, 80.0], [[0, 0, 0], [1, 1, 1], [2, 0, 5]], [30.0, 40.0, 45.0])
    out, K_out = interpolate_cameras(c2w, K, index, np.array([-4, 0, 2, 3, 9, 10, 30]))
    for j in range(3):
        np.testing.assert_allclose(out[j], c2w[0], atol=1e-12)
        np.testing.assert_allclose(K_out[j], K[0], atol=1e-12)
    for j in range(4, 7):
        np.testing.assert_allclose(out[j], c2w[-1], atol=1e-12)
        np.testing.assert_allclose(K_out[j], K[-1], atol=1e-12)


def test_interpolation_single_key_repeats():
    c2w, K, index = _keys([4], [33.0], [[1, 2, 3]], [44.0])
    out, K_out = interpolate_cameras(c2w, K, index, np.arange(5))
    assert out.shape == (5, 4, 4) and K_out.shape == (5, 3, 3)
    np.testing.assert_array_equal(out, np.repeat(c2w, 5, axis=0))
    np.testing.assert_array_equal(K_out, np.repeat(K, 5, axis=0))


@pytest.mark.parametrize("index", [[0, 5, 5], [0, 6, 3]])
def test_interpolation_rejects_non_increasing_index(index):
    c2w, K, _ = _keys(index, [0.0, 1.0, 2.0], np.zeros((3, 3)), [30.0] * 3)
    with pytest.raises(CameraError, match="strictly increasing"):
        interpolate_cameras(c2w, K, np.asarray(index), np.arange(7))


def test_interpolation_rejects_mismatched_shapes():
    c2w, K, index = _keys([0, 1], [0.0, 1.0], np.zeros((2, 3)), [30.0] * 2)
    with pytest.raises(CameraError, match="expected"):
        interpolate_cameras(c2w, K[:1], index, np.arange(3))


# ---------------------------------------------------------------------------
# Source conventions: round trips
# ---------------------------------------------------------------------------

SPARSE = np.array([0, 2, 3, 7, 8])


@pytest.mark.parametrize("indexes", [np.arange(9), SPARSE], ids=["dense", "sparse"])
def test_spatialvid_round_trip(indexes):
    cams = random_cameras()
    poses, intr = to_spatialvid(cams, indexes, W, H)
    assert poses.shape == (len(indexes), 7) and intr.shape == (len(indexes), 4)
    assert (poses[:, 6] >= 0).all()  # qw last, canonical sign
    back = from_spatialvid(poses, intr, indexes, W, H, FPS, len(cams))
    assert len(back) == len(cams)
    assert_same_cameras(back.select(indexes), cams.select(indexes))
    np.testing.assert_allclose(back.t, cams.t)


@pytest.mark.parametrize("indexes", [np.arange(9), SPARSE], ids=["dense", "sparse"])
def test_sekai_game_round_trip(indexes):
    cams = random_cameras(seed=6)
    c2w, intr = to_sekai_game(cams, indexes, W, H)
    back = from_sekai_game(c2w, intr, indexes, W, H, FPS, len(cams))
    assert_same_cameras(back.select(indexes), cams.select(indexes))
    back34 = from_sekai_game(c2w[:, :3, :], intr, indexes, W, H, FPS, len(cams))
    assert_same_cameras(back34, back, atol=0)


@pytest.mark.parametrize("indexes", [np.arange(9), SPARSE], ids=["dense", "sparse"])
def test_omniworld_round_trip(indexes):
    cams = random_cameras(seed=7, metric=True)
    q, trans, K = to_omniworld(cams, indexes)
    assert (q[:, 0] >= 0).all()  # qw first, canonical sign
    back = from_omniworld(q, trans, K, indexes, FPS, len(cams))
    assert back.metric
    assert_same_cameras(back.select(indexes), cams.select(indexes))


def test_colmap_round_trip():
    cams = random_cameras(seed=8)
    qvec, tvec, K = to_colmap(cams)
    assert_same_cameras(from_colmap(qvec, tvec, K, fps=FPS), cams)


@pytest.mark.parametrize("applied", [None, NS_APPLIED], ids=["plain", "applied_transform"])
def test_nerfstudio_round_trip(applied):
    cams = random_cameras(seed=9)
    transforms = json.loads(json.dumps(to_nerfstudio(cams, W, H, applied_transform=applied)))
    assert transforms["w"] == W and transforms["h"] == H
    assert ("applied_transform" in transforms) == (applied is not None)
    assert_same_cameras(from_nerfstudio(transforms, fps=FPS), cams)


def test_nerfstudio_distortion_round_trip_and_sorting():
    cams = random_cameras(T=4, seed=10)
    dist = np.random.default_rng(0).normal(scale=0.01, size=(4, 4))
    transforms = to_nerfstudio(cams, W, H, distortion=dist)
    assert transforms["camera_model"] == "OPENCV"
    transforms["frames"] = transforms["frames"][::-1]  # readers sort by file_path
    assert_same_cameras(from_nerfstudio(transforms, fps=FPS), cams)
    np.testing.assert_allclose(nerfstudio_distortion(transforms), dist, atol=0)
    # Distortion absent: zeros, and K stays pinhole.
    np.testing.assert_array_equal(nerfstudio_distortion(to_nerfstudio(cams, W, H)), np.zeros((4, 4)))


def test_to_nerfstudio_rejects_unsorted_paths():
    with pytest.raises(CameraError, match="file_paths"):
        to_nerfstudio(random_cameras(T=2), W, H, file_paths=["b.png", "a.png"])


# ---------------------------------------------------------------------------
# Source conventions: hand-built known cases
# ---------------------------------------------------------------------------


def test_spatialvid_known_camera():
    q_xyzw = np.roll(W2C_Q_WXYZ_LOOK_X, -1)
    poses = np.concatenate([W2C_T_LOOK_X, q_xyzw])[None]
    intr = np.array([[0.5, 0.25, 0.5, 0.5]])
    cams = from_spatialvid(poses, intr, np.array([0]), 640, 360, fps=25.0, num_frames=3)
    assert len(cams) == 3 and not cams.metric
    np.testing.assert_allclose(cams.c2w, np.repeat(C2W_LOOK_X[None], 3, 0), atol=1e-12)
    np.testing.assert_allclose(cams.K[0], [[320, 0, 320], [0, 90, 180], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(cams.t, [0, 0.04, 0.08])
    np.testing.assert_array_equal(cams.frame_index, [0, 1, 2])


def test_sekai_game_known_camera():
    intr = np.array([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    cams = from_sekai_game(np.stack([C2W_LOOK_X, C2W_LOOK_X]), intr, np.array([0, 1]), 64, 48, 10.0, 2)
    np.testing.assert_allclose(cams.c2w[0], C2W_LOOK_X, atol=0)
    np.testing.assert_allclose(cams.K[0], [[32, 0, 32], [0, 24, 24], [0, 0, 1]])
    # The camera's forward axis points along world +x: a point ahead projects to the principal point.
    point_cam = invert_rigid(cams.c2w[0]) @ np.array([11.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(point_cam[:3], [0, 0, 10], atol=1e-12)


def test_omniworld_known_camera():
    cams = from_omniworld(W2C_Q_WXYZ_LOOK_X[None], W2C_T_LOOK_X[None], K_HAND, np.array([0]), 30.0, 1)
    np.testing.assert_allclose(cams.c2w[0], C2W_LOOK_X, atol=1e-12)
    np.testing.assert_allclose(cams.K[0], K_HAND)
    assert cams.metric


def test_colmap_known_camera():
    cams = from_colmap(W2C_Q_WXYZ_LOOK_X[None], W2C_T_LOOK_X[None], K_HAND)
    np.testing.assert_allclose(cams.c2w[0], C2W_LOOK_X, atol=1e-12)
    qvec, tvec, _ = to_colmap(cams)
    np.testing.assert_allclose(qvec[0], W2C_Q_WXYZ_LOOK_X, atol=1e-12)
    np.testing.assert_allclose(tvec[0], W2C_T_LOOK_X, atol=1e-12)


def _ns_frame(path, matrix, **intrinsics):
    return {"file_path": path, "transform_matrix": np.asarray(matrix).tolist(), **intrinsics}


def test_nerfstudio_known_camera_and_identity():
    # OpenGL camera axes in world: x right = -y_w, y up = +z_w, z back = -x_w.
    c2w_gl = np.array([[0, 0, -1, 1], [-1, 0, 0, 2], [0, 1, 0, 3], [0, 0, 0, 1]], dtype=float)
    transforms = {
        "fl_x": 32.0, "fl_y": 40.0, "cx": 30.0, "cy": 25.0, "w": 64, "h": 48,
        "frames": [_ns_frame("images/frame_00002.png", np.eye(4)), _ns_frame("images/frame_00001.png", c2w_gl)],
    }  # fmt: skip
    cams = from_nerfstudio(transforms, fps=10.0)
    np.testing.assert_allclose(cams.c2w[0], C2W_LOOK_X, atol=1e-12)
    np.testing.assert_allclose(cams.c2w[1][:3, :3], np.diag([1.0, -1.0, -1.0]), atol=0)
    np.testing.assert_allclose(cams.K, np.repeat(K_HAND[None], 2, 0))


def test_nerfstudio_applied_transform_is_undone():
    # The same camera as written by colmap_to_json: world' = (x, z, -y), so the centre
    # (1, 2, 3) becomes (1, 3, -2) and each camera axis is rotated the same way.
    c2w_file = np.array([[0, 0, -1, 1], [0, 1, 0, 3], [1, 0, 0, -2], [0, 0, 0, 1]], dtype=float)
    transforms = {
        "applied_transform": NS_APPLIED.tolist(),
        "fl_x": 1.0, "fl_y": 1.0, "cx": 0.0, "cy": 0.0,
        "frames": [_ns_frame("a.png", c2w_file[:3], fl_x=32.0, fl_y=40.0, cx=30.0, cy=25.0)],
    }  # fmt: skip
    cams = from_nerfstudio(transforms)
    np.testing.assert_allclose(cams.c2w[0], C2W_LOOK_X, atol=1e-12)
    np.testing.assert_allclose(cams.K[0], K_HAND)  # per-frame intrinsics win over the top level


def test_nerfstudio_missing_intrinsics_names_frame():
    transforms = {"fl_x": 1.0, "fl_y": 1.0, "cx": 0.0, "frames": [_ns_frame("images/x.png", np.eye(4))]}
    with pytest.raises(CameraError, match=r"scene_7.*images/x\.png.*'cy'"):
        from_nerfstudio(transforms, name="scene_7")
    with pytest.raises(CameraError, match="frames"):
        from_nerfstudio({"frames": []}, name="scene_7")


# ---------------------------------------------------------------------------
# Source inputs that must be refused
# ---------------------------------------------------------------------------


def test_source_rejects_indexes_outside_video():
    cams = random_cameras()
    poses, intr = to_spatialvid(cams, SPARSE, W, H)
    with pytest.raises(CameraError, match=r"clip_9.*outside the video's 5 frames"):
        from_spatialvid(poses, intr, SPARSE, W, H, FPS, num_frames=5, name="clip_9")


def test_source_rejects_unsorted_indexes():
    cams = random_cameras()
    q, trans, K = to_omniworld(cams, SPARSE)
    with pytest.raises(CameraError, match=r"scene_3.*strictly increasing"):
        from_omniworld(q, trans, K, SPARSE[::-1], FPS, 9, name="scene_3")


def test_source_rejects_row_mismatch_and_nan_pose():
    cams = random_cameras()
    c2w, intr = to_sekai_game(cams, SPARSE, W, H)
    with pytest.raises(CameraError, match=r"game_1.*intrinsics"):
        from_sekai_game(c2w, intr[:-1], SPARSE, W, H, FPS, 9, name="game_1")
    c2w[2, 0, 3] = np.nan  # the row of frame SPARSE[2] == 3
    with pytest.raises(CameraError, match=r"game_1 \(source frames\): non-finite c2w at frames \[3\]"):
        from_sekai_game(c2w, intr, SPARSE, W, H, FPS, 9, name="game_1")


def test_to_source_rejects_missing_frames():
    with pytest.raises(CameraError, match=r"no frames \[20\]"):
        to_spatialvid(random_cameras(), np.array([1, 20]), W, H)


# ---------------------------------------------------------------------------
# Validity and serialisation of Cameras
# ---------------------------------------------------------------------------


def _broken(field: str, fix) -> Cameras:
    cams = random_cameras(T=5, seed=11)
    arrays = {k: getattr(cams, k).copy() for k in ("c2w", "K", "t", "frame_index")}
    fix(arrays[field])
    return Cameras(**arrays)


@pytest.mark.parametrize(
    "field, fix, message",
    [
        ("c2w", lambda a: a.__setitem__((1, 0, 3), np.nan), r"non-finite c2w at frames \[1\]"),
        ("c2w", lambda a: a.__setitem__((3, 0, 0), np.inf), r"non-finite c2w at frames \[3\]"),
        ("c2w", lambda a: a.__setitem__((2, slice(0, 3), 0), 2 * a[2, :3, 0]), "rotation of frame 2"),
        ("c2w", lambda a: a.__setitem__((4, slice(0, 3), 0), -a[4, :3, 0]), "rotation of frame 4"),
        ("K", lambda a: a.__setitem__((2, 0, 0), 0.0), "non-positive focal length at frame 2"),
        ("K", lambda a: a.__setitem__((1, 1, 1), -5.0), "non-positive focal length at frame 1"),
        ("frame_index", lambda a: a.__setitem__(3, 2), "frame_index is not strictly increasing"),
    ],
    ids=["nan_pose", "inf_pose", "scaled_rotation", "reflection", "zero_focal", "negative_focal", "frame_index"],
)
def test_validate_names_item_and_reason(field, fix, message):
    with pytest.raises(CameraError, match=f"clip_42: .*{message}"):
        _broken(field, fix).validate("clip_42")


def test_npz_round_trip():
    cams = Cameras(**{k: getattr(random_cameras(), k) for k in ("c2w", "K", "t", "frame_index")},
                   metric=True, scale_confidence=0.75)  # fmt: skip
    back = Cameras.from_npz_bytes(cams.to_npz_bytes())
    assert_same_cameras(back, cams, atol=0)
    assert back.scale_confidence == 0.75
    assert back.c2w.dtype == np.float64 and back.frame_index.dtype == np.int64


@pytest.mark.parametrize("data", [b"", b"not an npz at all", b"PK\x03\x04truncated zip"], ids=["empty", "text", "zip"])
def test_from_npz_bytes_rejects_garbage(data):
    with pytest.raises(CameraError, match="clip_5/cameras.npz: unreadable"):
        Cameras.from_npz_bytes(data, name="clip_5/cameras.npz")
