"""Render a camera path's frames in batches through a pluggable rasterizer (DESIGN §5).

::

    Splats (numpy, raw) ──► activated tensors on the device, once per scene (SceneTensors)
    Cameras (T) ──► batches of ``batch_size`` views ──► rasterize(..., render_mode="RGB+ED")
        ──► per batch, on the device: RGB -> uint8; expected depth and alpha pooled by
            ``depth_stride`` ──► host arrays (Frames)

The rasterizer is ``gsplat.rasterization`` on CUDA when gsplat imports, else
the plain-torch twin :func:`wmkit.render.reference_rasterizer.rasterization`
on CPU (same arguments; :func:`pick_rasterizer`). The splats go to the device
once, not once per batch: a 1 M-Gaussian scene is ~240 MB of float32, and
re-uploading it per batch would cost more than gsplat's rasterization.

Sizes: the cameras' K are in pixels of ``camera_size`` (default: the render
size); rendering at another size scales K (:func:`~wmkit.datasets.cameras.scale_intrinsics`).
Depth pooling keeps the shard's ``depth.npz`` small at 720p (961 x 720 x 1280
float16 would be 1.8 GB): a pooled pixel's expected depth is the block's
accumulated depth over its accumulated alpha, which is what a render at the
lower resolution would give for an opaque surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wmkit.datasets.cameras import Cameras, invert_rigid, scale_intrinsics
from wmkit.render.reference_rasterizer import Rasterize, rasterization
from wmkit.render.splats import Splats

__all__ = [
    "Frames",
    "Rasterizer",
    "SceneTensors",
    "host_rasterize",
    "pick_rasterizer",
    "render_frames",
]

RasterizerChoice = Literal["auto", "gsplat", "reference"]


@dataclass(frozen=True)
class Rasterizer:
    """A rasterize function with ``gsplat.rasterization``'s signature, the device it runs on, and its name."""

    rasterize: Rasterize
    device: str
    name: str  # "gsplat <version>" or "reference"


def pick_rasterizer(choice: RasterizerChoice = "auto") -> Rasterizer:
    """gsplat on CUDA (``"gsplat"``, or ``"auto"`` when CUDA and gsplat are there), else the CPU reference.

    Raises:
        RuntimeError: ``"gsplat"`` asked for without CUDA or without the gsplat package.
    """
    if choice not in ("auto", "gsplat", "reference"):
        raise ValueError(f"pick_rasterizer: choice must be 'auto', 'gsplat' or 'reference', got {choice!r}")
    if choice != "reference" and torch.cuda.is_available():
        try:
            import gsplat
        except ImportError as err:
            if choice == "gsplat":
                raise RuntimeError(f"gsplat asked for but not importable ({err})") from err
        else:
            return Rasterizer(gsplat.rasterization, "cuda", f"gsplat {gsplat.__version__}")
    elif choice == "gsplat":
        raise RuntimeError("gsplat asked for but CUDA is not available")
    return Rasterizer(rasterization, "cpu", "reference")


def host_rasterize(rasterizer: Rasterizer) -> Rasterize:
    """``rasterizer.rasterize`` taking and returning CPU tensors, for callers that build them on the host.

    :func:`~wmkit.render.reference_rasterizer.render_views` (and through it the
    planner's alpha check) passes CPU tensors; gsplat's kernels need them on CUDA.
    """
    if rasterizer.device == "cpu":
        return rasterizer.rasterize

    def rasterize(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor, dict]:
        def move(x: Any) -> Any:
            return x.to(rasterizer.device) if isinstance(x, Tensor) else x

        colors, alphas, meta = rasterizer.rasterize(*map(move, args), **{k: move(v) for k, v in kwargs.items()})
        return colors.cpu(), alphas.cpu(), meta

    return rasterize


@dataclass(frozen=True)
class SceneTensors:
    """A scene's Gaussians activated and on the rasterizer's device, uploaded once and reused per batch.

    Attributes: means [N, 3], quats [N, 4] wxyz, scales [N, 3] (std), opacities [N], sh [N, K, 3]; sh_degree.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor
    sh_degree: int

    @classmethod
    def from_splats(cls, splats: Splats, device: str) -> "SceneTensors":
        """Activate ``splats`` (exp scales, sigmoid opacities) and move them to ``device`` as float32."""
        def tensor(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)

        return cls(tensor(splats.means), tensor(splats.quats), tensor(splats.scales), tensor(splats.opacities),
                   tensor(splats.sh), splats.sh_degree)  # fmt: skip


@dataclass(frozen=True)
class Frames:
    """Rendered frames of a path.

    Attributes:
        rgb: (T, H, W, 3) uint8.
        depth: (T, H / s, W / s) float32 expected depth (camera z, scene units), 0 where alpha is 0;
            s = ``depth_stride``.
        alpha: (T, H / s, W / s) float32 accumulated opacity in [0, 1] (block mean).
        depth_stride: the pooling factor s of depth and alpha.
    """

    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    depth_stride: int


def _pool(depth: Tensor, alpha: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Block-pool [C, H, W] expected depth and alpha by ``stride`` (module docstring)."""
    if stride == 1:
        return depth, alpha
    acc = F.avg_pool2d((depth * alpha)[:, None], stride)[:, 0]
    alpha = F.avg_pool2d(alpha[:, None], stride)[:, 0]
    return torch.where(alpha > 0, acc / alpha.clamp_min(1e-10), 0.0), alpha


def render_frames(
    scene: Splats | SceneTensors,
    cameras: Cameras,
    size: tuple[int, int],
    *,
    camera_size: tuple[int, int] | None = None,
    rasterizer: Rasterizer | None = None,
    batch_size: int = 16,
    depth_stride: int = 1,
    near_plane: float = 0.01,
    on_batch: Callable[[int], None] | None = None,
) -> Frames:
    """Render every camera of ``cameras`` at ``size`` (W, H): uint8 RGB, expected depth and alpha.

    Args:
        scene: the Gaussians, raw (uploaded here) or already on the rasterizer's device.
        cameras: T cameras (OpenCV c2w; K in pixels of ``camera_size``).
        size: render size (W, H) in pixels; W and H must be multiples of ``depth_stride``.
        camera_size: the size (W, H) the cameras' K refer to (default ``size``).
        rasterizer: from :func:`pick_rasterizer` (default: ``pick_rasterizer("auto")``).
        batch_size: views per rasterizer call (bounds device memory).
        depth_stride: pooling factor of the returned depth and alpha.
        near_plane: nearest camera z rendered.
        on_batch: called with the number of frames after each batch (a progress bar's ``update``).
    """
    width, height = size
    if width % depth_stride or height % depth_stride or depth_stride < 1 or batch_size < 1:
        raise ValueError(f"render_frames: size {width}x{height} must be a multiple of depth_stride {depth_stride} "
                         f"(>= 1), batch_size {batch_size} >= 1")  # fmt: skip
    rasterizer = rasterizer or pick_rasterizer()
    if isinstance(scene, Splats):
        scene = SceneTensors.from_splats(scene, rasterizer.device)
    K = scale_intrinsics(cameras.K, camera_size or size, size)
    viewmats = invert_rigid(cameras.c2w)
    T, s = len(cameras), depth_stride
    rgb = np.empty((T, height, width, 3), np.uint8)
    depth = np.empty((T, height // s, width // s), np.float32)
    alpha = np.empty((T, height // s, width // s), np.float32)
    with torch.no_grad():
        for lo in range(0, T, batch_size):
            hi = min(lo + batch_size, T)
            colors, alphas, _ = rasterizer.rasterize(
                scene.means, scene.quats, scene.scales, scene.opacities, scene.sh,
                torch.as_tensor(viewmats[lo:hi], dtype=torch.float32, device=rasterizer.device),
                torch.as_tensor(K[lo:hi], dtype=torch.float32, device=rasterizer.device),
                width, height, near_plane=near_plane, sh_degree=scene.sh_degree, render_mode="RGB+ED",
            )  # fmt: skip
            a = alphas[..., 0]
            d, a = _pool(torch.where(a > 0, colors[..., 3], 0.0), a, s)
            rgb[lo:hi] = (colors[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            depth[lo:hi] = d.cpu().numpy()
            alpha[lo:hi] = a.cpu().numpy()
            if on_batch is not None:
                on_batch(hi - lo)
    return Frames(rgb, depth, alpha, s)
