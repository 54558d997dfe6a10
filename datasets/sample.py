"""One shard sample (DESIGN §2 "Shard sample") and its tar members.

A sample is one clip (or one window ``{clip_id}_w{n}``) with these members,
named ``{key}.{member}`` inside a shard tar:

============================  ===========================================================
``cameras.npz``               :class:`~wmkit.datasets.cameras.Cameras`, T = video frames
``depth.npz`` (optional)      ``depth`` (T, h, w) float16 metres, ``valid`` (T, h, w) bool
``json``                      metadata, :data:`REQUIRED_META` at least (sorted keys, UTF-8)
``latents.safetensors`` (opt) VAE latents ``z`` (C, T', H', W') and latent-frame cameras
``mp4``                       H.264 video bytes at the stored resolution and fps
============================  ===========================================================

:meth:`Sample.to_members` and :meth:`Sample.from_members` are exact inverses;
:meth:`Sample.validate` is the check the shard writer runs before writing.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from wmkit.datasets.cameras import CameraError, Cameras

__all__ = ["DecodedSample", "MEMBERS", "REQUIRED_META", "Sample", "SampleError", "check_key"]

#: Member names a sample may carry; the first three are required.
MEMBERS = ("cameras.npz", "json", "mp4", "depth.npz", "latents.safetensors")
_REQUIRED_MEMBERS = ("cameras.npz", "json", "mp4")

#: Keys every sample's ``json`` must hold (DESIGN §2).
REQUIRED_META = ("source", "source_id", "caption", "license", "fps", "size", "num_frames", "provenance")

_KEY = re.compile(r"[A-Za-z0-9_-]+")


class SampleError(ValueError):
    """A sample that breaks the shard contract; the message names its key."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid webdataset key (``[A-Za-z0-9_-]+``, no dots), else raise."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise SampleError(f"sample key {key!r} must match [A-Za-z0-9_-]+ (no dots, slashes or spaces)")
    return key


@dataclass(frozen=True)
class Sample:
    """One clip as stored in a shard: raw mp4 bytes, cameras, metadata and optional extras."""

    key: str
    mp4: bytes
    cameras: Cameras
    meta: dict[str, Any]
    depth: np.ndarray | None = None  # (T, h, w) float16 metres
    depth_valid: np.ndarray | None = None  # (T, h, w) bool
    latents: bytes | None = None  # safetensors bytes holding at least "z"

    @property
    def num_frames(self) -> int:
        """Frame count T (of the cameras; equal to the video's by contract)."""
        return len(self.cameras)

    def validate(self) -> "Sample":
        """Raise :class:`SampleError` naming the key unless the sample meets the contract.

        Checks the key charset, non-empty mp4, required json keys, cameras
        (``Cameras.validate``), cameras T == json ``num_frames``, depth shape/dtype
        and that latents parse as safetensors with a ``z`` tensor. Returns ``self``.
        """
        key = check_key(self.key)
        if not isinstance(self.mp4, bytes | bytearray) or not self.mp4:
            raise SampleError(f"sample {key}: mp4 is empty or not bytes")
        missing = [k for k in REQUIRED_META if k not in self.meta]
        if missing:
            raise SampleError(f"sample {key}: json is missing {missing}")
        try:
            self.cameras.validate(name=f"sample {key}")
        except CameraError as err:
            raise SampleError(str(err)) from err
        if self.meta["num_frames"] != len(self.cameras):
            raise SampleError(
                f"sample {key}: cameras have T={len(self.cameras)} frames but json num_frames={self.meta['num_frames']}"
            )
        if (self.depth is None) != (self.depth_valid is None):
            raise SampleError(f"sample {key}: depth and depth_valid must be given together")
        if self.depth is not None:
            T = len(self.cameras)
            if self.depth.ndim != 3 or self.depth.shape[0] != T or self.depth.dtype != np.float16:
                raise SampleError(
                    f"sample {key}: depth must be float16 (T={T}, h, w), got {self.depth.dtype} {self.depth.shape}"
                )
            if self.depth_valid.shape != self.depth.shape or self.depth_valid.dtype != np.bool_:
                raise SampleError(f"sample {key}: depth_valid must be bool with depth's shape {self.depth.shape}")
        if self.latents is not None:
            _check_latents(key, self.latents)
        return self

    def to_members(self) -> dict[str, bytes]:
        """Serialise to ``{member name: bytes}`` (no key prefix); deterministic for equal samples."""
        try:
            meta = json.dumps(self.meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise SampleError(f"sample {self.key}: json metadata is not serialisable ({err})") from err
        members = {"cameras.npz": self.cameras.to_npz_bytes(), "json": meta.encode("utf-8"), "mp4": bytes(self.mp4)}
        if self.depth is not None:
            buf = io.BytesIO()
            np.savez_compressed(buf, depth=self.depth, valid=self.depth_valid)
            members["depth.npz"] = buf.getvalue()
        if self.latents is not None:
            members["latents.safetensors"] = bytes(self.latents)
        return members

    @classmethod
    def from_members(cls, key: str, members: dict[str, bytes]) -> "Sample":
        """Parse members read from a shard; raise :class:`SampleError` naming ``key`` on any defect."""
        unknown = sorted(set(members) - set(MEMBERS))
        if unknown:
            raise SampleError(f"sample {key}: unknown members {unknown}; expected some of {MEMBERS}")
        missing = [m for m in _REQUIRED_MEMBERS if m not in members]
        if missing:
            raise SampleError(f"sample {key}: missing members {missing}")
        try:
            cameras = Cameras.from_npz_bytes(members["cameras.npz"], name=f"sample {key}: cameras.npz")
        except CameraError as err:
            raise SampleError(str(err)) from err
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise SampleError(f"sample {key}: unreadable json ({err})") from err
        if not isinstance(meta, dict):
            raise SampleError(f"sample {key}: json is a {type(meta).__name__}, expected an object")
        depth = depth_valid = None
        if "depth.npz" in members:
            try:
                with np.load(io.BytesIO(members["depth.npz"]), allow_pickle=False) as z:
                    depth, depth_valid = z["depth"], z["valid"]
            except (KeyError, ValueError, OSError) as err:
                raise SampleError(f"sample {key}: unreadable depth.npz ({err})") from err
        sample = cls(key, members["mp4"], cameras, meta, depth, depth_valid, members.get("latents.safetensors"))
        return sample.validate()


@dataclass(frozen=True)
class DecodedSample:
    """A :class:`Sample` plus its decoded frames ``(T, H, W, 3)`` uint8 RGB torch tensor."""

    sample: Sample
    frames: torch.Tensor = field(repr=False)

    @property
    def key(self) -> str:
        """The sample key."""
        return self.sample.key


def _check_latents(key: str, data: bytes) -> None:
    """Raise unless ``data`` is a safetensors blob with a 4-D ``z`` (C, T', H', W')."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(bytes(data))
    except (SafetensorError, ValueError) as err:
        raise SampleError(f"sample {key}: unreadable latents.safetensors ({err})") from err
    if "z" not in tensors or tensors["z"].ndim != 4:
        raise SampleError(f"sample {key}: latents.safetensors needs a 4-D tensor 'z' (C, T', H', W')")
