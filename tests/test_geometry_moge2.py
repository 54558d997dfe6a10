"""MoGe-2 in wmkit on the tiny config: strict checkpoints, geometry invariants, flat memory, the backend.

Parity with the upstream code at the published size is bench/parity/moge2_parity.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wmkit.annotate.backends import make_backend
from wmkit.annotate.backends.moge2 import MoGe2Backend
from wmkit.annotate.geometry.moge2_config import MoGe2Config
from wmkit.annotate.geometry.moge2_geometry import depth_to_points, intrinsics_px, recover_focal_shift
from wmkit.annotate.geometry.moge2_infer import infer_moge2, iter_moge2, num_tokens_for
from wmkit.annotate.geometry.moge2_load import CheckpointError, load_moge2, save_moge2
from wmkit.annotate.geometry.moge2_model import MoGe2Model
from wmkit.annotate.types import AnnotateError


FOCAL = 1.25  # half-diagonal units: the focal of the camera-like tiny model below


def _tiny_model(seed: int = 0, normal_head: bool = False) -> MoGe2Model:
    """Tiny MoGe-2 with random weights, rewired to see through a pinhole camera of focal FOCAL.

    Random weights give point maps no camera could see (the fit may return a
    negative focal). Here the last pyramid level of the neck and the points head
    keep only the view-plane (u, v) input: raw points = (u / FOCAL, v / FOCAL, 0.7 + u / 2),
    so after the ``exp`` remap xy / z = uv / FOCAL, a projective map with shift 0.
    The mask head is biased towards 'valid'; mask and metric scale still depend
    on the image through the encoder.
    """
    torch.manual_seed(seed)
    model = MoGe2Model(MoGe2Config.tiny(normal_head=normal_head)).eval()
    with torch.no_grad():
        for stack in (model.neck, model.points_head):
            stack.resamplers[-1][1].weight.zero_()
            stack.resamplers[-1][1].bias.zero_()
        uv_in = model.neck.input_blocks[-1]  # 2 uv channels -> 4 channels
        uv_in.weight.zero_(), uv_in.bias.zero_()
        uv_in.weight[0, 0, 0, 0] = uv_in.weight[1, 1, 0, 0] = 1.0
        head_in, head_out = model.points_head.input_blocks[-1], model.points_head.output_blocks[-1]
        head_in.weight.copy_(torch.eye(4).view(4, 4, 1, 1)), head_in.bias.zero_()
        head_out.weight.zero_(), head_out.bias.zero_()
        head_out.weight[0, 0, 0, 0] = head_out.weight[1, 1, 0, 0] = 1.0 / FOCAL
        head_out.weight[2, 0, 0, 0], head_out.bias[2] = 0.5, 0.7  # z = exp(0.7 + u / 2): a slanted plane
        model.mask_head.output_blocks[-1].bias.fill_(4.0)
    return model


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("moge2") / "tiny.safetensors"
    return save_moge2(_tiny_model(normal_head=True), path)


def test_safetensors_round_trip_is_exact(tiny_ckpt):
    model = _tiny_model(normal_head=True)
    loaded = load_moge2(tiny_ckpt)
    assert loaded.cfg == model.cfg and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    image = torch.rand(2, 3, 30, 44)
    with torch.no_grad():
        want, got = model(image, 24), loaded(image, 24)
    assert set(got) == {"points", "mask", "metric_scale", "normal"}
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def _state(model: MoGe2Model) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def test_loader_refuses_missing_keys_and_lists_them(tmp_path):
    model = _tiny_model()
    state = _state(model)
    dropped = ["scale_head.2.bias", "encoder.backbone.blocks.1.ls2.gamma"]
    for k in dropped:
        del state[k]
    path = tmp_path / "missing.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        load_moge2(path, config=model.cfg)
    msg = str(err.value)
    assert "2 missing keys" in msg and all(k in msg for k in dropped) and str(path) in msg
    assert "unexpected" not in msg


def test_loader_refuses_unexpected_keys_and_counts_them(tmp_path):
    model = _tiny_model()
    state = _state(model)
    extras = {f"extra_head.{i}.weight": torch.zeros(2) for i in range(10)}
    path = tmp_path / "unexpected.pt"
    torch.save({**state, **extras}, path)
    with pytest.raises(CheckpointError) as err:
        load_moge2(path, config=model.cfg)
    msg = str(err.value)
    assert "10 unexpected keys" in msg and "extra_head.0.weight" in msg and "(+2 more)" in msg
    assert "missing" not in msg


def test_loader_refuses_wrong_shapes_and_missing_file(tmp_path):
    model = _tiny_model()
    state = _state(model)
    state["scale_head.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "shape.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"1 shape-mismatched keys: scale_head.0.weight \(3, 3\)"):
        load_moge2(path, config=model.cfg)
    gone = tmp_path / "nowhere" / "moge2.safetensors"
    with pytest.raises(CheckpointError, match=f"{gone} does not exist"):
        load_moge2(gone)


def test_official_pt_layout_and_upstream_config_round_trip(tmp_path):
    # The official files are {"model_config": upstream dict, "model": state dict}; a bare
    # state dict without a config takes the config given.
    model = _tiny_model()
    path = tmp_path / "bare.pt"
    torch.save(_state(model), path)
    loaded = load_moge2(path, config=model.cfg)
    assert torch.equal(loaded.scale_head[0].weight, model.scale_head[0].weight)
    for normal in (False, True):
        cfg = MoGe2Config.vitl(normal_head=normal)
        assert MoGe2Config.from_upstream(cfg.to_upstream()) == cfg
    upstream = MoGe2Config.vitl().to_upstream()
    assert upstream["encoder"] == {"backbone": "dinov2_vitl14", "intermediate_layers": [5, 11, 17, 23], "dim_out": 1024}
    assert upstream["neck"]["dim_in"] == [1026, 2, 2, 2, 2] and upstream["remap_output"] == "exp"


def test_official_key_layout():
    # A few names from the published checkpoints' state dict (microsoft/MoGe MoGeModel).
    with torch.device("meta"):
        keys = set(MoGe2Model(MoGe2Config.vitl(normal_head=True)).state_dict())
    for k in ("encoder.backbone.pos_embed", "encoder.backbone.mask_token", "encoder.backbone.blocks.23.ls2.gamma",
              "encoder.output_projections.3.weight", "encoder.image_mean", "neck.input_blocks.0.weight",
              "neck.res_blocks.1.1.layers.5.weight", "neck.resamplers.3.1.weight", "points_head.output_blocks.4.bias",
              "normal_head.res_blocks.3.0.layers.2.weight", "mask_head.resamplers.0.0.weight", "scale_head.4.weight"):
        assert k in keys, k
    assert not any("register_tokens" in k for k in keys)


def test_focal_shift_recovered_from_a_projective_point_map():
    # Points of a pinhole camera (focal f, centre at the image centre) with z shifted by -s:
    # the solver must return f and s.
    H, W, f_px, shift = 48, 64, 70.0, 0.8
    depth = torch.from_numpy(np.random.default_rng(1).uniform(2.0, 5.0, (1, H, W))).float()
    K = intrinsics_px(torch.tensor([f_px / (0.5 * (H**2 + W**2) ** 0.5)]), H, W)
    points = depth_to_points(depth, K)
    points[..., 2] -= shift
    focal, got_shift = recover_focal_shift(points)
    assert intrinsics_px(focal, H, W)[0, 0, 0].item() == pytest.approx(f_px, rel=1e-4)
    assert got_shift.item() == pytest.approx(shift, rel=1e-4)


def test_inference_invariants_on_odd_sizes():
    model = _tiny_model(seed=3)
    H, W = 37, 53  # not patch multiples: the encoder resizes, outputs come back at 37 x 53
    images = torch.from_numpy(_frames(3, H, W)).permute(0, 3, 1, 2).float() / 255
    out = infer_moge2(model, images, num_tokens=num_tokens_for(model.cfg, 9))
    assert out["depth"].shape == out["mask"].shape == out["valid"].shape == (3, H, W)
    assert ((out["mask"] >= 0) & (out["mask"] <= 1)).all()
    assert (out["metric_scale"] > 0).all()
    valid = out["valid"]
    assert valid.float().mean() > 0.5
    assert (out["depth"][valid] > 0).all() and (out["depth"][~valid] == 0).all()
    K = out["K"]
    assert torch.allclose(K[:, 0, 2], torch.full((3,), W / 2)) and torch.allclose(K[:, 1, 2], torch.full((3,), H / 2))
    assert torch.equal(K[:, 0, 0], K[:, 1, 1])
    torch.testing.assert_close(K[:, 0, 0], torch.full((3,), FOCAL * 0.5 * (H**2 + W**2) ** 0.5), rtol=0.02, atol=0)
    # The returned points project through K onto their own pixel centres at their depth.
    P = out["points"][valid]
    b, v, u = torch.nonzero(valid, as_tuple=True)
    fx, cx, cy = K[b, 0, 0], K[b, 0, 2], K[b, 1, 2]
    torch.testing.assert_close(fx * P[:, 0] / P[:, 2] + cx, u.float() + 0.5, rtol=0, atol=1e-3)
    torch.testing.assert_close(fx * P[:, 1] / P[:, 2] + cy, v.float() + 0.5, rtol=0, atol=1e-3)
    torch.testing.assert_close(P[:, 2], out["depth"][valid])
    # And the focal agrees with MoGe's own point map: refitting its shifted points gives the same focal.
    raw = model(images, num_tokens=num_tokens_for(model.cfg, 9))
    focal, _ = recover_focal_shift(raw["points"], raw["mask"] > 0.5)
    torch.testing.assert_close(intrinsics_px(focal, H, W), K)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_iter_moge2_memory_is_flat_in_video_length():
    model = _tiny_model()
    H, W = 96, 128  # each frame's results are ~0.3 MB, so keeping them would show
    frame = _frames(1, H, W)[0]

    def peak_rss(num_frames: int) -> tuple[int, int]:
        peak, seen = 0, 0
        for out in iter_moge2(model, (frame for _ in range(num_frames)), batch_size=4, num_tokens=24):
            seen += len(out.depth)
            peak = max(peak, _rss_bytes())
        return peak, seen

    peak_rss(8)  # warm up allocators
    short, n_short = peak_rss(8)
    long, n_long = peak_rss(160)
    assert (n_short, n_long) == (8, 160)
    kept = 160 * H * W * (4 * 5 + 1)  # what 160 frames of depth, mask, points and valid would hold
    assert long - short < kept / 4, f"RSS grew {(long - short) / 1e6:.1f} MB over 152 more frames"


def test_iter_moge2_batches_cover_every_frame_in_order():
    model = _tiny_model()
    frames = _frames(7, 28, 28)
    outs = list(iter_moge2(model, frames, batch_size=3, num_tokens=16))
    assert [o.start for o in outs] == [0, 3, 6] and [len(o.depth) for o in outs] == [3, 3, 1]
    single = next(iter_moge2(model, frames[4:5], batch_size=1, num_tokens=16))
    np.testing.assert_allclose(outs[1].depth[1], single.depth[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="frame 2: size"):
        list(iter_moge2(model, [frames[0], frames[1], _frames(1, 20, 28)[0]], batch_size=4, num_tokens=16))


def test_backend_predicts_a_valid_metric_prediction(tiny_ckpt):
    backend = make_backend("moge2", weights=str(tiny_ckpt), batch_size=2, num_tokens=16, device="cpu")
    assert isinstance(backend, MoGe2Backend)
    backend.setup()
    assert backend.weights_sha256 == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    frames = _frames(5, 30, 40)
    pred = backend.predict(frames, "clip_a").validate("clip_a", 5, (30, 40))
    assert pred.metric and pred.c2w is None and pred.backend == "moge2"
    assert (pred.conf > 0).any() and (pred.depth[pred.conf > 0] > 0).all()
    with pytest.raises(AnnotateError, match="clip 'clip_b'.*uint8"):
        backend.predict(frames.astype(np.float32), "clip_b")


def test_backend_setup_names_a_missing_weight_file(tmp_path):
    backend = make_backend("moge2", weights=str(tmp_path / "absent.safetensors"))
    with pytest.raises(AnnotateError, match="absent.safetensors does not exist"):
        backend.setup()
