"""Fixtures for the annotation pipeline tests: a Ray session, bad-input clips and two test backends.

The backends register on import. Tests name this module in
``AnnotateConfig.plugins`` so that every Ray actor imports it too (the Ray
session puts ``tests/`` on the workers' ``PYTHONPATH``).

- ``crash_once``: the metric backend ``perturbed_metric``, except that on
  ``crash_clip`` it kills its own process (``os._exit``) the first time,
  leaving ``marker`` behind: a worker dying mid-clip.
- ``needs_weights``: ``perturbed_metric`` whose ``setup()`` reads a weight
  file and refuses a missing one, as a network backend does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from wmkit.annotate.backends import register_backend
from wmkit.annotate.backends.perturbed import PerturbedMetricBackend
from wmkit.annotate.types import AnnotateError, Prediction
from wmkit.datasets.cameras import Cameras
from wmkit.datasets.video import write_mp4
from wmkit.manifests.schema import extra_json, to_manifest

PLUGIN = "_annotate_fixtures"
TESTS_DIR = str(Path(__file__).resolve().parent)


@register_backend("crash_once")
@dataclass(frozen=True)
class CrashOnceBackend(PerturbedMetricBackend):
    """``perturbed_metric`` that kills its process on ``crash_clip`` unless ``marker`` exists."""

    name: ClassVar[str] = "crash_once"
    crash_clip: str = ""
    marker: str = ""

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        if clip_id == self.crash_clip and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(3)  # no cleanup, no exception: what an OOM kill or a segfault looks like
        return replace(super().predict(frames, clip_id), backend=self.name)


@register_backend("needs_weights")
@dataclass(frozen=True)
class NeedsWeightsBackend(PerturbedMetricBackend):
    """``perturbed_metric`` that loads ``weights`` in ``setup()`` and refuses a missing file."""

    name: ClassVar[str] = "needs_weights"
    weights: str = ""

    def setup(self) -> None:
        if not os.path.isfile(self.weights):
            raise AnnotateError(f"backend {self.name!r}: weight file {self.weights} does not exist")

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        return replace(super().predict(frames, clip_id), backend=self.name)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs) for the whole test session; workers can import this module."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


def _row(clip_id: str, media: Path, num_frames: int, fps: float, width: int, height: int, gt_dir: Path) -> dict:
    return {
        "clip_id": clip_id,
        "source": "local",
        "source_id": f"bad/{clip_id}",
        "media_uri": str(media),
        "start_s": 0.0,
        "end_s": max(num_frames, 1) / fps,
        "fps": fps,
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "caption": "",
        "license": "CC0-1.0",
        "extra": extra_json({"gt_dir": str(gt_dir)}),
    }


def write_bad_clips(root: Path, template_id: str, num_frames: int, fps: float = 16.0) -> pd.DataFrame:
    """Bad inputs beside the synthetic source at ``root`` (same ``videos/`` and ``gt/`` layout).

    Uses the ground truth of ``template_id`` to build: ``bad-corrupt`` (random
    bytes), ``bad-empty`` (zero-length file), ``bad-single`` (one frame),
    ``bad-black`` (all-black frames), ``bad-static`` (frame 0 held still, with
    matching still ground truth). Returns their manifest rows.
    """
    from wmkit.datasets.synthetic import SyntheticClip, write_ground_truth
    from wmkit.datasets.video import decode_clip

    videos, gt = root / "videos", root / "gt"
    frames = decode_clip(videos / f"{template_id}.mp4")
    height, width = frames.shape[1:3]
    truth = Cameras.load(str(gt / template_id / "cameras.npz"))
    with np.load(gt / template_id / "depth.npz") as z:
        depth = z["depth"]
    rows = []

    def add(clip_id: str, clip_frames: np.ndarray | None, data: bytes | None = None) -> None:
        media = videos / f"{clip_id}.mp4"
        if clip_frames is not None:
            write_mp4(clip_frames, media, fps=fps)
        else:
            media.write_bytes(data)
        n = len(clip_frames) if clip_frames is not None else num_frames
        rows.append(_row(clip_id, media, n, fps, width, height, gt / clip_id))

    add("bad-corrupt", None, np.random.default_rng(0).bytes(4096))
    add("bad-empty", None, b"")
    add("bad-single", frames[:1])
    add("bad-black", np.zeros_like(frames))
    still = Cameras(
        np.repeat(truth.c2w[:1], num_frames, 0), np.repeat(truth.K[:1], num_frames, 0), truth.t, truth.frame_index, True
    )
    static = SyntheticClip(np.repeat(frames[:1], num_frames, 0), still, np.repeat(depth[:1], num_frames, 0))
    write_ground_truth(static, gt / "bad-static")
    add("bad-static", static.frames)
    return to_manifest(rows)
