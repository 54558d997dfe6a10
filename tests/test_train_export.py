"""`wmkit train export`: a run's newest DCP checkpoint -> the weight files `wmkit generate` reads."""

from __future__ import annotations

import json

import pytest
import torch

from _model_fixtures import single_thread  # noqa: F401 (fixture)
from _train_fixtures import clip_sample, write_shards
from wmkit.cli import main
from wmkit.model.generate import load_model_weights
from wmkit.train.checkpoint import CheckpointError
from wmkit.train.config import run_preset
from wmkit.train.export import export_model_weights
from wmkit.train.trainer import train



def test_export_writes_ema_and_raw_weights_that_load(tmp_path, single_thread):
    shards = write_shards(tmp_path / "shards", [clip_sample(i) for i in range(2)])
    run = tmp_path / "run"
    train(run_preset("tiny_cpu", shards=str(shards), out=str(run), steps=4, ckpt_every=4, progress=False))
    ema = load_model_weights(export_model_weights(run, tmp_path / "ema.safetensors"))
    assert main(["train", "export", str(run), "--out", str(tmp_path / "raw.safetensors"), "--raw"]) == 0
    raw = load_model_weights(tmp_path / "raw.safetensors")
    ema_params, raw_params = dict(ema.named_parameters()), dict(raw.named_parameters())
    assert ema_params.keys() == raw_params.keys()
    # After 4 steps with decay 0.99 the average lags the trained weights, but is a real export of them.
    moved = [n for n in raw_params if not torch.equal(ema_params[n], raw_params[n])]
    assert moved and all(torch.isfinite(p).all() for p in ema_params.values())


def test_export_of_a_run_trained_with_activation_checkpointing(tmp_path, single_thread):
    """The AC wrapper adds a module level to parameter names; the EMA and the export use the plain
    model's names, so the run exports (the 2.6b preset trains this way)."""
    shards = write_shards(tmp_path / "shards", [clip_sample(i) for i in range(2)])
    run = tmp_path / "run"
    train(run_preset("tiny_cpu", shards=str(shards), out=str(run), steps=2, ckpt_every=2, progress=False,
                     activation_checkpointing=True))
    ema = load_model_weights(export_model_weights(run, tmp_path / "ema.safetensors"))
    raw = load_model_weights(export_model_weights(run, tmp_path / "raw.safetensors", use_ema=False))
    ema_params, raw_params = dict(ema.named_parameters()), dict(raw.named_parameters())
    assert not any("_checkpoint_wrapped_module" in n for n in ema_params)
    # two steps at decay 0.99: the average sits within the steps' small moves of the trained weights
    assert all(torch.allclose(ema_params[n], raw_params[n], atol=1e-2) for n in raw_params)


def test_export_of_a_run_without_checkpoint_is_named(tmp_path, capsys):
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(run_preset("tiny_cpu").to_dict()))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        export_model_weights(run, tmp_path / "m.safetensors")
    assert main(["train", "export", str(run), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
