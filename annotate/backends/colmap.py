"""Classical baseline backend: pycolmap incremental SfM on keyframes, one shared K, up to scale.

Needs no weights. Per clip::

    frames ──every k-th──► keyframes as PNG in a temp folder
           ──► pycolmap.extract_features (SIFT, one camera for all images)
           ──► match_exhaustive (few keyframes) or match_sequential (overlap window)
           ──► incremental_mapping ──► largest reconstruction
           ──► keyframe poses; other frames by slerp/linear interpolation
               (wmkit.datasets.cameras.interpolate_cameras; frames beyond the first
               or last registered keyframe hold its pose)
           ──► sparse depth: each frame gets the 3D points observed by its nearest
               registered keyframe (a visibility proxy: points that keyframe saw
               are not occluded there), projected with the frame's pose; the
               nearest point wins a pixel. conf is 1 where a point projects, 0
               elsewhere, with depth 0 there (unknown).

K is one SIMPLE_PINHOLE (f, cx, cy) or PINHOLE (fx, fy, cx, cy) camera refined by
COLMAP's bundle adjustment (principal point held at the image centre, COLMAP's
default), repeated for every frame. Depth and c2w share COLMAP's arbitrary
scale and world frame. Fewer registered keyframes than ``min_registered``
(absolute and fraction) raises AnnotateError naming the clip.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pycolmap
from PIL import Image

from wmkit.annotate.backends.registry import register_backend
from wmkit.annotate.types import AnnotateError, Prediction
from wmkit.datasets.cameras import interpolate_cameras, invert_rigid

__all__ = ["ColmapBackend"]


@register_backend("colmap")
@dataclass(frozen=True)
class ColmapBackend:
    """pycolmap SfM options (module docstring for the method)."""

    name: ClassVar[str] = "colmap"
    keyframe_stride: int = 2  # every k-th frame is a keyframe (the last frame too)
    camera_model: Literal["SIMPLE_PINHOLE", "PINHOLE"] = "SIMPLE_PINHOLE"
    max_num_features: int = 4096  # SIFT features per keyframe
    domain_size_pooling: bool = True  # DSP-SIFT with affine shapes: slower, but it made small, blurry
    # synthetic frames register repeatably across RANSAC seeds and thread counts
    exhaustive_below: int = 40  # match all keyframe pairs when there are fewer keyframes, else sequential
    sequential_overlap: int = 10  # sequential matching: neighbours each keyframe is matched with
    # COLMAP's mapper defaults (100 / 30 inliers, 16 deg) suit megapixel photo collections; short,
    # small video clips have fewer features and less parallax, so these are lower.
    init_min_num_inliers: int = 30  # two-view inliers of the initial pair
    abs_pose_min_num_inliers: int = 15  # 2D-3D inliers to register a further keyframe
    # Median triangulation angle of the initial pair, tried in turn until enough keyframes register:
    # no single value suits every clip (a low angle picks a weak pair, a high one none at all), and
    # features and matches are reused, so a retry costs only the mapping.
    init_min_tri_angles_deg: tuple[float, ...] = (8.0, 4.0)
    min_registered: int = 3  # fewest registered keyframes accepted ...
    min_registered_fraction: float = 0.5  # ... and fewest as a share of the keyframes
    num_threads: int = -1  # -1: all cores
    random_seed: int = 0  # COLMAP's RANSAC seed, for repeatable results

    def __post_init__(self) -> None:
        object.__setattr__(self, "init_min_tri_angles_deg", tuple(float(a) for a in self.init_min_tri_angles_deg))
        if self.keyframe_stride < 1:
            raise ValueError(f"ColmapBackend: keyframe_stride must be >= 1, got {self.keyframe_stride}")
        if self.camera_model not in ("SIMPLE_PINHOLE", "PINHOLE"):
            raise ValueError(f"ColmapBackend: camera_model must be SIMPLE_PINHOLE or PINHOLE, got {self.camera_model}")
        if not self.init_min_tri_angles_deg or min(self.init_min_tri_angles_deg) <= 0:
            raise ValueError(
                f"ColmapBackend: init_min_tri_angles_deg must be positive angles, got {self.init_min_tri_angles_deg}"
            )
        if self.random_seed < 0:
            raise ValueError(f"ColmapBackend: random_seed must be >= 0, got {self.random_seed}")
        if self.min_registered < 2 or not 0.0 <= self.min_registered_fraction <= 1.0:
            raise ValueError(
                f"ColmapBackend: need min_registered >= 2 and min_registered_fraction in [0, 1], "
                f"got {self.min_registered}, {self.min_registered_fraction}"
            )

    def setup(self) -> None:
        """Quiet COLMAP's per-image INFO logging (weight-free: nothing to load)."""
        pycolmap.logging.minloglevel = pycolmap.logging.WARNING

    def keyframes(self, num_frames: int) -> np.ndarray:
        """(N,) int64 keyframe indexes: every ``keyframe_stride``-th frame, plus the last one."""
        return np.unique(np.append(np.arange(0, num_frames, self.keyframe_stride), num_frames - 1))

    def predict(self, frames: np.ndarray, clip_id: str) -> Prediction:
        """SfM of ``frames`` uint8 (T, H, W, 3) RGB -> up-to-scale c2w, shared K, sparse depth."""
        frames = np.asarray(frames)
        where = f"clip {clip_id!r}: backend 'colmap'"
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise AnnotateError(f"{where}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        T, H, W, _ = frames.shape
        keys = self.keyframes(T)
        needed = max(self.min_registered, int(np.ceil(self.min_registered_fraction * len(keys))))
        if len(keys) < needed:
            raise AnnotateError(f"{where}: {T} frames give {len(keys)} keyframes, {needed} needed")
        with tempfile.TemporaryDirectory(prefix="wmkit-colmap-") as tmp:
            rec = self._reconstruct(frames, keys, Path(tmp), needed, where)
        registered = {int(Path(im.name).stem): im for im in rec.images.values() if im.has_pose}
        if len(registered) < needed:
            raise AnnotateError(f"{where}: SfM registered {len(registered)} of {len(keys)} keyframes, {needed} needed")
        reg_index = np.array(sorted(registered), dtype=np.int64)
        reg_w2c = np.tile(np.eye(4), (len(reg_index), 1, 1))
        for i, f in enumerate(reg_index):
            reg_w2c[i, :3] = registered[f].cam_from_world().matrix()
        camera = next(iter(rec.cameras.values()))
        K1 = camera.calibration_matrix()
        c2w, K = interpolate_cameras(
            invert_rigid(reg_w2c), np.repeat(K1[None], len(reg_index), axis=0), reg_index, np.arange(T)
        )
        observed = [
            np.array([rec.points3D[p.point3D_id].xyz for p in registered[f].points2D if p.has_point3D()]).reshape(-1, 3)
            for f in reg_index
        ]
        nearest = np.abs(np.arange(T)[:, None] - reg_index[None, :]).argmin(axis=1)
        depth = np.stack([_splat_depth(observed[nearest[t]], c2w[t], K[t], H, W) for t in range(T)])
        return Prediction(depth=depth, conf=(depth > 0).astype(np.float32), c2w=c2w, K=K, metric=False, backend=self.name)

    def _reconstruct(
        self, frames: np.ndarray, keys: np.ndarray, tmp: Path, needed: int, where: str
    ) -> pycolmap.Reconstruction:
        """Extract and match features on the keyframes, then map with each initial angle until
        ``needed`` keyframes register; the largest model found."""
        images, database, sparse = tmp / "images", tmp / "database.db", tmp / "sparse"
        images.mkdir()
        sparse.mkdir()
        for f in keys:
            Image.fromarray(frames[f]).save(images / f"{f:06d}.png")  # lossless: SIFT sees the decoded pixels
        pycolmap.set_random_seed(self.random_seed)
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = self.camera_model
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = self.num_threads
        extraction.sift.max_num_features = self.max_num_features
        extraction.sift.domain_size_pooling = self.domain_size_pooling
        extraction.sift.estimate_affine_shape = self.domain_size_pooling
        device = pycolmap.Device.cpu  # keep SIFT off the GPU the networks use
        pycolmap.extract_features(
            database, images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
            extraction_options=extraction, device=device,
        )
        if len(keys) < self.exhaustive_below:
            pycolmap.match_exhaustive(database, device=device)
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = self.sequential_overlap
            pycolmap.match_sequential(database, pairing_options=pairing, device=device)
        best = None
        for angle in self.init_min_tri_angles_deg:
            options = pycolmap.IncrementalPipelineOptions()
            options.multiple_models = False
            options.min_model_size = self.min_registered
            options.num_threads = self.num_threads
            options.random_seed = self.random_seed
            options.mapper.init_min_num_inliers = self.init_min_num_inliers
            options.mapper.abs_pose_min_num_inliers = self.abs_pose_min_num_inliers
            options.mapper.init_min_tri_angle = angle
            options.triangulation.ignore_two_view_tracks = False  # few features: keep every track
            attempt = sparse / f"angle_{angle:g}"
            attempt.mkdir()
            models = pycolmap.incremental_mapping(database, images, attempt, options=options)
            for model in models.values():
                if best is None or model.num_reg_images() > best.num_reg_images():
                    best = model
            if best is not None and best.num_reg_images() >= needed:
                break
        if best is None:
            raise AnnotateError(f"{where}: SfM found no initial pair among {len(keys)} keyframes")
        return best


def _splat_depth(points: np.ndarray, c2w: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) float32 z-depth of world ``points`` (N, 3) seen by camera ``c2w`` (4, 4), ``K`` (3, 3); 0 = none."""
    depth = np.full((height, width), np.inf)
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]  # world -> camera: R^T (p - c)
    cam = cam[cam[:, 2] > 0]
    uv = cam @ K.T
    col = np.floor(uv[:, 0] / uv[:, 2]).astype(np.int64)  # pixel (i, j) spans [j, j+1) x [i, i+1)
    row = np.floor(uv[:, 1] / uv[:, 2]).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    np.minimum.at(depth, (row[inside], col[inside]), cam[inside, 2])
    return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
