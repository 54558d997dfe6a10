"""The plain-torch reference rasterizer on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wmkit.render.reference_rasterizer import rasterization, render_views, spherical_harmonics
from wmkit.render.splats import SH_C0, Splats
from wmkit.render.synthetic_room import make_room_scene

W, H = 48, 32
K = torch.tensor([[[40.0, 0.0, 24.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]])
EYE = torch.eye(4)[None]  # camera at the origin looking down +z


def _gaussians(means, scales, opacities):
    means = torch.as_tensor(means, dtype=torch.float32)
    n = len(means)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
    return means, quats, torch.as_tensor(scales, dtype=torch.float32), torch.as_tensor(opacities, dtype=torch.float32)


def test_single_gaussian_lands_where_projection_says() -> None:
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([0.1, -0.2, 0.5])  # world -> camera translation
    p = torch.tensor([[0.3, 0.25, 2.0]])
    means, quats, scales, opac = _gaussians(p, [[0.02, 0.02, 0.02]], [0.9])
    colors, alphas, meta = rasterization(means, quats, scales, opac, torch.ones(1, 3), viewmat[None], K, W, H)
    pc = p[0] + viewmat[:3, 3]
    u, v = (K[0, 0, 0] * pc[0] / pc[2] + K[0, 0, 2]).item(), (K[0, 1, 1] * pc[1] / pc[2] + K[0, 1, 2]).item()
    np.testing.assert_allclose(meta["means2d"][0, 0].numpy(), [u, v], atol=1e-4)
    assert meta["depths"][0, 0].item() == pytest.approx(2.5)
    row, col = np.unravel_index(int(alphas[0, ..., 0].argmax()), (H, W))
    assert (col, row) == (math.floor(u), math.floor(v))
    assert alphas[0, ..., 0].max().item() > 0.5 and alphas[0, 0, 0, 0].item() == 0.0
    torch.testing.assert_close(colors[0], alphas[0].expand(-1, -1, 3))  # white * alpha


def test_front_to_back_order_not_input_order() -> None:
    """Red in front (z=2), blue behind (z=3): centre pixel = a r + (1-a) a b, alpha = 1-(1-a)^2, either input order."""
    centre = torch.tensor([[0.5 / 40, 0.5 / 40]])  # projects onto the centre of pixel (24, 16)
    z = torch.tensor([[2.0], [3.0]])
    means = torch.cat([centre.repeat(2, 1) * z, z], dim=1)
    red_blue = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for order in ([0, 1], [1, 0]):
        m, q, s, o = _gaussians(means[order], [[0.05] * 3] * 2, [0.8, 0.8])
        colors, alphas, _ = rasterization(m, q, s, o, red_blue[order], EYE, K, W, H)
        torch.testing.assert_close(colors[0, 16, 24], torch.tensor([0.8, 0.0, 0.2 * 0.8]), atol=1e-5, rtol=0)
        assert alphas[0, 16, 24, 0].item() == pytest.approx(1 - 0.2**2, abs=1e-5)


def test_alpha_clamp_and_low_alpha_cut() -> None:
    means, quats, scales, _ = _gaussians([[0.025, 0.025, 2.0]], [[0.05] * 3], [1.0])
    _, alphas, _ = rasterization(means, quats, scales, torch.tensor([1.0]), torch.ones(1, 3), EYE, K, W, H)
    assert alphas[0, 16, 24, 0].item() == pytest.approx(0.999)
    _, alphas, _ = rasterization(means, quats, scales, torch.tensor([0.003]), torch.ones(1, 3), EYE, K, W, H)
    assert alphas.abs().max().item() == 0.0  # 0.003 < 1/255: never composited


def test_sh_degree0_colour_is_half_plus_c0_dc() -> None:
    dc = torch.tensor([[0.7, -0.4, 1.1]])
    means, quats, scales, opac = _gaussians([[0.025, 0.025, 2.0]], [[0.05] * 3], [0.6])
    colors, alphas, _ = rasterization(means, quats, scales, opac, dc[:, None, :], EYE, K, W, H, sh_degree=0)
    pixel = colors[0, 16, 24] / alphas[0, 16, 24, 0]
    torch.testing.assert_close(pixel, 0.5 + SH_C0 * dc[0], atol=1e-5, rtol=0)


def test_sh_bases_are_orthonormal_on_the_sphere() -> None:
    """Fibonacci-sphere quadrature of Y_i Y_j over degree 0-3 gives the identity (checks every constant)."""
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    bases = torch.stack(
        [spherical_harmonics(3, dirs, torch.eye(16, dtype=torch.float64)[k][None, :, None].expand(n, 16, 1).repeat(1, 1, 3))[:, 0]
         for k in range(16)], dim=1
    )  # fmt: skip
    gram = 4 * math.pi * bases.T @ bases / n
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)


def test_expected_depth_of_a_fronto_parallel_plane() -> None:
    """A dense grid of flat Gaussians on z = 3 fills the view: alpha ~ 1 and expected depth 3 everywhere."""
    xs, ys = torch.meshgrid(torch.linspace(-2.4, 2.4, 49), torch.linspace(-1.6, 1.6, 33), indexing="ij")
    means = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.full((xs.numel(),), 3.0)], dim=-1)
    n = len(means)
    m, q, s, o = _gaussians(means, [[0.08, 0.08, 0.002]] * n, [0.95] * n)
    colors, alphas, _ = rasterization(m, q, s, o, torch.rand(n, 3), EYE, K, W, H, render_mode="RGB+ED")
    assert colors.shape == (1, H, W, 4)
    assert alphas.min().item() > 0.99
    torch.testing.assert_close(colors[..., 3], torch.full((1, H, W), 3.0), atol=1e-3, rtol=0)


def test_room_render_depth_matches_known_geometry() -> None:
    """Training views of a generated room: opaque; centre depth = ray march to the nearest surface.

    The tolerance is about one disc standard deviation (~0.15 m at 3000 Gaussians): seen
    obliquely, the nearer part of a wall's discs covers the pixel first and pulls the
    expected depth towards the camera."""
    scene, geometry = make_room_scene(seed=1, num_gaussians=3000)
    views = scene.cameras.c2w[::8]
    w, h = 40, 30
    K_small = scene.cameras.K[:1] * np.array([[w / scene.width], [h / scene.height], [1.0]])
    out = render_views(scene.splats, views, np.repeat(K_small, len(views), 0), w, h)
    assert out.rgb.shape == (len(views), h, w, 3) and out.depth.shape == out.alpha.shape == (len(views), h, w)
    assert out.alpha.mean() > 0.98
    steps = np.arange(0.0, 10.0, 0.005)
    for c2w, depth in zip(views, out.depth):
        ray = c2w[:3, 3] + steps[:, None] * c2w[:3, 2]  # the optical axis (pixel centre 20, 15)
        hit = steps[np.argmax(~geometry.inside_free_space(ray))]
        assert depth[15, 20] == pytest.approx(hit, abs=0.15)


def test_render_views_accepts_splats_and_checks_shapes() -> None:
    splats = Splats(np.zeros((1, 3)), np.zeros((1, 4)), np.zeros((1, 3)), np.zeros(1), np.zeros((1, 1, 3)))
    with pytest.raises(ValueError, match="viewmats has shape"):
        rasterization(*(torch.as_tensor(x) for x in (splats.means, splats.quats, splats.scales, splats.opacities)),
                      torch.zeros(1, 3), torch.eye(4), K, W, H)  # fmt: skip
