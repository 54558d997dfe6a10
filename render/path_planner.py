"""Camera paths through splat scenes: 961 frames at 16 fps, smooth, capped, clear of the splats (DESIGN §5).

One attempt, seeded::

    key poses ──► push keys to clearance ──► splines (positions: CubicSpline over chord
    (training cameras        (clearance      length; rotations: RotationSpline) sampled
     or a random walk)        gradient)      densely ──► re-time under the speed and
                                             turn-rate caps ──► 961 frames ──► checks

Re-timing: each dense step gets the largest speed both caps allow
(``max_speed``, ``max_turn_rate_deg`` / step angle); that speed profile is
minimum-filtered then Gaussian-smoothed over the same window, which keeps it
under the caps everywhere and removes speed jumps. A path longer than the clip
stops where the clip ends; a shorter one is walked slower, with the spare time
spread along it.

Checks on every frame (an attempt failing one is rejected with the reason):
clearance >= ``min_clearance`` (:class:`~wmkit.render.clearance.ClearanceField`);
coverage >= ``min_coverage``, the share of cells of a coarse image grid that
some splat centre projects into (cheap, occlusion-blind: it catches views into
empty space or out of the captured region); optionally the mean alpha of a
tiny render every ``alpha_stride`` frames, through any rasterizer with
``gsplat.rasterization``'s signature.

Lengths are in scene units times the unit of the scene: metres for metric
scenes, the capture radius (``SceneFrame.scale``) otherwise. Attempt ``a`` of
seed ``s`` draws from ``numpy.random.default_rng([s, a])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter1d, minimum_filter1d
from scipy.spatial.transform import Rotation, RotationSpline

from wmkit.datasets.cameras import Cameras
from wmkit.render.clearance import ClearanceField
from wmkit.render.reference_rasterizer import Rasterize, render_views
from wmkit.render.scenes import Scene, SceneError
from wmkit.render.poses import look_at_c2w, pinhole_K

__all__ = ["PathConfig", "PlannedPath", "PathError", "plan_path", "plot_path_topdown", "view_coverage"]

_DENSE_PER_FRAME = 8  # spline samples per output frame for arc length and angle
_SMOOTH_SIGMA_S = 1.0  # seconds of smoothing of the speed profile


class PathError(SceneError):
    """No acceptable path; the message names the scene and every attempt's reason."""


@dataclass(frozen=True)
class PathConfig:
    """Planner knobs (lengths in scene units: see the module docstring)."""

    num_frames: int = 961  # 60 s at 16 fps: 121 latent frames
    fps: float = 16.0
    width: int = 1280  # output image size and horizontal field of view
    height: int = 720
    hfov_deg: float = 70.0
    keys: Literal["training", "random_walk"] = "training"
    num_keys: int = 8
    key_jitter: float = 0.1  # std of the noise added to key positions
    walk_step: float = 0.8  # random-walk key spacing
    max_speed: float = 0.6  # per second
    max_turn_rate_deg: float = 40.0  # per second
    min_clearance: float = 0.25
    voxel: float = 0.05
    min_coverage: float = 0.6
    coverage_grid: tuple[int, int] = (32, 18)
    alpha_stride: int = 16  # frames between alpha checks (when a rasterizer is given)
    min_alpha: float = 0.9
    max_attempts: int = 6

    def __post_init__(self) -> None:
        if self.num_frames < 2 or self.fps <= 0:
            raise ValueError(f"PathConfig: need num_frames >= 2 and fps > 0, got {self.num_frames}, {self.fps}")
        if self.keys not in ("training", "random_walk") or self.num_keys < 2:
            raise ValueError(f"PathConfig: keys must be 'training' or 'random_walk' and num_keys >= 2, got {self.keys!r}, {self.num_keys}")
        if min(self.max_speed, self.max_turn_rate_deg, self.voxel, self.max_attempts) <= 0:
            raise ValueError("PathConfig: max_speed, max_turn_rate_deg, voxel and max_attempts must be positive")


@dataclass(frozen=True)
class PlannedPath:
    """An accepted path and how it was found.

    Attributes:
        cameras: ``num_frames`` cameras (OpenCV c2w, K in pixels of width x height, t = frame / fps).
        seed: the seed asked for; ``attempt``: the attempt that succeeded.
        keys: (M, 3) world key positions after pushing to clearance.
        failures: one reason per rejected attempt, in order.
        clearance: (T,) clearance per frame; coverage: (T,) coverage per frame.
    """

    cameras: Cameras
    seed: int
    attempt: int
    keys: np.ndarray
    failures: list[str] = field(default_factory=list)
    clearance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    coverage: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _Rejected(Exception):
    """One attempt failed a check; the message is the reason."""


def _unit(scene: Scene) -> float:
    return 1.0 if scene.metric else scene.frame.scale


def _level_rotation(forward: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(M, 3, 3) OpenCV c2w rotations looking along ``forward`` (M, 3), no roll about ``up``."""
    return look_at_c2w(np.zeros_like(forward), forward, up)[:, :3, :3]


def _training_keys(scene: Scene, cfg: PathConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Keys along the capture: consecutive training cameras from a random start with a random stride."""
    n = len(scene.cameras)
    stride = int(rng.integers(1, max(2, n // cfg.num_keys + 1)))
    index = (int(rng.integers(n)) + stride * np.arange(cfg.num_keys)) % n
    c2w = scene.cameras.c2w[index]
    positions = c2w[:, :3, 3] + rng.normal(0.0, cfg.key_jitter * _unit(scene), size=(len(index), 3))
    return positions, c2w[:, :3, 2]


def _walk_keys(
    scene: Scene, cfg: PathConfig, field_: ClearanceField, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of a level random walk from a random training camera, each step clear along its segment."""
    unit, up = _unit(scene), scene.frame.up
    start = scene.cameras.c2w[int(rng.integers(len(scene.cameras))), :3, 3]
    positions, heading = [start], rng.normal(size=3)
    for _ in range(cfg.num_keys - 1):
        for _try in range(32):
            heading = heading - up * (heading @ up) + rng.normal(0.0, 0.7, size=3)
            heading = heading - up * (heading @ up)
            heading /= np.linalg.norm(heading)
            nxt = positions[-1] + cfg.walk_step * unit * heading
            segment = positions[-1] + np.linspace(0, 1, 16)[:, None] * (nxt - positions[-1])
            if field_(segment).min() >= 1.5 * cfg.min_clearance * unit:
                positions.append(nxt)
                break
        else:
            raise _Rejected(f"random walk stuck after {len(positions)} keys (no clear step in 32 tries)")
    positions = np.array(positions)
    forward = np.gradient(positions, axis=0) + rng.normal(0.0, 0.2, size=positions.shape)
    return positions, forward


def _push_clear(positions: np.ndarray, field_: ClearanceField, target: float, steps: int = 40) -> np.ndarray:
    """Move points (M, 3) up the clearance gradient by a voxel per step until each reaches ``target``."""
    p = positions.copy()
    for _ in range(steps):
        low = field_(p) < target
        if not low.any():
            break
        g = field_.gradient(p[low])
        norm = np.linalg.norm(g, axis=1, keepdims=True)
        p[low] += field_.voxel * g / np.where(norm > 0, norm, 1.0)
    return p


def _retime(dense_pos: np.ndarray, dense_rot: Rotation, cfg: PathConfig, unit: float) -> np.ndarray:
    """Time (s) at each dense sample so speed <= max_speed and turn rate <= max_turn_rate (module docstring)."""
    ds = np.linalg.norm(np.diff(dense_pos, axis=0), axis=1)
    dtheta = (dense_rot[:-1].inv() * dense_rot[1:]).magnitude()
    v_cap = np.minimum(cfg.max_speed * unit, np.radians(cfg.max_turn_rate_deg) * ds / np.maximum(dtheta, 1e-12))
    duration = (cfg.num_frames - 1) / cfg.fps
    sigma = _SMOOTH_SIGMA_S * cfg.fps * _DENSE_PER_FRAME
    radius = int(4 * sigma)
    v = gaussian_filter1d(minimum_filter1d(v_cap, 2 * radius + 1, mode="nearest"), sigma, mode="nearest", radius=radius)
    dt = ds / np.maximum(v, 1e-12)
    if dt.sum() < duration:  # a short path: walk it slower, spare time spread by arc length
        dt += (duration - dt.sum()) * ds / ds.sum()
    return np.concatenate([[0.0], np.cumsum(dt)])


def view_coverage(scene: Scene, c2w: np.ndarray, K: np.ndarray, width: int, height: int,
                  grid: tuple[int, int], max_points: int = 200000, device: str | None = None,
                  frames_per_batch: int = 16) -> np.ndarray:  # fmt: skip
    """(T,) share of a ``grid`` (gw, gh) of image cells covered by some splat's footprint, per camera.

    A footprint is the box of +-2 standard deviations (largest axis) round the
    projected centre of a Gaussian with opacity >= 0.5, painted with a 2D
    difference array: cheap and occlusion-blind, it tells views into empty
    space from views of the scene. Frames go ``frames_per_batch`` at a time
    through torch (float64, so CPU and GPU cut cells alike), the corners of
    every box of a batch added with one ``index_add_``: a 961-frame path over
    200k Gaussians is one pass of the planner, not its bottleneck.

    Args:
        c2w: (T, 4, 4) OpenCV camera-to-world. K: (T, 3, 3) pixels of a width x height image.
        max_points: Gaussians used (the most opaque first), bounding the cost on large scenes.
        device: torch device; None = CUDA when present, else CPU.
    """
    splats = scene.splats
    order = np.argsort(-splats.opacities, kind="stable")[:max_points]
    order = order[splats.opacities[order] >= 0.5]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pts = torch.as_tensor(splats.means[order], dtype=torch.float64, device=dev)
    sigma = torch.as_tensor(splats.scales[order].max(axis=1), dtype=torch.float64, device=dev)
    gw, gh = grid
    cells = (gh + 1) * (gw + 1)
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64, device=dev)
    out = []
    for start in range(0, len(c2w), frames_per_batch):
        pose = torch.tensor(c2w[start:start + frames_per_batch], dtype=torch.float64, device=dev)
        Kb = torch.tensor(K[start:start + frames_per_batch], dtype=torch.float64, device=dev)
        B = len(pose)
        pc = (pts[None] - pose[:, None, :3, 3]) @ pose[:, :3, :3]  # (B, N, 3) camera coordinates
        z = pc[..., 2].clamp_min(1e-3)
        fx, fy = Kb[:, 0, 0, None], Kb[:, 1, 1, None]
        u = fx * pc[..., 0] / z + Kb[:, 0, 2, None]
        v = fy * pc[..., 1] / z + Kb[:, 1, 2, None]
        r = 2.0 * fx * sigma / z
        x0, x1 = torch.floor((u - r) * gw / width), torch.floor((u + r) * gw / width)
        y0, y1 = torch.floor((v - r) * gh / height), torch.floor((v + r) * gh / height)
        seen = (pc[..., 2] > 1e-3) & (x1 >= 0) & (x0 < gw) & (y1 >= 0) & (y0 < gh)
        x0, x1 = x0.clamp(0, gw - 1).long(), x1.clamp(0, gw - 1).long() + 1
        y0, y1 = y0.clamp(0, gh - 1).long(), y1.clamp(0, gh - 1).long() + 1
        base = torch.arange(B, device=dev)[:, None] * cells
        corners = torch.stack([y0 * (gw + 1) + x0, y0 * (gw + 1) + x1, y1 * (gw + 1) + x0, y1 * (gw + 1) + x1])
        weights = sign[:, None, None] * seen
        diff = torch.zeros(B * cells, dtype=torch.float64, device=dev)
        diff.index_add_(0, (corners + base).reshape(-1), weights.reshape(-1))
        painted = diff.view(B, gh + 1, gw + 1).cumsum(1).cumsum(2)[:, :gh, :gw] > 0.5
        out.append(painted.flatten(1).double().mean(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _attempt(scene: Scene, cfg: PathConfig, field_: ClearanceField, rng: np.random.Generator,
             rasterize: Rasterize | None) -> tuple[Cameras, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One seeded attempt: (cameras, keys, clearance, coverage); :class:`_Rejected` with the reason."""
    unit, up = _unit(scene), scene.frame.up
    if cfg.keys == "training":
        positions, forward = _training_keys(scene, cfg, rng)
    else:
        positions, forward = _walk_keys(scene, cfg, field_, rng)
    positions = _push_clear(positions, field_, 1.5 * cfg.min_clearance * unit)
    step = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    keep = np.concatenate([[True], step > 1e-3 * unit])
    positions, forward = positions[keep], forward[keep]
    if len(positions) < 2:
        raise _Rejected("key poses collapse to one point")
    u = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(positions, axis=0), axis=1))])
    pos_spline = CubicSpline(u, positions, bc_type="natural")
    rot_spline = RotationSpline(u, Rotation.from_matrix(_level_rotation(forward, up)))
    dense_u = np.linspace(0.0, u[-1], cfg.num_frames * _DENSE_PER_FRAME)
    # level the spline's rotations again (it may roll slightly between keys); the caps are timed on these
    def level(u_: np.ndarray) -> np.ndarray:
        return look_at_c2w(pos_spline(u_), pos_spline(u_) + rot_spline(u_).as_matrix()[:, :, 2], up)

    dense = level(dense_u)
    times = _retime(dense[:, :3, 3], Rotation.from_matrix(dense[:, :3, :3]), cfg, unit)
    frame_t = np.arange(cfg.num_frames) / cfg.fps
    c2w = level(np.interp(frame_t, times, dense_u))
    clearance = field_(c2w[:, :3, 3])
    worst = int(np.argmin(clearance))
    if clearance[worst] < cfg.min_clearance * unit:
        raise _Rejected(f"frame {worst} clearance {clearance[worst]:.3f} < {cfg.min_clearance * unit:.3f}")
    K = np.broadcast_to(pinhole_K(cfg.width, cfg.height, cfg.hfov_deg), (cfg.num_frames, 3, 3))
    coverage = view_coverage(scene, c2w, K, cfg.width, cfg.height, cfg.coverage_grid)
    worst = int(np.argmin(coverage))
    if coverage[worst] < cfg.min_coverage:
        raise _Rejected(f"frame {worst} sees mostly empty space (coverage {coverage[worst]:.2f} < {cfg.min_coverage})")
    if rasterize is not None:
        _check_alpha(scene, c2w[:: cfg.alpha_stride], K[0], cfg, rasterize)
    cameras = Cameras(c2w=c2w, K=K, t=frame_t, frame_index=np.arange(cfg.num_frames),
                      metric=scene.metric, scale_confidence=1.0 if scene.metric else 0.0)  # fmt: skip
    return cameras.validate(scene.name), positions, clearance, coverage


def _check_alpha(scene: Scene, c2w: np.ndarray, K: np.ndarray, cfg: PathConfig, rasterize: Rasterize) -> None:
    """Reject when a tiny (gw x gh) render of any checked frame has mean alpha below ``min_alpha``."""
    gw, gh = cfg.coverage_grid
    K_small = K * np.array([[gw / cfg.width], [gh / cfg.height], [1.0]])
    alpha = render_views(scene.splats, c2w, np.repeat(K_small[None], len(c2w), 0), gw, gh, rasterize).alpha
    mean = alpha.mean(axis=(1, 2))
    worst = int(np.argmin(mean))
    if mean[worst] < cfg.min_alpha:
        raise _Rejected(f"frame {worst * cfg.alpha_stride} renders mostly empty (alpha {mean[worst]:.2f} < {cfg.min_alpha})")


def plan_path(scene: Scene, seed: int, cfg: PathConfig = PathConfig(), rasterize: Rasterize | None = None) -> PlannedPath:
    """Plan one path through ``scene`` (method: module docstring), retrying with new seeds.

    Args:
        scene: the splat scene with its training cameras and frame.
        seed: the path's seed; the result is a function of (scene, seed, cfg).
        cfg: planner knobs.
        rasterize: optional rasterizer (``rasterization`` twin) for the alpha check.

    Raises:
        PathError: naming the scene and each attempt's reason when all ``max_attempts`` fail.
    """
    field_ = ClearanceField.from_scene(scene, cfg.voxel * _unit(scene), margin=cfg.min_clearance * _unit(scene))
    failures: list[str] = []
    for attempt in range(cfg.max_attempts):
        try:
            cameras, keys, clearance, coverage = _attempt(
                scene, cfg, field_, np.random.default_rng([seed, attempt]), rasterize
            )
        except _Rejected as why:
            failures.append(f"attempt {attempt}: {why}")
            continue
        return PlannedPath(cameras, seed, attempt, keys, failures, clearance, coverage)
    raise PathError(f"{scene.name}: no acceptable path for seed {seed} in {cfg.max_attempts} attempts: " + "; ".join(failures))


def plot_path_topdown(scene: Scene, path: PlannedPath, png: str | Path, max_points: int = 30000) -> None:
    """Top-down PNG (aligned frame, up out of the page): splat centres in their colour, the path, keys, views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmkit.render.splats import sh_dc_to_rgb

    frame = scene.frame
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(scene.splats))[:max_points]
    pts = frame.to_aligned(scene.splats.means[pick])
    below = pts[:, 2] < frame.hi[2] - 0.1 * (frame.hi[2] - frame.lo[2])  # cut the ceiling band to see in
    pick, pts = pick[below], pts[below]
    order = np.argsort(pts[:, 2])  # highest drawn last, as seen from above
    colours = np.clip(sh_dc_to_rgb(scene.splats.sh[pick, 0, :]), 0, 1)
    cam = frame.to_aligned(path.cameras.c2w[:, :3, 3])
    look = frame.to_aligned(path.cameras.c2w[:, :3, 2])
    keys = frame.to_aligned(path.keys)
    train = frame.to_aligned(scene.cameras.c2w[:, :3, 3])
    fig, ax = plt.subplots(figsize=(8, 8 * (frame.hi[1] - frame.lo[1]) / max(frame.hi[0] - frame.lo[0], 1e-9) + 0.5))
    ax.scatter(pts[order, 0], pts[order, 1], c=colours[order], s=2, linewidths=0)
    ax.scatter(train[:, 0], train[:, 1], marker="^", c="grey", s=14, label="training cameras")
    ax.plot(cam[:, 0], cam[:, 1], "-", c="crimson", lw=1.5, label=f"path ({len(cam)} frames)")
    every = max(1, len(cam) // 40)
    ax.quiver(cam[::every, 0], cam[::every, 1], look[::every, 0], look[::every, 1], color="crimson", width=0.003,
              scale=25)  # fmt: skip
    ax.scatter(keys[:, 0], keys[:, 1], c="k", s=20, label="keys")
    ax.scatter(cam[:1, 0], cam[:1, 1], c="lime", s=40, zorder=5, label="start")
    ax.set_aspect("equal")
    ax.set_xlabel("aligned x")
    ax.set_ylabel("aligned y")
    ax.set_title(f"{scene.name} seed {path.seed} (attempt {path.attempt})")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
