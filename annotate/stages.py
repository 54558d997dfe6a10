"""The per-clip annotation stages, as pure functions over one manifest row (DESIGN §4).

:func:`annotate_clip` runs them in order; each stage's errors become a
:class:`~wmkit.datasets.item_runner.ClipError` (the one failure type of every
items-to-shards stage) that names the clip, the stage and the reason, which the pipeline records as a
``failed`` status row::

    stage          does                                                   fails on
    -----------    ----------------------------------------------------   -----------------------------------
    decode         decode_clip(span, fps, size) -> (T, H, W, 3) uint8     missing/corrupt/empty video, T < min_frames,
                                                                          blank (all-black) frames
    geometry       geometry backend: up-to-scale c2w + depth, K           backend error, NaN/shape (Prediction.validate)
    metric         metric backend: metric depth, per-frame K              same
    fusion         fuse_depth -> metric c2w, depth, K, scale confidence   no usable overlap of the two depths
    tracks         extract_tracks: SIFT + sequential matching             too few features
    bundle_adjust  bundle_adjust(tracks, fused, config.ba)                degenerate problem
    quality        quality_metrics + quality_failures                     thresholds (policy "reject")
    encode         encode_mp4 at the stored size and rate                 encoder error
    sample         Sample(...).validate(): mp4, cameras, depth.npz, json  contract violation

Backends see the frames at the stored size, so every K (theirs, the fusion's,
the BA's) is already in pixels of the stored frames: resizing at decode
rescales K through the backends, never by hand here.

Depth is stored as ``depth.npz``: the fused metric depth as float16 (0 where
invalid) and ``valid`` = finite, positive, within float16 range and fused
confidence >= ``config.fusion.min_conf``.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping

import numpy as np

from wmkit import __version__
from wmkit.annotate.config import AnnotateConfig
from wmkit.annotate.quality import quality_failures, quality_metrics
from wmkit.annotate.types import Backend
from wmkit.datasets.cameras import Cameras
from wmkit.datasets.item_runner import ClipError, clip_stage
from wmkit.datasets.sample import Sample
from wmkit.model.vae import file_sha256

__all__ = ["annotate_clip", "decode_stage", "depth_member", "weight_sha256"]

_BLANK_STD = 2.0  # a clip whose frames vary by less than 2 grey levels has nothing to track
_FLOAT16_MAX_M = 6.0e4  # float16 overflows at 65504


def decode_stage(row: Mapping[str, Any], config: AnnotateConfig) -> tuple[np.ndarray, float]:
    """Decode a row's span at the stored size and rate; return ``(frames (T, H, W, 3) uint8, fps)``.

    Raises :class:`ClipError` (stage ``decode``) for an unreadable video, fewer
    than ``config.min_frames`` frames, or blank frames (pixel std < 2 levels).
    """
    from wmkit.datasets.video import decode_clip

    clip_id = str(row["clip_id"])
    fps = float(config.fps or row["fps"])
    with clip_stage(clip_id, "decode"):
        frames = decode_clip(
            row["media_uri"],
            float(row["start_s"]),
            float(row["end_s"]),
            fps=config.fps,
            size=config.size,
            backend=config.decode_backend,
            source_fps=float(row["fps"]),
        )
    if len(frames) < config.min_frames:
        raise ClipError(clip_id, "decode", f"{len(frames)} frame(s); at least {config.min_frames} are needed")
    std = float(frames.std(axis=(1, 2, 3)).max())
    if std < _BLANK_STD:
        raise ClipError(clip_id, "decode", f"blank frames (largest per-frame pixel std {std:.2f} < {_BLANK_STD})")
    return frames, fps


def depth_member(depth: np.ndarray, conf: np.ndarray, min_conf: float) -> tuple[np.ndarray, np.ndarray]:
    """Fused metric depth (T, H, W) and its confidence -> (depth float16 metres, 0 where invalid; valid bool)."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0) & (depth < _FLOAT16_MAX_M) & (conf >= min_conf)
    return np.where(valid, depth, 0.0).astype(np.float16), valid


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, cached per path, mtime and size: weights are hashed once per worker."""
    return file_sha256(path)


def weight_sha256(options: Mapping[str, Any]) -> dict[str, str]:
    """``{option: sha256}`` for each backend option naming an existing file (weights, checkpoints)."""
    hashes = {}
    for key, value in sorted(options.items()):
        if isinstance(value, str | os.PathLike) and os.path.isfile(value):
            st = os.stat(value)
            hashes[key] = _file_sha256(os.path.abspath(value), st.st_mtime_ns, st.st_size)
    return hashes


def _predict(backend: Backend, stage: str, frames: np.ndarray, clip_id: str):
    """Run one backend on the clip and validate its prediction against the frames."""
    with clip_stage(clip_id, stage):
        return backend.predict(frames, clip_id).validate(clip_id, len(frames), frames.shape[1:3])


def annotate_clip(row: Mapping[str, Any], geometry: Backend, metric: Backend, config: AnnotateConfig) -> Sample:
    """Annotate one manifest row into a validated :class:`Sample` with metric cameras, depth and quality.

    ``geometry`` and ``metric`` are backends already ``setup()`` (once per
    worker, by the caller). Pure apart from reading the row's video: no shard
    or status side effects, so the local runner and Ray actors map it alike.
    Raises :class:`ClipError` naming the clip and the failing stage (module table).
    """
    from wmkit.annotate.bundle_adjust import bundle_adjust
    from wmkit.annotate.fusion import fuse_depth
    from wmkit.annotate.tracks import extract_tracks
    from wmkit.datasets.video import encode_mp4

    clip_id = str(row["clip_id"])
    frames, fps = decode_stage(row, config)
    T, H, W = frames.shape[:3]
    geo = _predict(geometry, "geometry", frames, clip_id)
    met = _predict(metric, "metric", frames, clip_id)
    with clip_stage(clip_id, "fusion"):
        fused = fuse_depth(geo, met, config.fusion)
    with clip_stage(clip_id, "tracks"):
        tracks = extract_tracks(frames, max_features=config.max_features, match_window=config.match_window)
    with clip_stage(clip_id, "bundle_adjust"):
        result = bundle_adjust(tracks, fused, config.ba, clip_id=clip_id)
        cameras = Cameras(
            result.c2w, result.K, np.arange(T) / fps, np.arange(T), metric=True, scale_confidence=fused.scale_confidence
        ).validate(name=f"clip {clip_id}: bundle adjustment")
    with clip_stage(clip_id, "quality"):
        metrics = quality_metrics(result, fused, tracks, min_conf=config.fusion.min_conf)
        reasons = quality_failures(metrics, config.quality)
    if reasons and config.quality_policy == "reject":
        raise ClipError(clip_id, "quality", "; ".join(reasons))
    with clip_stage(clip_id, "encode"):
        mp4 = encode_mp4(frames, fps, crf=config.crf, preset=config.x264_preset, name=f"clip {clip_id}")
    with clip_stage(clip_id, "sample"):
        # BA's per-frame depth scale puts each frame's depth in the scale of the refined cameras
        scaled = fused.depth * result.depth_scale[:, None, None].astype(np.float32)
        depth, valid = depth_member(scaled, fused.conf, config.fusion.min_conf)
        meta = _meta(row, config, geometry, metric, fps, (W, H), T)
        meta["quality"] = {**_json_ready(metrics), "passed": not reasons, "reasons": reasons}
        meta["provenance"]["ba_stats"] = _json_ready(result.stats)
        return Sample(clip_id, mp4, cameras, meta, depth=depth, depth_valid=valid).validate()


def _json_ready(value: Any) -> Any:
    """A stats/metrics value as plain JSON (arrays as lists, numpy scalars as Python, NaN/inf as None)."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    return value if isinstance(value, str | int | bool | None) else str(value)


def _meta(
    row: Mapping[str, Any],
    config: AnnotateConfig,
    geometry: Backend,
    metric: Backend,
    fps: float,
    size: tuple[int, int],
    num_frames: int,
) -> dict[str, Any]:
    """The sample's json: manifest fields, parsed ``extra``, provenance (quality is added by the caller)."""
    settings = config.to_dict()
    return {
        "source": str(row["source"]),
        "source_id": str(row["source_id"]),
        "caption": str(row["caption"]),
        "license": str(row["license"]),
        "fps": fps,
        "size": [int(size[0]), int(size[1])],
        "num_frames": int(num_frames),
        "media_uri": str(row["media_uri"]),
        "span_s": [float(row["start_s"]), float(row["end_s"])],
        "extra": json.loads(row["extra"]),
        "provenance": {
            "wmkit_version": __version__,
            "stage": "annotate",
            "backends": {
                "geometry": geometry.name,
                "metric": metric.name,
                "tracks": "pycolmap-sift-sequential",
                "bundle_adjust": "wmkit-torch-lm",
                "decode": config.decode_backend,
                "encode": "libx264",
            },
            "backend_options": {"geometry": settings["geometry_options"], "metric": settings["metric_options"]},
            "weights": {
                "geometry": weight_sha256(config.geometry_options),
                "metric": weight_sha256(config.metric_options),
            },
            "config": settings,
            "config_hash": config.config_hash(),
        },
    }
