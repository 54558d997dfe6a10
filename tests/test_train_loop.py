"""The loop on one CPU: a tiny model learns the synthetic camera-motion task; the CLI trains
from video shards (stand-in VAE, tiny text encoder), logs and plots; config overrides are checked."""

from __future__ import annotations

import argparse
import gc
import json

import pytest
import torch

from _model_fixtures import single_thread  # noqa: F401 (fixture)
from _train_fixtures import clip_sample, write_shards
from wmkit.model.random_weights import save_tiny_text_encoder
from wmkit.train import cli
from wmkit.train.config import TrainConfig, apply_overrides, run_preset
from wmkit.train.trainer import _clip_gradients, manual_gc, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")



def test_tiny_model_learns_camera_motion_clips(tmp_path, single_thread):
    shards = write_shards(tmp_path / "shards", [clip_sample(i) for i in range(8)])
    cfg = run_preset("tiny_cpu", shards=str(shards), out=str(tmp_path / "run"), steps=60, progress=False)
    rows = train(cfg)
    losses = [r["loss"] for r in rows]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.75 * first, f"loss did not fall: first 10 steps {first:.3f}, last 10 {last:.3f}"
    assert rows[-1]["step"] == 60 and rows[4]["lr"] == pytest.approx(cfg.lr)  # warm-up over 5 steps
    assert rows[0]["lr"] == pytest.approx(cfg.lr / 5)
    assert all(r["grad_norm"] > 0 and r["samples_per_s"] > 0 and 0 <= r["stall_fraction"] < 1 for r in rows)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-00000020", "step-00000040", "step-00000060"]
    # a finished run resumes at its last step and does nothing more
    assert train(cfg) == []
    assert gc.isenabled()  # the trainer turns Python's collector back on


def test_cli_trains_from_video_shards_and_plots(tmp_path, single_thread, capsys):
    shards = write_shards(tmp_path / "video", [clip_sample(i, latents=False) for i in range(3)])
    pytest.importorskip("transformers")
    encoder = save_tiny_text_encoder(tmp_path / "enc")
    parser = argparse.ArgumentParser(prog="wmkit")
    cli.register(parser.add_subparsers(dest="verb"))
    run = tmp_path / "run"
    args = parser.parse_args(["train", "run", "--preset", "tiny_cpu", "--shards", str(shards), "--out", str(run),
                              "data=video", "vae=pool", f"text_encoder={encoder}", "text_max_length=8", "steps=3",
                              "batch_size=1", "progress=false"])
    assert args.run(args) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"] == "video" and saved["vae"] == "pool"
    args = parser.parse_args(["train", "plot", str(run)])
    assert args.run(args) == 0
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = parser.parse_args(["train", "run", "--preset", "tiny_cpu", "--shards", str(shards), "stepz=3"])
    assert args.run(args) == 2 and "no field 'stepz'" in capsys.readouterr().err


def test_overrides_are_typed_and_checked():
    cfg = apply_overrides(run_preset("tiny_cpu"), ["lr=0.01", "activation_checkpointing=true", "steps=7",
                                                   'extra={"note": "x"}'])
    assert cfg.lr == 0.01 and cfg.activation_checkpointing is True and cfg.steps == 7 and cfg.extra == {"note": "x"}
    with pytest.raises(ValueError, match="expected int"):
        apply_overrides(cfg, ["steps=many"])
    with pytest.raises(ValueError, match="must be positive: batch_size=0"):
        apply_overrides(cfg, ["batch_size=0"])
    with pytest.raises(ValueError, match="needs vae="):
        TrainConfig(data="video")
    with pytest.raises(ValueError, match="unknown model preset"):
        TrainConfig(model="huge")
    assert run_preset("2.6b_720p_61s_h100").lr == 1e-5 and run_preset("2.6b_720p_61s_h100").grad_clip == 0.5
    assert cfg.hash() == apply_overrides(cfg, ["out=elsewhere"]).hash() != apply_overrides(cfg, ["lr=0.02"]).hash()
    assert apply_overrides(cfg, ["cp=2"]) == apply_overrides(cfg, ["context_parallel=2"]) != cfg  # cp: the short name
    with pytest.raises(ValueError, match="must be positive: context_parallel=0"):
        apply_overrides(cfg, ["cp=0"])


def test_bf16_params_trains_on_one_process_and_resumes_exactly(tmp_path, single_thread):
    """precision=bf16_params: FSDP2 mixed precision in a group of one; a run stopped at step 6 and
    resumed gives the uninterrupted run's losses (fp32 master weights are what is checkpointed)."""
    import torch.distributed as dist

    shards = write_shards(tmp_path / "shards", [clip_sample(i) for i in range(4)])
    common = dict(shards=str(shards), progress=False, precision="bf16_params", ffn_frame_chunk=1, ckpt_every=6)
    try:
        whole = train(run_preset("tiny_cpu", out=str(tmp_path / "whole"), steps=10, **common))
        train(run_preset("tiny_cpu", out=str(tmp_path / "split"), steps=6, **common))
        resumed = train(run_preset("tiny_cpu", out=str(tmp_path / "split"), steps=10, **common))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert [r["step"] for r in resumed] == [7, 8, 9, 10]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in whole[6:]]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in whole)


def test_bf16_params_needs_fsdp():
    with pytest.raises(ValueError, match="needs fsdp=true"):
        TrainConfig(model="tiny", shards="x", precision="bf16_params", fsdp=False)


def test_non_finite_gradient_norm_stops_before_the_optimizer_step():
    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    layer.weight.grad[0, 0] = float("nan")
    before = layer.weight.grad.clone()
    with pytest.raises(RuntimeError, match="step 7: the gradient norm is nan"):
        _clip_gradients(layer, 0.5, step=7)
    torch.testing.assert_close(layer.weight.grad, before, equal_nan=True)  # raised before clipping
    layer.weight.grad[0, 0] = 0.0
    assert float(_clip_gradients(layer, None, step=8)) > 0


def test_manual_gc_is_off_inside_and_back_on_after_an_error():
    with pytest.raises(KeyError):
        with manual_gc():
            assert not gc.isenabled()
            raise KeyError("boom")
    assert gc.isenabled()
