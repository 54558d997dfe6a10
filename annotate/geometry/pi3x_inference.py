"""Pi3X on long videos: overlapping windows chained by confidence-weighted Sim(3) (DESIGN §4).

::

    frames  0 ........ 15                                      window 0 (16 frames)
                   10 ........ 25                              window 1: frames 10-15 overlap window 0
                              20 ........ 35                   ...
            └ stride = window - overlap = 10 ┘

Window 0 is expressed relative to its first frame (c2w of frame 0 = identity;
Pi3X itself predicts poses in an arbitrary frame). Each later window is mapped
into that frame by the Sim(3) (scale, rotation, translation) that best aligns
its world points on the overlap frames with the points already placed there,
weighted by the product of both confidences; the overlap frames keep their
earlier geometry and only the new frames are emitted. Only the last
``overlap`` frames' (subsampled) points and the current window are held, so
memory does not grow with the video length. Why 16 / 6: 16 frames fit an
H100 at the 255k-pixel input with room for bf16 activations, and 6 overlap
frames (≈ 40 %) give the alignment several views of the shared geometry.

Resolution: frames of any H x W are resized (bilinear, antialiased) to the
largest size within ``pixel_budget`` pixels (upstream's 255,000) with both
sides multiples of the patch size 14 and the aspect ratio kept as closely as
possible (:func:`pi3x_input_size`); depth and confidence are resized back to
H x W and K is rescaled to the input pixels (pixel centres at integer
coordinates, OpenCV). On CUDA the network runs under bf16 autocast (its dense
heads and pose math stay fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from wmkit.annotate.geometry.pi3x_model import Pi3X

__all__ = ["WindowConfig", "FrameGeometry", "pi3x_input_size", "intrinsics_from_points", "weighted_sim3",
           "run_windows", "predict_video"]


@dataclass(frozen=True)
class WindowConfig:
    """How a long video is cut into Pi3X windows and aligned."""

    window: int = 16  # frames per network call
    overlap: int = 6  # frames shared by consecutive windows (used for the Sim(3))
    pixel_budget: int = 255_000  # network input pixels per frame (upstream default)
    align_stride: int = 4  # keep every n-th pixel (both axes) of overlap frames for the Sim(3)

    def __post_init__(self) -> None:
        if not 1 <= self.overlap < self.window:
            raise ValueError(f"WindowConfig: overlap {self.overlap} must be in [1, window {self.window})")
        if self.pixel_budget < 14 * 14 or self.align_stride < 1:
            raise ValueError(f"WindowConfig: pixel_budget {self.pixel_budget} < 196 or align_stride {self.align_stride} < 1")


@dataclass
class FrameGeometry:
    """Geometry of one frame at the resolution it was given (H x W)."""

    index: int  # frame number in the video
    depth: np.ndarray  # (H, W) float32 z-depth, scale of the first window
    conf: np.ndarray  # (H, W) float32 in [0, 1]
    c2w: np.ndarray  # (4, 4) float64, OpenCV axes, relative to frame 0
    K: np.ndarray  # (3, 3) float64 pixels of the H x W frame


def pi3x_input_size(height: int, width: int, pixel_budget: int = 255_000, patch: int = 14) -> tuple[int, int]:
    """(h, w) network input size: multiples of ``patch``, h*w <= ``pixel_budget``, aspect ratio close to height/width."""
    scale = math.sqrt(pixel_budget / (height * width))
    cols, rows = max(1, round(width * scale / patch)), max(1, round(height * scale / patch))
    while cols * rows * patch * patch > pixel_budget:  # shrink the side that is too long for the aspect ratio
        if cols / rows > width / height:
            cols -= 1
        else:
            rows -= 1
    return rows * patch, cols * patch


def intrinsics_from_points(points: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor) -> np.ndarray:
    """Pinhole K (N, 3, 3) that best projects camera-frame ``points`` (N, H, W, 3) onto their pixel grid.

    Per frame and axis a weighted least-squares line u = fx·X/Z + cx over the
    pixels (u = column index, v = row index, centres at integers) with
    ``weights`` (N, H, W) >= 0; points with Z <= 0 get weight 0. Solved in
    closed form in float64 on the inputs' device (tensors stay on the GPU).
    """
    points, weights = torch.as_tensor(points).double(), torch.as_tensor(weights).double().to(points.device)
    N, H, W, _ = points.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=points.device),
                          torch.arange(W, dtype=torch.float64, device=points.device), indexing="ij")  # fmt: skip
    z = points[..., 2]
    ok = z > 0
    w = torch.where(ok, weights, 0.0).flatten(1)  # (N, HW)
    few = ((w > 0).sum(1) < 3).nonzero()
    if len(few):
        raise ValueError(f"intrinsics_from_points: frame {int(few[0])} has fewer than 3 points in front of the camera")
    zs = torch.where(ok, z, 1.0)
    K = torch.eye(3, dtype=torch.float64).repeat(N, 1, 1)
    for axis, pixel in ((0, u), (1, v)):
        x, y = (points[..., axis] / zs).flatten(1), pixel.flatten()
        sw, sx, sy = w.sum(1), (w * x).sum(1), (w * y).sum(1)
        sxx, sxy = (w * x * x).sum(1), (w * x * y).sum(1)
        f = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
        K[:, axis, axis], K[:, axis, 2] = f.cpu(), ((sy - f * sx) / sw).cpu()
    return K.numpy()


def weighted_sim3(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """4x4 similarity T = [sR t; 0 1] minimising Σ w |dst - (sR src + t)|² (weighted Umeyama).

    src, dst: (M, 3) corresponding points; weights: (M,) >= 0, not all zero.
    """
    w = weights / weights.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd((xd * w[:, None]).T @ xs)
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ S @ Vt
    s = float(np.sum(D * np.diag(S)) / (w @ np.sum(xs**2, axis=1)))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = s * R, mu_d - s * R @ mu_s
    return T


def _to_input(frames: list[np.ndarray], size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 frames [(H, W, 3)] -> (1, N, 3, h, w) float in [0, 1] on ``device``."""
    x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)[None]


def _to_host(t: torch.Tensor) -> np.ndarray:
    """``t`` as a numpy array; from CUDA through pinned memory (pageable copies are several times slower)."""
    if not t.is_cuda:
        return t.numpy()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t)
    return host.numpy()


@torch.no_grad()
def _predict_window(model: Pi3X, frames: list[np.ndarray], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Network outputs for one window, fp32 on the model's device: world points, local points (N, h, w, 3),
    conf (N, h, w); and c2w (N, 4, 4) float64 on the CPU."""
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(_to_input(frames, size, device))
    return {
        "points": out.points[0].float(),
        "local": out.local_points[0].float(),
        "conf": torch.sigmoid(out.conf[0, ..., 0]).float(),
        "c2w": out.camera_poses[0].double().cpu(),
    }


def _transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


def _frame_outputs(first: int, local: torch.Tensor, conf: torch.Tensor, c2w: list[np.ndarray], scale: float,
                   K_in: np.ndarray, hw: tuple[int, int]) -> list[FrameGeometry]:
    """Frames ``first``, ``first`` + 1, …: depth/conf resized on the device from the network size to ``hw``,
    K rescaled to those pixels."""
    H, W = hw
    h, w = conf.shape[-2:]
    maps = F.interpolate(torch.stack([local[..., 2] * scale, conf], dim=1), size=(H, W), mode="bilinear",
                         align_corners=False)  # fmt: skip
    maps[:, 1].clamp_(0.0, 1.0)
    maps = _to_host(maps)
    sx, sy = W / w, H / h
    K = K_in.copy()
    K[:, 0, 0], K[:, 1, 1] = K_in[:, 0, 0] * sx, K_in[:, 1, 1] * sy
    K[:, 0, 2], K[:, 1, 2] = (K_in[:, 0, 2] + 0.5) * sx - 0.5, (K_in[:, 1, 2] + 0.5) * sy - 0.5
    return [FrameGeometry(index=first + i, depth=maps[i, 0], conf=maps[i, 1], c2w=c2w[i], K=K[i])
            for i in range(len(maps))]


def run_windows(model: Pi3X, frames: Iterable[np.ndarray], config: WindowConfig = WindowConfig()) -> Iterator[FrameGeometry]:
    """Stream :class:`FrameGeometry` frame by frame from uint8 RGB ``frames`` (each (H, W, 3), one size).

    ``frames`` may be a generator; at most ``config.window`` frames are held.
    """
    buffer: list[np.ndarray] = []  # frames of the window being filled
    known: list[tuple[np.ndarray, np.ndarray]] = []  # (points in frame-0 coords, conf), subsampled, of buffer[:len(known)]
    size = hw = None
    first_index = 0  # video index of buffer[0]
    to_world = None  # window coords -> frame-0 coords for the current window
    st = config.align_stride

    def process() -> Iterator[FrameGeometry]:
        nonlocal to_world, known, buffer, first_index
        pred = _predict_window(model, buffer, size)
        points = _to_host(pred["points"][:, ::st, ::st].contiguous()).astype(np.float64)  # for the Sim(3)
        conf = _to_host(pred["conf"][:, ::st, ::st].contiguous())
        poses = pred["c2w"].numpy()
        if not known:  # the first window defines the frame: its first camera becomes the identity
            to_world, scale = np.linalg.inv(poses[0]), 1.0
        else:
            n = len(known)
            src = points[:n].reshape(-1, 3)
            dst = np.concatenate([p.reshape(-1, 3) for p, _ in known])
            w = conf[:n].reshape(-1) * np.concatenate([c.reshape(-1) for _, c in known])
            to_world = weighted_sim3(src, dst, w.astype(np.float64))
            scale = float(np.cbrt(np.linalg.det(to_world[:3, :3])))
        new = slice(len(known), len(buffer))
        K = intrinsics_from_points(pred["local"][new], pred["conf"][new])
        c2w = [to_world @ pose for pose in poses[new]]
        for pose in c2w:
            pose[:3, :3] /= scale  # the Sim(3) scale moves into translations and depth, R stays a rotation
        yield from _frame_outputs(first_index + len(known), pred["local"][new], pred["conf"][new], c2w, scale, K, hw)
        keep = range(len(buffer) - config.overlap, len(buffer))
        known = [(_transform(to_world, points[i]), conf[i]) for i in keep]
        first_index += len(buffer) - config.overlap
        buffer = buffer[-config.overlap:]

    for frame in frames:
        if hw is None:
            hw = frame.shape[:2]
            size = pi3x_input_size(*hw, config.pixel_budget, model.config.patch_size)
        if frame.shape != (*hw, 3) or frame.dtype != np.uint8:
            raise ValueError(f"run_windows: frame {first_index + len(buffer)} is {frame.dtype} {frame.shape}, "
                             f"expected uint8 {(*hw, 3)}")
        buffer.append(frame)
        if len(buffer) == config.window:
            yield from process()
    if len(buffer) > len(known):  # a tail shorter than a window (or a video shorter than one)
        yield from process()


def predict_video(model: Pi3X, frames: np.ndarray, config: WindowConfig = WindowConfig()) -> dict[str, np.ndarray]:
    """Stacked geometry of uint8 ``frames`` (T, H, W, 3): depth, conf (T, H, W), c2w (T, 4, 4), K (T, 3, 3)."""
    out = list(run_windows(model, iter(frames), config))
    return {
        "depth": np.stack([f.depth for f in out]),
        "conf": np.stack([f.conf for f in out]),
        "c2w": np.stack([f.c2w for f in out]),
        "K": np.stack([f.K for f in out]),
    }
