"""The DiFix3D-style refiner on a tiny random diffusers pipeline, and the warped-frame flicker metric."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wmkit.render.random_refiner import write_random_refiner
from wmkit.render.flicker import FlickerError, flicker_before_after, warped_frame_error
from wmkit.render.poses import look_at_c2w, pinhole_K
from wmkit.render.reference_rasterizer import render_views
from wmkit.render.refiner import PROMPT, TIMESTEP, Refiner, RefinerError, load_refiner
from wmkit.render.synthetic_room import make_room_scene


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a shared CPU extra threads cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")  # the refiner's optional dependency; the flicker tests need none
    root = tmp_path_factory.mktemp("difix") / "sd-turbo-tiny"
    write_random_refiner(root)
    return root


@pytest.fixture(scope="module")
def refiner(tiny_dir: Path) -> Refiner:
    return load_refiner(tiny_dir, batch_size=2)


def _frames(seed: int, T: int = 3, H: int = 13, W: int = 11) -> np.ndarray:
    """Smooth random frames (sums of colour sinusoids), uint8 [T, H, W, 3]; odd sizes break the VAE stride."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
    f = sum(rng.uniform(0, 1, (T, 1, 1, 3)) * np.sin(rng.uniform(2, 6) * xx + rng.uniform(2, 6) * yy + k)[None, ..., None]
            for k in range(3))  # fmt: skip
    return np.clip(127.5 + 60 * f, 0, 255).astype(np.uint8)


# --- refiner -----------------------------------------------------------------------------------------


def test_off_is_none() -> None:
    assert load_refiner(None) is None


def test_refine_keeps_shape_dtype_and_is_deterministic(refiner: Refiner) -> None:
    frames = _frames(0)
    rng_state = torch.random.get_rng_state()
    out = refiner.refine(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert refiner.space_stride == 2 and frames.shape[1] % 2 and frames.shape[2] % 2  # padding was needed
    np.testing.assert_array_equal(refiner.refine(frames), out)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # no draw from the global RNG


def test_refine_is_the_one_step_x0_estimate_at_t199(refiner: Refiner, tiny_dir: Path) -> None:
    """refine = decode((z − √(1−ᾱ₁₉₉) ε)/√ᾱ₁₉₉), written out by hand with the folder's own parts."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    frames = _frames(1, T=2, H=12, W=10)  # a multiple of the stride: no padding in the hand version
    tok = CLIPTokenizer.from_pretrained(tiny_dir / "tokenizer")
    ids = tok(PROMPT, max_length=16, padding="max_length", truncation=True, return_tensors="pt").input_ids
    alpha_bar = DDPMScheduler.from_pretrained(tiny_dir / "scheduler").alphas_cumprod[TIMESTEP].double()
    with torch.no_grad():
        text = CLIPTextModel.from_pretrained(tiny_dir / "text_encoder")(ids)[0].expand(2, -1, -1)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        sf = refiner.vae.config.scaling_factor
        z = refiner.vae.encode(x).latent_dist.mean * sf
        eps = refiner.unet(z, torch.tensor([TIMESTEP] * 2), encoder_hidden_states=text).sample
        x0 = ((z.double() - (1 - alpha_bar).sqrt() * eps.double()) / alpha_bar.sqrt()).float()
        assert x0.abs().max() > 1  # so a clip_sample left on would show
        image = refiner.vae.decode(x0 / sf).sample.clamp(-1, 1)
    expected = ((image + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(refiner.refine(frames).astype(int) - expected).max() <= 1


def test_batching_equals_one_frame_at_a_time(refiner: Refiner) -> None:
    frames, refs = _frames(2, T=3), _frames(3, T=3)
    batched, batched_ref = refiner.refine(frames), refiner.refine(frames, reference=refs)
    refiner.batch_size = 1
    try:
        single, single_ref = refiner.refine(frames), refiner.refine(frames, reference=refs)
    finally:
        refiner.batch_size = 2
    assert np.abs(batched.astype(int) - single).max() <= 1
    assert np.abs(batched_ref.astype(int) - single_ref).max() <= 1


def test_reference_view_is_attended_per_sample(refiner: Refiner) -> None:
    """Frame i sees its own reference through joint self-attention, and no other sample's."""
    frames, refs = _frames(4, T=2), _frames(5, T=2)
    plain, with_ref = refiner.refine(frames), refiner.refine(frames, reference=refs)
    assert (plain != with_ref).any()
    other = refs.copy()
    other[1] = 255 - other[1]
    changed = refiner.refine(frames, reference=other)
    np.testing.assert_array_equal(changed[0], with_ref[0])
    assert (changed[1] != with_ref[1]).any()
    shared = refiner.refine(frames, reference=refs[0])  # one [H, W, 3] view for every frame
    np.testing.assert_array_equal(shared[0], with_ref[0])
    # distinct views picked per frame by index = the same views repeated per frame
    indexed = refiner.refine(frames, reference=refs[::-1], reference_index=np.array([1, 0]))
    np.testing.assert_array_equal(indexed, with_ref)
    by_index = refiner.refine(frames, reference=refs[:1], reference_index=np.array([0, 0]))
    np.testing.assert_array_equal(by_index, shared)


def test_bad_frames_are_refused_by_shape(refiner: Refiner) -> None:
    with pytest.raises(RefinerError, match=r"uint8 \[T, H, W, 3\].*float32"):
        refiner.refine(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(RefinerError, match=r"reference .*\(2, 8, 6, 3\)"):
        refiner.refine(np.zeros((2, 8, 8, 3), np.uint8), reference=np.zeros((2, 8, 6, 3), np.uint8))
    with pytest.raises(RefinerError, match=r"reference_index must be 2 ints in \[0, 1\)"):
        refiner.refine(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), np.array([0, 1]))
    with pytest.raises(RefinerError, match=r"reference .*\(3, 8, 8, 3\)"):  # T views for 2 frames, no index
        refiner.refine(np.zeros((2, 8, 8, 3), np.uint8), reference=np.zeros((3, 8, 8, 3), np.uint8))


def test_provenance_holds_weight_sha256(refiner: Refiner, tiny_dir: Path) -> None:
    meta = refiner.provenance()
    unet_file = tiny_dir / "unet/diffusion_pytorch_model.safetensors"
    assert meta["weights"]["unet"] == {unet_file.name: hashlib.sha256(unet_file.read_bytes()).hexdigest()}
    assert set(meta["weights"]) == {"unet", "vae", "text_encoder"}
    assert (meta["prompt"], meta["timestep"], meta["path"]) == ("remove degradation", 199, str(tiny_dir))
    assert len(meta["version"]) == 16 and json.loads(json.dumps(meta)) == meta  # JSON-ready for the sample's json


def test_missing_folder_or_component_is_named(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_refiner(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "scheduler/scheduler_config.json").unlink()
    (broken / "vae/diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_refiner(broken)
    assert str(broken / "scheduler/scheduler_config.json") in str(err.value)
    assert f"{broken / 'vae'}/*.safetensors" in str(err.value) and str(broken / "unet") not in str(err.value)


def test_fp16_variant_files_are_read_and_hashed(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "fp16"
    shutil.copytree(tiny_dir, folder)
    (folder / "unet/diffusion_pytorch_model.safetensors").rename(folder / "unet/diffusion_pytorch_model.fp16.safetensors")
    variant = load_refiner(folder)
    assert list(variant.provenance()["weights"]["unet"]) == ["diffusion_pytorch_model.fp16.safetensors"]
    plain = load_refiner(tiny_dir)
    assert variant.provenance()["version"] == plain.provenance()["version"]  # same content, same version
    frames = _frames(6, T=1)
    np.testing.assert_array_equal(variant.refine(frames), plain.refine(frames))


def test_weights_that_do_not_fit_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    """E.g. DiFix3D's VAE decoder skip convs: refused by key, not silently dropped."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "skip"
    shutil.copytree(tiny_dir, folder)
    weights = folder / "vae/diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["decoder.skip_conv_1.weight"] = torch.zeros(16, 16, 1, 1)
    save_file(state, weights)
    with pytest.raises(RefinerError, match=r"vae.*AutoencoderKL.*unexpected_keys.*decoder\.skip_conv_1\.weight"):
        load_refiner(folder)


# --- flicker -----------------------------------------------------------------------------------------


def test_warp_is_exact_for_a_known_pixel_shift() -> None:
    """A fronto-parallel plane, camera moved right by 2 px worth: frame t+1 is frame t shifted left by 2."""
    H, W, z, f = 6, 9, 2.0, 10.0
    K = np.repeat(np.array([[[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]]), 2, 0)
    c2w = np.repeat(np.eye(4)[None], 2, 0)
    c2w[1, 0, 3] = 2 * z / f  # 2 px at depth z
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    second = np.zeros_like(first)
    second[:, : W - 2] = first[:, 2:]
    result = warped_frame_error(np.stack([first, second]), np.full((2, H, W), z), c2w, K)
    assert result.per_pair[0] == pytest.approx(0.0, abs=1e-4)
    assert result.valid_fraction[0] == pytest.approx((W - 2) / W)
    second[:, : W - 2] = first[:, 1:-1]  # wrong by one pixel: the error shows
    assert warped_frame_error(np.stack([first, second]), np.full((2, H, W), z), c2w, K).mean > 10


@pytest.fixture(scope="module")
def room_render() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three 40x30 frames of a generated room along a short, turning camera path."""
    scene, _ = make_room_scene(seed=0, num_gaussians=2500, sh_degree=1)
    T, W, H = 3, 40, 30
    s = np.linspace(0, 1, T)[:, None]
    c2w = look_at_c2w(np.array([3.0, 2.0, 1.3]) + s * [0.15, 0.08, 0.0], np.array([5.9, 3.5, 1.0]) + s * [0.0, -0.2, 0.0])
    K = np.repeat(pinhole_K(W, H)[None], T, 0)
    r = render_views(scene.splats, c2w, K, W, H)
    return np.round(r.rgb * 255).astype(np.uint8), r.depth, r.alpha, c2w, K


def test_consistent_render_has_small_flicker_and_noise_raises_it(room_render) -> None:
    frames, depth, alpha, c2w, K = room_render
    clean = warped_frame_error(frames, depth, c2w, K, alpha)
    assert clean.mean < 2.0 and clean.valid_fraction.min() > 0.5  # resampling + view-dependent colour only
    rng = np.random.default_rng(1)
    exposure = np.clip(frames + rng.normal(0, 8, (len(frames), 1, 1, 3)).round(), 0, 255).astype(np.uint8)
    assert warped_frame_error(exposure, depth, c2w, K, alpha).mean > 2.5 * clean.mean
    still = np.repeat(c2w[:1], len(c2w), 0)  # cameras that ignore the motion: the warp no longer lines up
    assert warped_frame_error(frames, depth, still, K, alpha).mean > 2.5 * clean.mean


def test_before_after_uses_the_same_geometry(room_render) -> None:
    frames, depth, alpha, c2w, K = room_render
    noisy = np.clip(frames + np.random.default_rng(2).normal(0, 8, frames.shape).round(), 0, 255).astype(np.uint8)
    report = flicker_before_after(frames, noisy, depth, c2w, K, alpha)
    assert report["flicker_after"] > 2.5 * report["flicker_before"]
    alone = warped_frame_error(frames, depth, c2w, K, alpha)
    assert report["flicker_before"] == pytest.approx(alone.mean)
    assert report["valid_fraction"] == pytest.approx(alone.valid_fraction.mean())
    second = warped_frame_error(frames, depth, c2w, K, alpha, every=2)  # pairs (0, 1) only
    assert second.pairs.tolist() == [0] and second.per_pair[0] == pytest.approx(alone.per_pair[0])
    with pytest.raises(FlickerError, match=r"depth \(2, 30, 40\)"):
        warped_frame_error(frames, depth[:2], c2w, K)
