"""Configuration of an annotation run: backends, fusion, BA, quality, decode, writer, workers.

:class:`AnnotateConfig` only composes the configs that live with their owners
(:class:`~wmkit.annotate.fusion.FusionConfig`, :class:`~wmkit.annotate.bundle_adjust.BAConfig`,
:class:`~wmkit.annotate.quality.QualityThresholds`) and adds the pipeline's
own knobs. Runs start from a named preset (:data:`PRESETS`) edited by
``field=value`` overrides (:func:`apply_overrides`), e.g.
``ba.iterations=10``, ``geometry_options.noise_px=0.5``, ``size=320x192``.

:meth:`AnnotateConfig.config_hash` covers every field that can change a
sample's bytes; worker counts and shard limits (:data:`RUNTIME_FIELDS`) do not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from wmkit.annotate.bundle_adjust import BAConfig
from wmkit.annotate.fusion import FusionConfig
from wmkit.annotate.quality import QualityThresholds

__all__ = ["AnnotateConfig", "PRESETS", "RUNTIME_FIELDS", "apply_overrides", "preset"]

#: Fields that change how a run is executed, not what it produces (left out of the config hash).
RUNTIME_FIELDS = ("num_actors", "num_cpus_per_actor", "num_gpus_per_actor", "prefix", "max_count", "max_bytes")


@dataclass(frozen=True)
class AnnotateConfig:
    """Everything an annotation run needs besides the manifest and the output directory."""

    geometry_backend: str = "perturbed"  # up-to-scale poses + depth (Pi3X role)
    geometry_options: dict[str, Any] = field(default_factory=dict)  # make_backend keyword arguments
    metric_backend: str = "perturbed_metric"  # metric depth + per-frame K (MoGe-2 role)
    metric_options: dict[str, Any] = field(default_factory=dict)
    # Modules imported in every worker before the backends are built, so that
    # out-of-tree backends can register themselves (``register_backend``).
    plugins: tuple[str, ...] = ()
    size: tuple[int, int] | None = None  # stored (width, height) pixels; None keeps the source size
    fps: float | None = None  # stored frame rate; None keeps the source frames
    decode_backend: Literal["pyav", "decord"] = "pyav"
    # Fewer frames than this cannot constrain a trajectory (one frame has no motion at all).
    min_frames: int = 4
    max_features: int = 1024  # SIFT features per frame for the tracks
    match_window: int = 3  # each frame is matched with this many following frames
    fusion: FusionConfig = field(default_factory=FusionConfig)
    ba: BAConfig = field(default_factory=BAConfig)
    # A clip whose camera neither gets 10 cm from where it started nor turns 2 degrees
    # is a still shot: useless for camera-conditioned training, and without parallax
    # to check its depth. 10 cm stays clear of the few cm a BA drifts on a tripod shot.
    quality: QualityThresholds = field(default_factory=lambda: QualityThresholds(min_motion_m=0.1, min_motion_deg=2.0))
    # "reject": a clip below the thresholds becomes a failed status row (stage "quality")
    # and is not written; "flag": it is written with json quality.passed = false.
    quality_policy: Literal["reject", "flag"] = "reject"
    crf: int = 18  # x264 quality of the stored mp4
    x264_preset: str = "medium"  # x264 speed preset
    prefix: str = "shard"
    max_count: int = 1000  # samples per shard
    max_bytes: int = 1 << 30  # bytes per shard
    num_actors: int = 1  # annotator actors (each builds and sets up its backends once)
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0  # a fraction lets several actors share one GPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", tuple(self.plugins))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
            if len(self.size) != 2 or min(self.size) < 1:
                raise ValueError(f"AnnotateConfig.size must be (width, height) in positive pixels, got {self.size}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"AnnotateConfig.fps must be positive, got {self.fps}")
        if self.min_frames < 2:
            raise ValueError(f"AnnotateConfig.min_frames must be >= 2, got {self.min_frames}")
        if self.quality_policy not in ("reject", "flag"):
            raise ValueError(f"AnnotateConfig.quality_policy must be 'reject' or 'flag', got {self.quality_policy!r}")
        if self.num_actors < 1 or self.num_cpus_per_actor < 0 or self.num_gpus_per_actor < 0:
            raise ValueError(
                f"AnnotateConfig: num_actors >= 1 and non-negative CPU/GPU shares needed, got {self.num_actors}, "
                f"{self.num_cpus_per_actor}, {self.num_gpus_per_actor}"
            )
        if self.max_count < 1 or self.max_bytes < 1:
            raise ValueError(f"AnnotateConfig: max_count ({self.max_count}) and max_bytes ({self.max_bytes}) must be positive")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values (nested configs as dicts)."""
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))

    def config_hash(self) -> str:
        """sha256 of the fields that determine the samples' bytes (not :data:`RUNTIME_FIELDS`)."""
        values = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _cpu_test() -> AnnotateConfig:
    """Small and quick: CI tests and the demo on a 2-core box."""
    return AnnotateConfig(max_features=256, ba=dataclasses.replace(BAConfig(), iterations=8), x264_preset="ultrafast")


def _laptop() -> AnnotateConfig:
    """The defaults: one CPU actor, local ``ray.init``."""
    return AnnotateConfig()


def _h100_x8() -> AnnotateConfig:
    """One node of 8 H100: 4 actors per GPU share it (backends are light next to 80 GB), BA on the GPU."""
    return AnnotateConfig(
        num_actors=32,
        num_cpus_per_actor=3.0,
        num_gpus_per_actor=0.25,
        ba=dataclasses.replace(BAConfig(), device="cuda"),
    )


#: Named presets: ``name -> (description, builder)``.
PRESETS: dict[str, tuple[str, Callable[[], AnnotateConfig]]] = {
    "cpu_test": ("small and quick, for tests and the demo on CPU", _cpu_test),
    "laptop": ("defaults, one CPU actor", _laptop),
    "h100_x8": ("one 8-GPU node, 4 actors per GPU, BA on GPU", _h100_x8),
}


def preset(name: str) -> AnnotateConfig:
    """The config of preset ``name`` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown annotate preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name][1]()


def _parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists), else ``WxH`` as a size, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        width, sep, height = text.lower().partition("x")
        if sep and width.isdigit() and height.isdigit():
            return [int(width), int(height)]
        return text


def _set(obj: Any, path: list[str], value: Any, full: str) -> Any:
    """Return ``obj`` (dataclass or dict) with the field at ``path`` set to ``value``."""
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: _set(obj.get(head, {}), rest, value, full) if rest else value}
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise ValueError(f"override {full!r}: {type(obj).__name__} has no field {head!r} (fields: {sorted(names)})")
    new = _set(getattr(obj, head), rest, value, full) if rest else value
    return dataclasses.replace(obj, **{head: new})


def apply_overrides(config: AnnotateConfig, overrides: list[str]) -> AnnotateConfig:
    """``config`` with each ``dotted.field=value`` override applied in order.

    Nested configs and the backend option dicts are reached with dots
    (``ba.window=32``, ``metric_options.weights=/ckpt/moge2.safetensors``).
    Values parse as JSON, then ``WxH``, else stay strings.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not field=value")
        config = _set(config, key.split("."), _parse_value(text), item)
    return config
