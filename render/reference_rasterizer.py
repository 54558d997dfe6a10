"""Plain-torch 3DGS rasterizer for small scenes on CPU: the reference twin of gsplat's ``rasterization``.

:func:`rasterization` takes the subset of ``gsplat.rasterization``'s arguments
wmkit uses, with the same names, order, shapes and meanings, and returns the
same ``(render_colors, render_alphas, meta)``; so :func:`render_views` renders
through either, and the GPU parity test swaps gsplat in. The math follows
gsplat 1.x (``gsplat/cuda/_torch_impl.py`` and the CUDA kernels):

1. world -> camera with ``viewmats`` (world-to-camera, OpenCV axes), 3D
   covariance ``R S S^T R^T`` from the normalised wxyz quaternion and scales;
2. EWA projection: ``cov2d = J cov_c J^T`` with the perspective Jacobian J at
   the mean, x/z and y/z clamped to 1.3x the half field of view (as gsplat),
   plus ``eps2d`` = 0.3 px^2 on the diagonal (the low-pass filter); Gaussians
   nearer than ``near_plane``, farther than ``far_plane`` or with det <= 0
   are culled; radius = ceil(3 sqrt(largest eigenvalue));
3. colour: SH of degree ``sh_degree`` evaluated along the normalised
   direction camera centre -> mean, then ``max(sh + 0.5, 0)``;
4. each pixel (centre at +0.5) composites the Gaussians front to back by
   camera depth z: ``alpha = min(0.999, opacity exp(-sigma))``, skipped when
   ``alpha < 1/255``, stopping before the first Gaussian that would bring the
   transmittance to <= 1e-4. A Gaussian reaches only the 16 x 16 tiles its
   radius box overlaps, as in gsplat's tile intersection.

Where the brief and gsplat differ, gsplat wins: its alpha clamp is 0.999
(graphdeco-inria's original rasterizer uses 0.99). Expected depth ("ED") is
the alpha-weighted mean z, accumulated depth divided by alpha.

Cost is O(pixels x Gaussians) per view in chunks: fine for thousands of
Gaussians at 160 x 120, not for DL3DV scenes (gsplat on GPU does those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wmkit.datasets.cameras import invert_rigid
from wmkit.render.splats import Splats

__all__ = ["Rendering", "rasterization", "render_views", "spherical_harmonics"]

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]

_ALPHA_MAX = 0.999  # gsplat's clamp (graphdeco-inria: 0.99)
_ALPHA_MIN = 1.0 / 255.0
_T_MIN = 1e-4
_TILE = 16
_CHUNK = 256  # Gaussians composited per step: bounds memory at pixels x 256

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435)  # fmt: skip


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour of SH coefficients along directions (real SH, 3DGS sign convention).

    Args:
        degree: SH degree 0-3 to use (coefficients beyond it are ignored).
        dirs: [..., 3] view directions (normalised here).
        coeffs: [..., K, 3] coefficients, K >= (degree + 1)^2.

    Returns:
        [..., 3] raw SH value (before the +0.5 offset).
    """
    if not 0 <= degree <= 3 or coeffs.shape[-2] < (degree + 1) ** 2:
        raise ValueError(f"spherical_harmonics: degree {degree} needs K >= {(degree + 1) ** 2}, got {coeffs.shape}")
    x, y, z = F.normalize(dirs, dim=-1).unbind(-1)
    basis = [torch.full_like(x, _C0)]
    if degree >= 1:
        basis += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [_C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * zz - xx - yy), _C2[3] * x * z, _C2[4] * (xx - yy)]
    if degree >= 3:
        basis += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    b = torch.stack(basis, dim=-1)  # [..., (degree+1)^2]
    return (b[..., None] * coeffs[..., : b.shape[-1], :]).sum(dim=-2)


def _quat_to_rotmat(quats: Tensor) -> Tensor:
    """[N, 3, 3] rotations of [N, 4] wxyz quaternions (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))  # fmt: skip


def _project(
    means: Tensor, covars: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
    near_plane: float, far_plane: float, eps2d: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(means2d [N,2], conics [N,3] = (a, b, c) of the inverse 2D covariance, depths [N], radii [N]) for one camera."""
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ R.T + t
    covars_c = R @ covars @ R.T
    tx, ty, tz = means_c.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    safe_z = torch.where(tz.abs() < 1e-9, torch.full_like(tz, 1e-9), tz)
    # clamp the Jacobian's evaluation point to 1.3x the half field of view (gsplat), so Gaussians far
    # outside the image do not get huge footprints
    lim_x = 0.3 * 0.5 * width / fx
    lim_y = 0.3 * 0.5 * height / fy
    ux = torch.clamp(tx / safe_z, min=-(cx / fx + lim_x), max=(width - cx) / fx + lim_x) * safe_z
    uy = torch.clamp(ty / safe_z, min=-(cy / fy + lim_y), max=(height - cy) / fy + lim_y) * safe_z
    zero = torch.zeros_like(tz)
    J = torch.stack(
        [fx / safe_z, zero, -fx * ux / safe_z**2, zero, fy / safe_z, -fy * uy / safe_z**2], dim=-1
    ).reshape(-1, 2, 3)
    cov2d = J @ covars_c @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=means.dtype)
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack([cov2d[:, 1, 1], -cov2d[:, 0, 1], cov2d[:, 0, 0]], dim=-1) / det_safe[:, None]
    means2d = torch.stack([fx * tx / safe_z + cx, fy * ty / safe_z + cy], dim=-1)
    b = 0.5 * (cov2d[:, 0, 0] + cov2d[:, 1, 1])
    radius = torch.ceil(3.0 * torch.sqrt(b + torch.sqrt(torch.clamp(b * b - det_safe, min=0.01))))
    inside = (
        (means2d[:, 0] + radius > 0) & (means2d[:, 0] - radius < width)
        & (means2d[:, 1] + radius > 0) & (means2d[:, 1] - radius < height)
    )  # fmt: skip
    valid = (det > 0) & (tz > near_plane) & (tz < far_plane) & inside
    return means2d, conics, tz, torch.where(valid, radius, torch.zeros_like(radius))


def _composite(
    means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, radii: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of depth-sorted Gaussians: ([H, W, D] features, [H, W, 1] alpha)."""
    dtype = means2d.dtype
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) + 0.5  # [P, 2]
    tile = (pix - 0.5).div(_TILE).floor()  # [P, 2] tile column, row of each pixel
    tile_lo = torch.floor((means2d - radii[:, None]) / _TILE)  # [N, 2] as gsplat's isect_tiles
    tile_hi = torch.ceil((means2d + radii[:, None]) / _TILE)
    P = pix.shape[0]
    T = torch.ones(P, dtype=dtype)
    done = torch.zeros(P, dtype=torch.bool)
    out = torch.zeros(P, features.shape[-1], dtype=dtype)
    for start in range(0, len(means2d), _CHUNK):
        sl = slice(start, start + _CHUNK)
        d = pix[:, None, :] - means2d[None, sl, :]  # [P, G, 2]
        a, b, c = conics[sl].unbind(-1)
        sigma = 0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(opacities[None, sl] * torch.exp(-sigma), _ALPHA_MAX)
        in_tiles = ((tile[:, None, :] >= tile_lo[None, sl]) & (tile[:, None, :] < tile_hi[None, sl])).all(-1)
        alpha = torch.where((sigma >= 0) & (alpha >= _ALPHA_MIN) & in_tiles & ~done[:, None], alpha, 0.0)
        T_before = T[:, None] * torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
        # the first Gaussian that would bring T to <= 1e-4 ends the pixel, it and all after it left out
        stop = (T_before * (1 - alpha) <= _T_MIN) & (alpha > 0)
        keep = torch.cumsum(stop.to(torch.int32), dim=1) == 0
        weights = torch.where(keep, alpha * T_before, 0.0)
        out += weights @ features[sl]
        T = T * torch.where(keep, 1 - alpha, 1.0).prod(dim=1)
        done |= stop.any(dim=1)
    return out.reshape(height, width, -1), (1 - T).reshape(height, width, 1)


def rasterization(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,
    render_mode: RenderMode = "RGB",
) -> tuple[Tensor, Tensor, dict]:
    """Rasterize 3D Gaussians into C views; reference twin of ``gsplat.rasterization`` (method: module docstring).

    Args:
        means: [N, 3] centres (world).
        quats: [N, 4] rotations wxyz (normalised here).
        scales: [N, 3] standard deviations (activated, not log).
        opacities: [N] opacities in [0, 1] (activated).
        colors: [N, D] features, or [N, K, 3] SH coefficients when ``sh_degree`` is set.
        viewmats: [C, 4, 4] world-to-camera, OpenCV camera axes.
        Ks: [C, 3, 3] intrinsics in pixels.
        width, height: image size in pixels.
        near_plane, far_plane: depth range kept (camera z).
        eps2d: low-pass added to the 2D covariance diagonal (pixels^2).
        sh_degree: SH degree to evaluate, None for plain features.
        backgrounds: [C, D] colour behind the Gaussians (default black).
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D", "RGB+ED".

    Returns:
        render_colors [C, H, W, D(+1)], render_alphas [C, H, W, 1], meta with
        ``radii`` [C, N], ``means2d`` [C, N, 2], ``depths`` [C, N].
    """
    N = means.shape[0]
    C = viewmats.shape[0]
    shapes = {"quats": (quats, (N, 4)), "scales": (scales, (N, 3)), "opacities": (opacities, (N,)),
              "viewmats": (viewmats, (C, 4, 4)), "Ks": (Ks, (C, 3, 3))}  # fmt: skip
    for name, (x, want) in shapes.items():
        if tuple(x.shape) != want:
            raise ValueError(f"rasterization: {name} has shape {tuple(x.shape)}, expected {want}")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"rasterization: unknown render_mode {render_mode!r}")
    R = _quat_to_rotmat(quats)
    M = R * scales[:, None, :]
    covars = M @ M.transpose(1, 2)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    renders, alphas, meta = [], [], {"radii": [], "means2d": [], "depths": []}
    for i in range(C):
        means2d, conics, depths, radii = _project(
            means, covars, viewmats[i], Ks[i], width, height, near_plane, far_plane, eps2d
        )
        if sh_degree is None:
            rgb = colors
        else:
            rgb = torch.clamp_min(spherical_harmonics(sh_degree, means - campos[i], colors) + 0.5, 0.0)
        feats = {"RGB": [rgb], "D": [depths[:, None]], "ED": [depths[:, None]],
                 "RGB+D": [rgb, depths[:, None]], "RGB+ED": [rgb, depths[:, None]]}[render_mode]  # fmt: skip
        feats = torch.cat(feats, dim=-1)
        order = torch.argsort(torch.where(radii > 0, depths, torch.inf), stable=True)[: int((radii > 0).sum())]
        img, alpha = _composite(
            means2d[order], conics[order], opacities[order], feats[order], radii[order], width, height
        )
        if render_mode in ("ED", "RGB+ED"):
            img = torch.cat([img[..., :-1], img[..., -1:] / alpha.clamp_min(1e-10)], dim=-1)
        if backgrounds is not None:
            bg = backgrounds[i]
            if render_mode in ("RGB+D", "RGB+ED"):
                bg = torch.cat([bg, bg.new_zeros(1)])
            img = img + bg * (1 - alpha)
        renders.append(img)
        alphas.append(alpha)
        meta["radii"].append(radii.int())
        meta["means2d"].append(means2d)
        meta["depths"].append(depths)
    return torch.stack(renders), torch.stack(alphas), {k: torch.stack(v) for k, v in meta.items()}


Rasterize = Callable[..., tuple[Tensor, Tensor, dict]]


@dataclass(frozen=True)
class Rendering:
    """Rendered views of a scene.

    Attributes:
        rgb: (C, H, W, 3) float32 colour in [0, 1] (clipped).
        depth: (C, H, W) float32 expected depth (camera z, scene units); 0 where alpha is 0.
        alpha: (C, H, W) float32 accumulated opacity in [0, 1].
    """

    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray


def render_views(
    splats: Splats,
    c2w: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    rasterize: Rasterize = rasterization,
    device: str = "cpu",
    near_plane: float = 0.01,
) -> Rendering:
    """Render ``splats`` from cameras with RGB, expected depth and alpha.

    Args:
        splats: the scene's Gaussians (raw parameters; activated here).
        c2w: (C, 4, 4) camera-to-world, OpenCV axes.
        K: (C, 3, 3) intrinsics in pixels of a ``width`` x ``height`` image.
        width, height: image size in pixels.
        rasterize: :func:`rasterization` (CPU reference) or ``gsplat.rasterization`` (GPU): same arguments.
        device: torch device the tensors go to.
        near_plane: nearest camera z rendered.
    """
    def tensor(x: np.ndarray) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=device)

    viewmats = tensor(invert_rigid(np.asarray(c2w, dtype=np.float64)))
    colors, alphas, _ = rasterize(
        tensor(splats.means), tensor(splats.quats), tensor(splats.scales), tensor(splats.opacities),
        tensor(splats.sh), viewmats, tensor(K), width, height,
        near_plane=near_plane, sh_degree=splats.sh_degree, render_mode="RGB+ED",
    )  # fmt: skip
    alpha = alphas[..., 0]
    depth = torch.where(alpha > 0, colors[..., 3], 0.0)
    return Rendering(
        rgb=colors[..., :3].clamp(0, 1).cpu().numpy(),
        depth=depth.cpu().numpy(),
        alpha=alpha.cpu().numpy(),
    )
