"""Keypoint tracks for bundle adjustment (DESIGN §4): SIFT + sequential matching + union-find.

A *track* is one scene point seen in several frames; :class:`Tracks` stores
the observations flat (frame, point, uv), the layout bundle adjustment
consumes. Where tracks come from is a seam: anything with an ``extract``
method of the :class:`TrackSource` protocol fits, so a learned dense-flow
front-end (e.g. tracks from chained optical flow or a point tracker) can
replace :class:`SiftTrackSource` without touching bundle adjustment.

The SIFT front-end: pycolmap's SIFT per frame, then frame t matched with
frames t+1 .. t+match_window (ratio test + mutual nearest neighbour on L2
descriptor distance), and the matches merged into tracks as connected
components of the match graph (union-find); a component that holds two
keypoints of the same frame is ambiguous and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pycolmap
import torch
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from wmkit.annotate.types import AnnotateError

__all__ = ["Tracks", "TrackSource", "SiftTrackSource", "extract_tracks", "match_descriptors", "merge_matches"]


@dataclass(frozen=True)
class Tracks:
    """Observations of tracked points: observation n is point ``point[n]`` seen at ``uv[n]`` in ``frame[n]``."""

    frame: np.ndarray  # (N,) int64 frame index in [0, num_frames)
    point: np.ndarray  # (N,) int64 track index in [0, num_points)
    uv: np.ndarray  # (N, 2) float64 pixels (x right, y down; pixel (i, j) spans [i, i+1) x [j, j+1), COLMAP's convention)
    num_points: int
    num_frames: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame", np.asarray(self.frame, dtype=np.int64))
        object.__setattr__(self, "point", np.asarray(self.point, dtype=np.int64))
        object.__setattr__(self, "uv", np.asarray(self.uv, dtype=np.float64).reshape(-1, 2))
        n = len(self.frame)
        if self.point.shape != (n,) or self.uv.shape != (n, 2):
            raise ValueError(f"tracks: frame {self.frame.shape}, point {self.point.shape}, uv {self.uv.shape} disagree")
        if n and (self.frame.min() < 0 or self.frame.max() >= self.num_frames):
            raise ValueError(f"tracks: frame index outside [0, {self.num_frames})")
        if n and (self.point.min() < 0 or self.point.max() >= self.num_points):
            raise ValueError(f"tracks: point index outside [0, {self.num_points})")
        if not np.isfinite(self.uv).all():
            raise ValueError("tracks: non-finite uv")

    def __len__(self) -> int:
        return len(self.frame)


class TrackSource(Protocol):
    """A front-end that turns the frames of one clip into tracks (SIFT today, dense flow later)."""

    name: str

    def extract(self, frames: np.ndarray) -> Tracks:
        """Tracks of ``frames`` uint8 (T, H, W, 3)."""
        ...


def match_descriptors(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float = 0.8) -> np.ndarray:
    """Mutual nearest neighbours passing Lowe's ratio test in both directions.

    Args:
        desc_a: (Na, D) descriptors of one frame; desc_b: (Nb, D) of the other.
        ratio: a match is kept when its distance is below ``ratio`` x the second-best one.

    Returns:
        (M, 2) int64 index pairs ``(i into a, j into b)``.
    """
    if len(desc_a) < 2 or len(desc_b) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    dist = torch.cdist(torch.as_tensor(desc_a, dtype=torch.float32), torch.as_tensor(desc_b, dtype=torch.float32))
    best_ab, nn_ab = dist.topk(2, dim=1, largest=False)
    best_ba, nn_ba = dist.topk(2, dim=0, largest=False)
    i = torch.arange(len(desc_a))
    mutual = nn_ba[0, nn_ab[:, 0]] == i
    ratio_a = best_ab[:, 0] < ratio * best_ab[:, 1]
    ratio_b = (best_ba[0] < ratio * best_ba[1])[nn_ab[:, 0]]
    keep = mutual & ratio_a & ratio_b
    return torch.stack([i[keep], nn_ab[keep, 0]], dim=1).numpy().astype(np.int64)


def merge_matches(
    keypoints: list[np.ndarray], matches: dict[tuple[int, int], np.ndarray], min_length: int = 2
) -> Tracks:
    """Merge pairwise matches into tracks (connected components of the match graph).

    Args:
        keypoints: per frame, (N_t, 2) float keypoint positions in pixels.
        matches: ``{(t, u): (M, 2) index pairs}`` between keypoints of frames t and u.
        min_length: tracks seen in fewer frames are dropped.

    Returns:
        :class:`Tracks` numbered 0..num_points-1; components that contain two
        keypoints of one frame (a matching conflict) are dropped.
    """
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in keypoints])])
    n = int(offsets[-1])
    rows = [offsets[t] + m[:, 0] for (t, _), m in matches.items()]
    cols = [offsets[u] + m[:, 1] for (_, u), m in matches.items()]
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    frame = np.repeat(np.arange(len(keypoints)), [len(k) for k in keypoints])
    uv = np.concatenate(keypoints) if n else np.zeros((0, 2))

    size = np.bincount(label)
    frames_per_label = np.bincount(np.unique(label * len(keypoints) + frame) // len(keypoints), minlength=len(size))
    good = (size == frames_per_label) & (size >= min_length)
    keep = good[label]
    _, point = np.unique(label[keep], return_inverse=True)
    order = np.lexsort((frame[keep], point))
    return Tracks(
        frame=frame[keep][order],
        point=point[order],
        uv=uv[keep][order],
        num_points=int(good.sum()),
        num_frames=len(keypoints),
    )


@dataclass
class SiftTrackSource:
    """pycolmap SIFT on each frame, sequential mutual-ratio matching, union-find tracks."""

    max_features: int = 1024
    match_window: int = 3  # frame t is matched with t+1 .. t+match_window
    ratio: float = 0.8  # Lowe's ratio; 0.8 is the value of the SIFT paper
    name: str = "sift"

    def extract(self, frames: np.ndarray) -> Tracks:
        """Tracks of ``frames`` uint8 (T, H, W, 3)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise AnnotateError(f"tracks: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        options = pycolmap.FeatureExtractionOptions()
        options.sift.max_num_features = self.max_features
        options.num_threads = 1  # one clip per worker; the pipeline parallelises over clips
        extractor = pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)
        keypoints, descriptors = [], []
        for image in frames:
            grey = np.asarray(Image.fromarray(image).convert("L"))  # COLMAP's SIFT works on intensity
            kps, desc = extractor.extract_from_uint8_array(grey)
            xy = np.array([[k.x, k.y] for k in kps], dtype=np.float64).reshape(-1, 2)
            # COLMAP and wmkit's renderers share the convention "pixel centre at +0.5": no shift
            keypoints.append(xy[: self.max_features])
            descriptors.append(np.asarray(desc.data, dtype=np.float32)[: self.max_features])
        matches = {
            (t, u): match_descriptors(descriptors[t], descriptors[u], self.ratio)
            for t in range(len(frames))
            for u in range(t + 1, min(t + 1 + self.match_window, len(frames)))
        }
        return merge_matches(keypoints, matches)


def extract_tracks(frames: np.ndarray, *, max_features: int = 1024, match_window: int = 3) -> Tracks:
    """Tracks of ``frames`` uint8 (T, H, W, 3) with the SIFT front-end (see :class:`SiftTrackSource`)."""
    return SiftTrackSource(max_features=max_features, match_window=match_window).extract(frames)
