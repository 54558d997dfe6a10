"""render pipeline on CPU: frames, scene paths to verified shards, failures as rows, resume, refiner wiring, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from _render_fixtures import write_training_images
from wmkit.render.random_refiner import write_random_refiner
from wmkit.datasets.cameras import Cameras
from wmkit.datasets.shard_index import read_index, read_sample, verify_shards
from wmkit.datasets.status import read_status
from wmkit.datasets.video_decode import decode_mp4_bytes
from wmkit.manifests.readers.dl3dv_gs import read_dl3dv_gs
from wmkit.datasets.cameras import scale_intrinsics
from wmkit.render.frames import pick_rasterizer, render_frames
from wmkit.render.path_planner import PathConfig, plan_path
from wmkit.render.pipeline import (
    PathRenderer,
    RenderConfig,
    path_seed,
    render_demo,
    render_manifest,
    render_task,
    scene_tasks,
)
from wmkit.render.reference_rasterizer import render_views
from wmkit.render.scenes import load_scene, nearest_training_views, write_scene
from wmkit.render.splats import write_ply
from wmkit.render.synthetic_room import make_room_scene

FRAMES, W, H = 5, 32, 24
CONFIG = RenderConfig(
    path=PathConfig(num_frames=FRAMES, width=W, height=H), paths_per_scene=2, rasterizer="reference", depth_stride=2
)


def _room(seed: int = 0):
    return make_room_scene(seed=seed, num_gaussians=600)[0]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A good room, a room whose cameras stand 50 m outside it, a PLY missing fields and a PLY with a NaN."""
    root = tmp_path_factory.mktemp("scenes")
    room = _room()
    write_scene(room, root / "room")
    c2w = room.cameras.c2w.copy()
    c2w[:, 0, 3] += 50.0  # every key pose outside the captured region: no clear path exists
    far = dataclasses.replace(room.cameras, c2w=c2w)
    write_scene(dataclasses.replace(room, cameras=far), root / "far-cameras")
    for name in ("bad-fields", "bad-nan"):
        write_scene(room, root / name)
    ply = root / "bad-fields/point_cloud/iteration_30000/point_cloud.ply"
    ply.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                   "end_header\n0 0 0\n1 1 1\n")  # fmt: skip
    nan = dataclasses.replace(room.splats, means=room.splats.means.copy())
    nan.means[3, 1] = np.nan
    write_ply(nan, root / "bad-nan/point_cloud/iteration_30000/point_cloud.ply", encoding="ascii")
    return root, read_dl3dv_gs(root)


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    root, manifest = scenes
    out = tmp_path_factory.mktemp("render_out")
    status = render_manifest(manifest, out, CONFIG, runner="local", progress=False)
    return root, manifest, out, status


# --- frames -----------------------------------------------------------------------------------


def test_render_frames_matches_render_views_and_scales_K_for_another_size():
    room = _room()
    cams = room.cameras.select(slice(0, 2))
    small = Cameras(cams.c2w, scale_intrinsics(cams.K, (room.width, room.height), (W, H)), cams.t, cams.frame_index)
    reference = pick_rasterizer("reference")
    frames = render_frames(room.splats, small, (W, H), rasterizer=reference, batch_size=1)
    views = render_views(room.splats, small.c2w, small.K, W, H)
    np.testing.assert_array_equal(frames.rgb, np.round(views.rgb * 255).astype(np.uint8))
    np.testing.assert_allclose(frames.depth, views.depth, rtol=1e-6)
    # the same cameras rendered at 2x: K scaled by 2 (pixel corners), as render_views with that K gives
    big = render_frames(room.splats, small, (2 * W, 2 * H), camera_size=(W, H), rasterizer=reference, depth_stride=2)
    K2 = small.K * np.array([[2.0], [2.0], [1.0]])
    views2 = render_views(room.splats, small.c2w, K2, 2 * W, 2 * H)
    np.testing.assert_array_equal(big.rgb, np.round(views2.rgb * 255).astype(np.uint8))
    # pooled depth is the block's accumulated depth over its alpha
    acc = torch.nn.functional.avg_pool2d(torch.as_tensor(views2.depth * views2.alpha)[:, None], 2)[:, 0].numpy()
    alpha = torch.nn.functional.avg_pool2d(torch.as_tensor(views2.alpha)[:, None], 2)[:, 0].numpy()
    assert big.depth.shape == (2, H, W)
    np.testing.assert_allclose(big.alpha, alpha, rtol=1e-5)
    np.testing.assert_allclose(big.depth, acc / alpha, rtol=1e-4)


def test_pick_rasterizer_refuses_gsplat_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert pick_rasterizer("auto").name == "reference"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pick_rasterizer("gsplat")


# --- tasks and config -------------------------------------------------------------------------


def test_tasks_seeds_and_config_checks(scenes):
    _, manifest = scenes
    tasks = scene_tasks(manifest, CONFIG)
    assert len(tasks) == 2 * len(manifest)
    assert [t["key"] for t in tasks[:2]] == ["bad-fields_p000", "bad-fields_p001"]
    assert len({t["seed"] for t in tasks}) == len(tasks)
    assert path_seed("room", 0) == path_seed("room", 0) != path_seed("room", 0, base_seed=1)
    other = manifest.assign(source=["dl3dv_gs"] * (len(manifest) - 1) + ["spatialvid"])
    with pytest.raises(ValueError, match="not dl3dv_gs splat scenes"):
        scene_tasks(other, CONFIG)
    with pytest.raises(ValueError, match="multiple of depth_stride 4"):
        RenderConfig(path=PathConfig(width=36, height=24))
    runtime = dataclasses.replace(CONFIG, num_actors=8, max_count=3)
    assert runtime.config_hash() == CONFIG.config_hash() != dataclasses.replace(CONFIG, seed=1).config_hash()


# --- end to end (local runner) ----------------------------------------------------------------


def test_good_scene_is_published_with_the_planned_cameras_depth_and_metadata(run):
    root, _, out, status = run
    report = verify_shards(out, check_video=True)
    assert report.ok, report.problems
    done = status[status.status == "done"]
    assert sorted(done.clip_id) == ["room_p000", "room_p001"]
    assert sorted(read_index(out).key) == ["room_p000", "room_p001"]
    scene = load_scene(root / "room")
    for key in done.clip_id:
        sample = read_sample(out, key)
        meta = sample.meta
        seed = path_seed("room", int(key[-3:]), CONFIG.seed)
        render = meta["render"]
        assert render["scene"] == "room" and render["seed"] == seed and render["refiner"] == "off"
        assert render["rasterizer"] == "reference" and render["depth_size"] == [W // 2, H // 2]
        assert render["path_stats"]["min_clearance"] >= CONFIG.path.min_clearance * scene.frame.scale
        assert meta["provenance"]["config_hash"] == CONFIG.config_hash()
        assert meta["size"] == [W, H] and meta["num_frames"] == FRAMES and meta["source"] == "dl3dv_gs"
        planned = plan_path(scene, seed, CONFIG.path)
        assert render["attempt"] == planned.attempt
        np.testing.assert_array_equal(sample.cameras.c2w, planned.cameras.c2w)
        np.testing.assert_array_equal(sample.cameras.K, planned.cameras.K)
        assert not sample.cameras.metric  # a DL3DV-layout folder carries no metric flag
        assert sample.depth.shape == (FRAMES, H // 2, W // 2) and sample.depth.dtype == np.float16
        assert sample.depth_valid.mean() > 0.9
        frames = render_frames(scene.splats, planned.cameras, (W, H), rasterizer=pick_rasterizer("reference"))
        decoded = decode_mp4_bytes(sample.mp4, name=key)
        assert decoded.shape == (FRAMES, H, W, 3)
        mse = np.mean((decoded.astype(float) - frames.rgb.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30  # H.264 at crf 18 of the rendered frames


@pytest.mark.parametrize(
    "scene, stage, words",
    [
        ("far-cameras", "path", "far-cameras: no acceptable path for seed"),
        ("bad-fields", "scene", "missing 3DGS vertex properties"),
        ("bad-nan", "scene", "non-finite means"),
    ],
)
def test_bad_scenes_become_failed_rows_naming_the_scene(run, scene, stage, words):
    status = run[3].set_index("clip_id")
    for index in range(2):
        row = status.loc[f"{scene}_p{index:03d}"]
        assert row.status == "failed" and row.stage == stage, row.reason
        assert words in row.reason and scene in row.reason
    assert not any(key.startswith(scene) for key in read_index(run[2]).key)


def test_second_run_does_nothing_and_retry_failed_redoes_only_failures(run):
    _, manifest, out, first = run
    shards = sorted(os.listdir(out))
    again = render_manifest(manifest, out, CONFIG, runner="local", progress=False)
    assert sorted(os.listdir(out)) == shards
    pd.testing.assert_frame_equal(again.sort_values("clip_id").reset_index(drop=True),
                                  first.sort_values("clip_id").reset_index(drop=True))  # fmt: skip
    retried = render_manifest(manifest, out, CONFIG, runner="local", retry_failed=True, progress=False)
    before, after = first.set_index("clip_id"), retried.set_index("clip_id")
    for key in before.index:
        redone = after.loc[key, "finished_at"] > before.loc[key, "finished_at"]
        assert redone == (before.loc[key, "status"] == "failed"), key
    assert sorted(os.listdir(out)) == shards
    pd.testing.assert_frame_equal(read_status(out).sort_values("clip_id").reset_index(drop=True),
                                  retried.sort_values("clip_id").reset_index(drop=True))  # fmt: skip


# --- refiner wiring and the Ray Data callable -------------------------------------------------


class _DarkenRefiner:
    """A stand-in refiner: darkens every frame by a quarter (the pipeline only needs the protocol);
    keeps the reference views and index of its last call."""

    def refine(
        self, frames: np.ndarray, reference: np.ndarray | None = None, reference_index: np.ndarray | None = None
    ) -> np.ndarray:
        self.reference, self.reference_index = reference, reference_index
        return (frames * 0.75).astype(np.uint8)

    def provenance(self) -> dict:
        return {"class": "_DarkenRefiner", "weights": {"unet": {"w.safetensors": "0" * 64}}}


def test_refiner_output_is_what_is_encoded_and_flicker_is_recorded(scenes):
    _, manifest = scenes
    task = next(t for t in scene_tasks(manifest, CONFIG) if t["key"] == "room_p000")
    refiner = _DarkenRefiner()
    sample = render_task(task, CONFIG, pick_rasterizer("reference"), refiner)
    assert sample.meta["render"]["refiner"]["class"] == "_DarkenRefiner"
    # a generated room has no training images on disk: no reference, and the json says why
    assert refiner.reference is None and refiner.reference_index is None
    assert sample.meta["render"]["reference"] == {"mode": "none", "reason": "the scene has no training images on disk"}
    assert sample.meta["provenance"]["backends"]["refiner"] == "difix3d"
    assert sample.meta["provenance"]["weights"] == {"unet": {"w.safetensors": "0" * 64}}
    flicker = sample.meta["quality"]["flicker"]
    assert 0 < flicker["valid_fraction"] <= 1 and 0 <= flicker["flicker_after"] < flicker["flicker_before"]
    checked = dataclasses.replace(CONFIG, alpha_check=True)  # the planner's alpha check through the rasterizer
    plain = render_task(task, checked, pick_rasterizer("reference"))
    assert sample.mp4 != plain.mp4 and np.array_equal(sample.cameras.c2w, plain.cameras.c2w)
    assert plain.meta["render"]["reference"] == "off"


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """DL3DV-layout folders with training images: "captured" (flat colours, 2:1 PNGs), "corrupt" (every
    image garbage), "partial" (one image missing); plus the image-less "plain" room. Returns the colours."""
    root = tmp_path_factory.mktemp("captured")
    room = _room()
    n = len(room.cameras)
    colours = np.stack([np.arange(n) * 10, np.full(n, 200), np.zeros(n)], axis=1)
    for name in ("captured", "corrupt", "partial", "plain"):
        write_scene(room, root / name)
    write_training_images(root / "captured", colours)
    for path in write_training_images(root / "corrupt", colours):
        path.write_bytes(b"\x89PNG truncated")
    write_training_images(root / "partial", colours)[5].unlink()
    return root, read_dl3dv_gs(root), colours


def test_reference_views_are_each_frames_nearest_training_image(captured):
    root, manifest, colours = captured
    task = next(t for t in scene_tasks(manifest, CONFIG) if t["key"] == "captured_p000")
    refiner = _DarkenRefiner()
    sample = render_task(task, CONFIG, pick_rasterizer("reference"), refiner)
    scene = load_scene(root / "captured")
    nearest = nearest_training_views(scene.cameras, sample.cameras.c2w, scene.frame.scale)
    reference = sample.meta["render"]["reference"]
    assert reference["mode"] == "nearest" and reference["frames"] == nearest.tolist()
    assert reference["files"] == {str(i): str(root.resolve() / "captured" / f"images/frame_{i + 1:05d}.png")
                                  for i in sorted(set(nearest.tolist()))}  # fmt: skip
    # frame t's view is training image nearest[t], fitted to the render size (flat colour: exact)
    views = refiner.reference[refiner.reference_index]
    assert views.shape == (FRAMES, H, W, 3) and len(refiner.reference) == len(set(nearest.tolist()))
    np.testing.assert_array_equal(views, np.broadcast_to(colours[nearest][:, None, None], views.shape))
    no_reference = dataclasses.replace(CONFIG, refiner_reference="none")
    off = render_task(task, no_reference, pick_rasterizer("reference"), refiner)
    assert refiner.reference is None and off.meta["render"]["reference"]["mode"] == "none"
    with pytest.raises(ValueError, match="refiner_reference must be 'nearest' or 'none'"):
        dataclasses.replace(CONFIG, refiner_reference="nearby")


def test_tiny_refiner_with_references_publishes_and_bad_images_fail_naming_scene_and_file(captured, tmp_path):
    pytest.importorskip("diffusers")
    root, manifest, _ = captured
    write_random_refiner(tmp_path / "difix")
    config = dataclasses.replace(CONFIG, paths_per_scene=1, refiner=str(tmp_path / "difix"), refiner_batch_size=2)
    status = render_manifest(manifest, tmp_path / "out", config, runner="local", progress=False)
    status = status.set_index("clip_id")
    assert status.loc["captured_p000", "status"] == status.loc["plain_p000", "status"] == "done"
    assert verify_shards(tmp_path / "out", check_video=True).ok
    sample = read_sample(tmp_path / "out", "captured_p000")
    reference = sample.meta["render"]["reference"]
    assert reference["mode"] == "nearest" and len(reference["frames"]) == FRAMES
    assert all(Path(f).is_file() and "captured/images/" in f for f in reference["files"].values())
    assert sample.meta["render"]["refiner"]["class"] == "Refiner" and "flicker" in sample.meta["quality"]
    assert decode_mp4_bytes(sample.mp4, name="captured_p000").shape == (FRAMES, H, W, 3)
    plain = read_sample(tmp_path / "out", "plain_p000").meta["render"]["reference"]
    assert plain == {"mode": "none", "reason": "the scene has no training images on disk"}
    corrupt = status.loc["corrupt_p000"]
    assert corrupt.status == "failed" and corrupt.stage == "reference", corrupt.reason
    assert "corrupt: training image" in corrupt.reason and str(root.resolve() / "corrupt/images") in corrupt.reason
    partial = status.loc["partial_p000"]
    assert partial.status == "failed" and partial.stage == "reference", partial.reason
    assert f"partial: training image {root.resolve() / 'partial/images/frame_00006.png'}" in partial.reason
    assert sorted(read_index(tmp_path / "out").key) == ["captured_p000", "plain_p000"]


def test_worker_batch_call_and_setup_failure(scenes):
    _, manifest = scenes
    tasks = [t for t in scene_tasks(manifest, CONFIG) if t["key"] in ("bad-fields_p000", "far-cameras_p000")]
    batch = {k: np.array([t[k] for t in tasks], dtype=object) for k in tasks[0]}
    out = PathRenderer(CONFIG)(batch)
    assert list(out["key"]) == ["bad-fields_p000", "far-cameras_p000"] and list(out["stage"]) == ["scene", "path"]
    assert all(len(m) == 0 for m in out["mp4"])
    if not torch.cuda.is_available():
        broken = PathRenderer(dataclasses.replace(CONFIG, rasterizer="gsplat"))
        result = broken.process(tasks[0])
        assert result.stage == "setup" and "CUDA is not available" in result.reason


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_renders_on_the_local_runner_and_refuses_bad_input(scenes, tmp_path, capsys):
    from wmkit.render import cli

    _, manifest = scenes
    path = tmp_path / "room.parquet"
    manifest[manifest.clip_id == "room"].to_parquet(path)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="verb"))
    argv = ["render", "--scenes", str(path), "--out", str(tmp_path / "out"), "--paths-per-scene", "1",
            "--frames", str(FRAMES), "--size", f"{W}x{H}", "--runner", "local", "--quiet", "--seed", "3"]  # fmt: skip
    args = parser.parse_args(argv)
    assert cli.build_config(args).path.width == W and args.run(args) == 0
    assert cli.build_config(args).refiner_reference == "nearest"
    no_reference = parser.parse_args(argv + ["--refiner-reference", "none"])
    assert cli.build_config(no_reference).refiner_reference == "none"
    assert "done: 1  failed: 0" in capsys.readouterr().out
    assert read_sample(tmp_path / "out", "room_p000").meta["render"]["seed"] == path_seed("room", 0, 3)
    odd = parser.parse_args(argv[:-2] + ["--size", "30x24"])
    assert odd.run(odd) == 2 and "multiple of depth_stride" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--size", "big"])


# --- demo -------------------------------------------------------------------------------------


def test_render_demo_writes_a_room_scene_manifest_and_verified_shards(tmp_path):
    demo = render_demo(tmp_path, num_frames=FRAMES, size=(W, H), num_gaussians=600)
    assert (demo.scene_dir / "transforms.json").is_file() and list(demo.manifest.source) == ["dl3dv_gs"]
    assert list(demo.status.status) == ["done"] and verify_shards(demo.shard_dir, check_video=True).ok
    assert read_sample(demo.shard_dir, "room-0_p000").num_frames == FRAMES
