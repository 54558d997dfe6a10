"""annotate pipeline: config, the in-process and Ray runners, resume, bad input, a killed worker, the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _annotate_fixtures import PLUGIN, ray_session, write_bad_clips  # noqa: F401  (fixture)

from wmkit.annotate.config import PRESETS, AnnotateConfig, apply_overrides, preset
from wmkit.annotate.evaluate import depth_abs_rel, evaluate_cameras
from wmkit.annotate.pipeline import annotate_manifest
from wmkit.datasets.cameras import Cameras
from wmkit.datasets.ingest import read_status
from wmkit.datasets.shard_format import read_index
from wmkit.datasets.shard_reader import decode_samples, list_shards, tar_samples

NUM_FRAMES, WIDTH, HEIGHT = 16, 128, 80


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Three synthetic clips (the middle one zooms) beside their ground truth."""
    from wmkit.annotate.synthetic_scenes import write_synthetic_source

    root = tmp_path_factory.mktemp("synth")
    manifest = write_synthetic_source(root, 3, num_frames=NUM_FRAMES, width=WIDTH, height=HEIGHT, zoom_every=2)
    return root, manifest


def _config(root: Path, **changes) -> AnnotateConfig:
    """The cpu_test preset reading ``root``'s ground truth, with ``changes`` applied."""
    base = apply_overrides(preset("cpu_test"), [f"geometry_options.gt_root={root}/gt", f"metric_options.gt_root={root}/gt"])
    return dataclasses.replace(base, plugins=(PLUGIN,), **changes)


def _samples(out: Path) -> dict:
    return {s.key: s for s in decode_samples(tar_samples(list_shards(out)))}


# --- config -----------------------------------------------------------------------------------


def test_presets_build_and_overrides_reach_nested_fields_and_options():
    for name in PRESETS:
        assert isinstance(preset(name), AnnotateConfig)
    config = apply_overrides(
        preset("laptop"), ["ba.iterations=5", "size=320x192", "metric_options.weights=/w.safetensors", "fps=8"]
    )
    assert config.ba.iterations == 5 and config.size == (320, 192) and config.fps == 8
    assert config.metric_options == {"weights": "/w.safetensors"}
    with pytest.raises(ValueError, match="BAConfig has no field 'iterationz'"):
        apply_overrides(config, ["ba.iterationz=3"])
    with pytest.raises(ValueError, match="unknown annotate preset 'nope'"):
        preset("nope")


def test_config_hash_follows_outputs_not_runtime_fields():
    config = preset("laptop")
    assert dataclasses.replace(config, num_actors=8, max_count=5).config_hash() == config.config_hash()
    assert apply_overrides(config, ["ba.per_frame_intrinsics=false"]).config_hash() != config.config_hash()
    json.dumps(config.to_dict())  # the config travels in every sample's json


# --- local runner: end to end, bad input, resume ----------------------------------------------


@pytest.fixture(scope="module")
def local_run(source, tmp_path_factory):
    """Good clips plus every bad input, one NaN-returning clip, annotated in-process."""
    root, manifest = source
    bad = write_bad_clips(root, manifest.clip_id[0], NUM_FRAMES)
    nan_id = manifest.clip_id[2]
    config = apply_overrides(_config(root), [f'metric_options.nan_clip_ids=["{nan_id}"]', "metric_options.nan_fraction=0.01"])
    out = tmp_path_factory.mktemp("local_out")
    full = pd.concat([manifest, bad], ignore_index=True)
    status = annotate_manifest(full, out, config, runner="local", progress=False)
    return root, full, config, out, status, nan_id


def test_local_run_writes_metric_cameras_depth_and_quality_close_to_ground_truth(local_run):
    root, manifest, config, out, status, nan_id = local_run
    done = status[status.status == "done"].clip_id.tolist()
    assert sorted(done) == sorted(manifest.clip_id[:2])
    samples = _samples(out)
    assert sorted(samples) == sorted(done)
    for clip_id, sample in samples.items():
        cams = sample.cameras
        assert cams.metric and 0.0 < cams.scale_confidence <= 1.0 and len(cams) == NUM_FRAMES
        assert sample.depth.dtype == np.float16 and sample.depth.shape == (NUM_FRAMES, HEIGHT, WIDTH)
        assert sample.depth_valid.mean() > 0.5
        meta = sample.meta
        prov = meta["provenance"]
        assert prov["backends"]["geometry"] == "perturbed" and prov["backends"]["metric"] == "perturbed_metric"
        assert prov["config_hash"] == config.config_hash() and prov["wmkit_version"]
        assert meta["quality"]["passed"] and meta["quality"]["reasons"] == []
        assert meta["quality"]["reproj_error_px"] <= config.quality.max_reproj_error_px
        truth = Cameras.load(str(root / "gt" / clip_id / "cameras.npz"))
        err = evaluate_cameras(cams, truth)
        assert err["ate_sim3_m"] < 0.1 and err["focal_err_rel_mean"] < 0.15, (clip_id, err)  # accuracy: bench/annotate.py
        with np.load(root / "gt" / clip_id / "depth.npz") as gt:
            both = sample.depth_valid & gt["valid"]
            assert depth_abs_rel(sample.depth.astype(np.float32), gt["depth"], both) < 0.05  # 2 % pixel noise


@pytest.mark.parametrize(
    "clip_id, stage, words",
    [
        ("bad-corrupt", "decode", "bad-corrupt"),
        ("bad-empty", "decode", "bad-empty"),
        ("bad-single", "decode", "1 frame(s); at least 4 are needed"),
        ("bad-black", "decode", "blank frames"),
        ("bad-static", "quality", "static camera"),
    ],
)
def test_bad_input_becomes_a_failed_row_with_stage_and_reason(local_run, clip_id, stage, words):
    status = local_run[4].set_index("clip_id")
    row = status.loc[clip_id]
    assert (row.status, row.stage) == ("failed", stage), row.to_dict()
    assert words in row.reason
    assert row.shard == ""


def test_nan_from_a_backend_fails_its_clip_only(local_run):
    status = local_run[4].set_index("clip_id")
    nan_id = local_run[5]
    row = status.loc[nan_id]
    assert (row.status, row.stage) == ("failed", "metric") and "non-finite depth" in row.reason and nan_id in row.reason


def test_nothing_partial_is_published(local_run):
    out = local_run[3]
    index = read_index(out)
    assert set(index.key) == set(local_run[4].query("status == 'done'").clip_id)
    assert not list(out.glob("*.tmp")) and all(name.endswith(".tar") for name in set(index.shard))


def test_second_run_does_nothing_and_retry_failed_redoes_only_failures(local_run):
    root, manifest, config, out, status, _ = local_run
    shards = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = annotate_manifest(manifest, out, config, runner="local", progress=False)
    pd.testing.assert_frame_equal(again.sort_values("clip_id").reset_index(drop=True), status.sort_values("clip_id").reset_index(drop=True))
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == shards
    healed = apply_overrides(config, ["metric_options.nan_fraction=0.0"])
    retried = annotate_manifest(manifest, out, healed, runner="local", retry_failed=True, progress=False).set_index("clip_id")
    assert retried.loc[local_run[5], "status"] == "done"
    assert retried.loc["bad-corrupt", "status"] == "failed"
    assert sorted(read_index(out).key) == sorted(retried.index[retried.status == "done"])


def test_missing_weight_file_fails_each_clip_by_name_and_publishes_nothing(source, tmp_path):
    root, manifest = source
    config = apply_overrides(
        _config(root), ["metric_backend=needs_weights", f"metric_options.weights={tmp_path}/missing.safetensors"]
    )
    status = annotate_manifest(manifest.iloc[:2], tmp_path / "out", config, runner="local", progress=False)
    assert (status.status == "failed").all() and (status.stage == "setup").all()
    assert all("missing.safetensors" in reason for reason in status.reason)
    assert not list((tmp_path / "out").glob("*.tar"))


def test_quality_policy_flag_writes_the_clip_with_its_reasons(source, tmp_path):
    root, manifest = source
    config = _config(root, quality_policy="flag")
    config = apply_overrides(config, ["quality.max_reproj_error_px=0.0"])
    status = annotate_manifest(manifest.iloc[:1], tmp_path, config, runner="local", progress=False)
    assert status.status.tolist() == ["done"]
    quality = next(iter(_samples(tmp_path).values())).meta["quality"]
    assert quality["passed"] is False and quality["reasons"][0].startswith("reprojection error")


# --- Ray runner: a worker killed mid-clip --------------------------------------------------------


def test_ray_run_survives_a_killed_worker_with_every_clip_exactly_once(source, tmp_path, ray_session):
    root, manifest = source
    manifest = manifest.iloc[:2]
    marker = tmp_path / "crashed"
    crash_id = manifest.clip_id[1]
    config = apply_overrides(
        _config(root, num_actors=1, max_count=1),
        ["metric_backend=crash_once", f"metric_options.crash_clip={crash_id}", f"metric_options.marker={marker}"],
    )
    out = tmp_path / "out"
    status = annotate_manifest(manifest, out, config, runner="ray", progress=False)
    assert marker.exists()  # the worker did die on that clip
    assert int(marker.read_text()) != os.getpid()  # ... in an actor process, not the driver
    assert (status.status == "done").all(), status
    index = read_index(out)
    assert sorted(index.key) == sorted(manifest.clip_id) and index.key.is_unique
    assert sorted(_samples(out)) == sorted(manifest.clip_id)
    assert read_status(out).equals(status)
    again = annotate_manifest(manifest, out, config, runner="ray", progress=False)  # resume: nothing to do
    assert read_index(out).equals(index) and (again.status == "done").all()


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_annotates_with_overrides_and_reports_failures(source, tmp_path, capsys):
    from wmkit.annotate import cli

    root, manifest = source
    path = tmp_path / "manifest.parquet"
    manifest.iloc[:1].to_parquet(path)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="verb"))
    argv = ["annotate", "--manifest", str(path), "--out", str(tmp_path / "out"), "--runner", "local", "--quiet"]
    argv += ["--preset", "cpu_test", "--gt-root", str(root / "gt"), "--set", "metric_options.nan_fraction=0.5"]
    args = parser.parse_args(argv)
    assert cli.build_config(args).geometry_options == {"gt_root": str(root / "gt")}
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "done: 0  failed: 1" in printed and f"{manifest.clip_id[0]} [metric]" in printed
    bad = parser.parse_args(argv[:-2] + ["--set", "ba.nope=1"])
    assert bad.run(bad) == 2 and "no field 'nope'" in capsys.readouterr().err
    unknown = parser.parse_args(argv + ["--backend", "pi9"])
    assert unknown.run(unknown) == 2 and "unknown backend(s) ['pi9']" in capsys.readouterr().err
    colmap = parser.parse_args(argv + ["--backend", "colmap"])
    assert cli.build_config(colmap).geometry_options == {}  # colmap takes no ground truth


def test_cli_weight_flags_pick_the_network_backends_and_a_missing_file_fails_by_name(source, tmp_path, capsys):
    from wmkit.annotate import cli

    root, manifest = source
    path = tmp_path / "manifest.parquet"
    manifest.iloc[:1].to_parquet(path)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="verb"))
    pi3x, moge = tmp_path / "absent-pi3x.safetensors", tmp_path / "absent-moge2.safetensors"
    argv = ["annotate", "--manifest", str(path), "--out", str(tmp_path / "out"), "--runner", "local", "--quiet",
            "--preset", "cpu_test", "--pi3x-weights", str(pi3x), "--moge-weights", str(moge)]
    args = parser.parse_args(argv)
    config = cli.build_config(args)
    assert (config.geometry_backend, config.metric_backend) == ("pi3x", "moge2")
    assert config.geometry_options["weights"] == str(pi3x) and config.metric_options["weights"] == str(moge)
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "done: 0  failed: 1" in printed and "absent-pi3x.safetensors" in printed
    assert not list((tmp_path / "out").glob("*.tar"))
