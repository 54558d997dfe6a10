"""Pi3X in wmkit: strict checkpoint loading, geometric invariants, windowed inference, the backend.

Uses the tiny config with random weights (no upstream code, no network).
Parity with upstream at the official size is bench/parity/pi3x_parity.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wmkit.annotate.backends.registry import BACKENDS, make_backend
from wmkit.annotate.geometry.pi3x_inference import (
    WindowConfig,
    intrinsics_from_points,
    pi3x_input_size,
    predict_video,
    run_windows,
    weighted_sim3,
)
from wmkit.annotate.geometry.pi3x_loader import CheckpointError, load_Pi3X
from wmkit.annotate.geometry.pi3x_model import Pi3X, Pi3XConfig

import wmkit.annotate.backends.pi3x  # noqa: F401  (registers "pi3x" until backends/__init__ imports it)

TINY = Pi3XConfig.tiny()
SMALL_WINDOWS = WindowConfig(window=6, overlap=2, pixel_budget=28 * 42, align_stride=2)


@pytest.fixture(scope="module")
def tiny_model() -> Pi3X:
    torch.manual_seed(0)
    model = Pi3X(TINY).eval()
    with torch.no_grad():  # perturb every weight so each one changes the output
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _make_pinhole(model: Pi3X) -> Pi3X:
    """Set the point head so local points are (u, v, 1) on the view-plane UV grid: a true pinhole camera.

    Output block 0 (xy): its 3x3 conv passes the UV channels (+1, so ReLU keeps them) through its
    centre tap and the 1x1 conv subtracts the 1 again; output block 1 (log z) is zero, so z = 1.
    Random weights elsewhere keep poses, conf and the metric scale non-trivial.
    """
    c = TINY.upsample_dims[-1]  # feature channels before the 2 UV channels
    xy_conv, _, xy_out = model.point_head.output_block[0]
    with torch.no_grad():
        xy_conv.weight.zero_(), xy_conv.bias.zero_()
        xy_conv.weight[0, c, 1, 1] = xy_conv.weight[1, c + 1, 1, 1] = 1.0
        xy_conv.bias[:2] = 1.0
        xy_out.weight.zero_()
        xy_out.weight[0, 0] = xy_out.weight[1, 1] = 1.0
        xy_out.bias.fill_(-1.0)
        for p in model.point_head.output_block[1].parameters():
            p.zero_()
    return model


@pytest.fixture(scope="module")
def pinhole_model() -> Pi3X:
    torch.manual_seed(1)
    return _make_pinhole(Pi3X(TINY).eval())


@pytest.fixture(scope="module")
def tiny_weights(tiny_model, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pi3x") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    return str(path)


def _frames(T: int, H: int = 30, W: int = 44, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


# --- checkpoints ------------------------------------------------------------------------------


def test_safetensors_round_trip_is_strict_and_exact(tiny_model, tiny_weights):
    loaded = load_Pi3X(tiny_weights, TINY)
    images = torch.rand(1, 3, 3, 28, 42)
    with torch.no_grad():
        a, b = tiny_model(images), loaded(images)
    for name in ("points", "local_points", "conf", "camera_poses", "metric"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)


def test_pt_checkpoint_loads_with_weights_only(tiny_model, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    loaded = load_Pi3X(path, TINY)
    torch.testing.assert_close(loaded.metric_token, tiny_model.metric_token)


def test_conditioning_branch_keys_are_set_aside(tiny_model, tmp_path):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    state["depth_emb"] = torch.zeros(1, 1, TINY.dec_dim)
    state["pose_inject_blk.0.attn.qkv.weight"] = torch.zeros(3 * TINY.dec_dim, TINY.dec_dim)
    save_file(state, str(tmp_path / "with_priors.safetensors"))
    load_Pi3X(tmp_path / "with_priors.safetensors", TINY)


def test_missing_key_is_refused_with_its_name(tiny_model, tmp_path):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    del state["camera_head.fc_rot.weight"], state["encoder.cls_token"]
    path = tmp_path / "missing.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"2 missing key\(s\): camera_head.fc_rot.weight, encoder.cls_token") as err:
        load_Pi3X(path, TINY)
    assert str(path) in str(err.value)


def test_unexpected_key_is_refused_with_its_name(tiny_model, tmp_path):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    state["decoder.99.norm1.weight"] = torch.ones(TINY.dec_dim)
    path = tmp_path / "unexpected.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): decoder.99.norm1.weight"):
        load_Pi3X(path, TINY)


def test_shape_mismatch_and_missing_file_are_named(tiny_weights, tmp_path):
    with pytest.raises(CheckpointError, match=r"file-vs-model shape key\(s\): camera_decoder.linear_out.bias \(32,\) vs \(64,\)"):
        load_Pi3X(tiny_weights, dataclasses.replace(TINY, camera_dim=64))
    with pytest.raises(CheckpointError, match=r"'/nonexistent/pi3x.safetensors' does not exist"):
        load_Pi3X("/nonexistent/pi3x.safetensors", TINY)


# --- geometry helpers -------------------------------------------------------------------------


def test_input_size_is_patch_multiple_within_budget_and_keeps_aspect():
    for H, W in [(720, 1280), (1080, 1920), (480, 640), (1280, 720), (100, 100)]:
        h, w = pi3x_input_size(H, W)
        assert h % 14 == 0 and w % 14 == 0 and h * w <= 255_000
        assert abs(np.log((w / h) / (W / H))) < 0.05


def test_intrinsics_from_points_reprojects_to_the_pixel_grid():
    H, W = 12, 16
    K = np.array([[20.0, 0, 7.3], [0, 18.0, 5.9], [0, 0, 1]])
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    z = np.random.default_rng(1).uniform(1.0, 5.0, (H, W))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    points = (rays * z[..., None])[None]
    weights = np.ones((1, H, W))
    weights[0, 0, 0] = 0.0
    points[0, 0, 0] = [100.0, -50.0, 2.0]  # an outlier with zero confidence does not move the fit
    K_fit = intrinsics_from_points(points, weights)[0]
    np.testing.assert_allclose(K_fit, K, atol=1e-9)
    proj = points[0] @ K_fit.T
    np.testing.assert_allclose(proj[1:, :, 0] / proj[1:, :, 2], u[1:], atol=1e-9)
    np.testing.assert_allclose(proj[1:, :, 1] / proj[1:, :, 2], v[1:], atol=1e-9)


def test_weighted_sim3_recovers_a_similarity_and_ignores_zero_weight_points():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(50, 3))
    angle = 0.7
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    dst = 2.5 * src @ R.T + np.array([1.0, -2.0, 0.5])
    w = np.ones(50)
    dst[:5] += 10.0
    w[:5] = 0.0
    T = weighted_sim3(src, dst, w)
    np.testing.assert_allclose(T[:3, :3], 2.5 * R, atol=1e-9)
    np.testing.assert_allclose(T[:3, 3], [1.0, -2.0, 0.5], atol=1e-9)


# --- inference --------------------------------------------------------------------------------


def test_predict_video_invariants(tiny_model):
    T, H, W = 13, 30, 44
    out = predict_video(tiny_model, _frames(T, H, W), SMALL_WINDOWS)
    assert out["depth"].shape == (T, H, W) and out["c2w"].shape == (T, 4, 4) and out["K"].shape == (T, 3, 3)
    np.testing.assert_allclose(out["c2w"][0], np.eye(4), atol=1e-12)  # poses relative to the first frame
    assert (out["depth"] > 0).all()
    assert (out["conf"] >= 0).all() and (out["conf"] <= 1).all()
    R = out["c2w"][:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)


def test_windows_cover_every_frame_once_with_at_most_window_frames_per_call(tiny_model, monkeypatch):
    calls = []
    forward = Pi3X.forward

    def counting_forward(self, images):
        calls.append(images.shape[1])
        return forward(self, images)

    monkeypatch.setattr(Pi3X, "forward", counting_forward)
    indices = [f.index for f in run_windows(tiny_model, iter(_frames(17)), SMALL_WINDOWS)]
    assert indices == list(range(17))
    assert calls == [6, 6, 6, 5]  # frames 0-5, 4-9, 8-13, then the tail 12-16 (2 known + 3 new)


def test_window_alignment_maps_the_overlap_onto_the_previous_window(tiny_model):
    """With a window as long as the video the chained result must match the single-window result on a static clip."""
    frames = np.repeat(_frames(1), 10, axis=0)  # a static camera: every window sees the same image
    chained = predict_video(tiny_model, frames, SMALL_WINDOWS)
    single = predict_video(tiny_model, frames, WindowConfig(window=10, overlap=2, pixel_budget=28 * 42))
    np.testing.assert_allclose(chained["depth"], single["depth"], rtol=1e-3)
    np.testing.assert_allclose(chained["c2w"], single["c2w"], atol=1e-3)


def _peak_bytes(model: Pi3X, T: int) -> int:
    frames = (_frames(1, seed=i)[0] for i in range(T))  # frames decoded lazily, results consumed and dropped
    tracemalloc.start()
    for geometry in run_windows(model, frames, SMALL_WINDOWS):
        del geometry
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_windowed_memory_is_flat_in_video_length(tiny_model):
    short, long = _peak_bytes(tiny_model, 14), _peak_bytes(tiny_model, 38)
    assert long < 1.25 * short, (short, long)


# --- backend ----------------------------------------------------------------------------------


def test_model_points_give_intrinsics_that_reproject_them_to_the_pixel_grid(pinhole_model):
    with torch.no_grad():
        out = pinhole_model(torch.rand(1, 2, 3, 28, 42))
    local = out.local_points[0].double().numpy()
    assert (local[..., 2] > 0).all()
    K = intrinsics_from_points(local, np.ones(local.shape[:3]))
    assert (K[:, 0, 0] > 0).all() and (K[:, 1, 1] > 0).all()
    np.testing.assert_allclose(K[:, :2, 2], np.broadcast_to([20.5, 13.5], (2, 2)), atol=1e-6)  # centred grid
    proj = np.einsum("nij,nhwj->nhwi", K, local)
    v, u = np.mgrid[0:28, 0:42]
    np.testing.assert_allclose(proj[..., 0] / proj[..., 2], np.broadcast_to(u, (2, 28, 42)), atol=1e-4)
    np.testing.assert_allclose(proj[..., 1] / proj[..., 2], np.broadcast_to(v, (2, 28, 42)), atol=1e-4)


def test_backend_registers_loads_hashes_and_predicts(pinhole_model, tmp_path):
    tiny_weights = str(tmp_path / "pinhole.safetensors")
    save_file({k: v.contiguous() for k, v in pinhole_model.state_dict().items()}, tiny_weights)
    assert "pi3x" in BACKENDS
    backend = make_backend("pi3x", weights=tiny_weights, device="cpu", window=6, overlap=2,
                           pixel_budget=28 * 42, config=TINY)
    backend.setup()
    with open(tiny_weights, "rb") as f:
        assert backend.weights_sha256 == hashlib.sha256(f.read()).hexdigest()
    frames = _frames(8)
    pred = backend.predict(frames, "clip_a")
    assert pred.backend == "pi3x" and not pred.metric
    np.testing.assert_allclose(pred.c2w[0], np.eye(4), atol=1e-12)
    assert (pred.depth > 0).all()
    H, W = frames.shape[1:3]  # the network saw 28 x 42; K is rescaled to the 30 x 44 input pixels
    np.testing.assert_allclose(pred.K[:, 0, 2], (W - 1) / 2, atol=1e-5)
    np.testing.assert_allclose(pred.K[:, 1, 2], (H - 1) / 2, atol=1e-5)
