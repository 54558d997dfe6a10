"""Camera inputs of the DiT: Plücker rays, UCPE transforms, latent-frame packing."""

from __future__ import annotations

import pytest
import torch

from _model_fixtures import IMAGE_HW, LATENT_HW, moving_cameras
from wmkit.model import camera_inputs, num_latent_frames, plucker_rays, ucpe_transforms
from wmkit.model.positional import UCPE

K_PX = torch.tensor([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]], dtype=torch.float64)


@pytest.mark.parametrize("batch", [(), (2,), (1, 3)])
def test_plucker_rays_of_a_camera_at_the_origin_looking_down_z(batch):
    c2w, K = torch.eye(4, dtype=torch.float64).expand(*batch, 4, 4), K_PX.expand(*batch, 3, 3)
    uv = torch.tensor([[[64.0, 48.0], [164.0, 48.0]]], dtype=torch.float64)  # centre pixel, 100 px right
    rays = plucker_rays(c2w, K, uv)
    assert rays.shape == (*batch, 1, 2, 6)
    centre = rays[..., 0, 0, :]
    torch.testing.assert_close(centre[..., :3], torch.tensor([0.0, 0, 1], dtype=torch.float64).expand_as(centre[..., :3]))
    torch.testing.assert_close(centre[..., 3:], torch.zeros_like(centre[..., 3:]))
    right = rays[..., 0, 1, :3]  # one focal length right: 45° towards +x
    torch.testing.assert_close(right, torch.tensor([1.0, 0, 1], dtype=torch.float64).expand_as(right) / 2**0.5)


def test_plucker_moment_is_o_cross_d_for_a_moved_camera():
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    ray = plucker_rays(c2w, K_PX, torch.tensor([[[64.0, 48.0]]], dtype=torch.float64))[0, 0]
    torch.testing.assert_close(ray[:3], torch.tensor([0.0, 0, 1], dtype=torch.float64))
    torch.testing.assert_close(ray[3:], torch.linalg.cross(c2w[:3, 3], ray[:3], dim=-1))  # (2, −1, 0)


def test_ucpe_scores_depend_only_on_relative_poses():
    """qᵀ P_i P_j⁻¹ k is unchanged when the whole world moves (another c2w origin)."""
    c2w, K = moving_cameras(1, 3)
    uv = torch.rand(2, 2, 2, dtype=torch.float64) * 96
    P = ucpe_transforms(c2w[0, [0, 8]], K[0, [0, 8]], uv)  # [2, 2, 2, 4, 4]
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3] = torch.linalg.matrix_exp(torch.tensor([[0, -0.4, 0.2], [0.4, 0, -0.1], [-0.2, 0.1, 0]], dtype=torch.float64))
    world[:3, 3] = torch.tensor([3.0, -1.0, 2.0])
    P_moved = ucpe_transforms(world @ c2w[0, [0, 8]], K[0, [0, 8]], uv)
    rel = P[0, 0, 0] @ torch.linalg.inv(P[1, 1, 1])
    torch.testing.assert_close(P_moved[0, 0, 0] @ torch.linalg.inv(P_moved[1, 1, 1]), rel)
    # The ray-local z axis is the ray: P maps the ray direction to +z.
    d = torch.linalg.inv(K[0, 0]) @ torch.tensor([uv[0, 0, 0], uv[0, 0, 1], 1.0], dtype=torch.float64)
    d = c2w[0, 0, :3, :3] @ d / d.norm()
    torch.testing.assert_close(P[0, 0, 0, :3, :3] @ d, torch.tensor([0.0, 0, 1], dtype=torch.float64))


def test_ucpe_query_key_product_is_relative():
    torch.manual_seed(0)
    P = torch.linalg.matrix_exp(torch.randn(1, 2, 1, 4, 4, dtype=torch.float64) * 0.3)
    ucpe = UCPE(P)
    q, k = torch.randn(1, 2, 1, 1, 8, dtype=torch.float64), torch.randn(1, 2, 1, 1, 8, dtype=torch.float64)
    score = (ucpe.query(q)[0, 0, 0, 0, :4] * ucpe.key(k)[0, 1, 0, 0, :4]).sum()
    expected = q[0, 0, 0, 0, :4] @ P[0, 0, 0] @ torch.linalg.inv(P[0, 1, 0]) @ k[0, 1, 0, 0, :4]
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-6)  # UCPE inverts P in float32
    torch.testing.assert_close(ucpe.query(q)[..., 4:], q[..., 4:])  # the other half is left to RoPE
    torch.testing.assert_close(ucpe.output(ucpe.key(k)), k)


def test_camera_inputs_pack_eight_frames_per_latent_frame():
    c2w, K = moving_cameras(2, 3)  # 17 frames
    cams = camera_inputs(c2w, K, LATENT_HW, IMAGE_HW)
    assert cams.plucker.shape == (2, 3, *LATENT_HW, 48) and cams.ucpe.shape == (2, 3, *LATENT_HW, 4, 4)
    first = cams.plucker[:, 0].unflatten(-1, (8, 6))
    torch.testing.assert_close(first, first[..., :1, :].expand_as(first))  # frame 0 repeated 8×
    second = cams.plucker[:, 1].unflatten(-1, (8, 6))
    assert (second[..., 0, 3:] - second[..., 7, 3:]).abs().max() > 1e-3  # frames 1 and 8 differ (moving)
    # Poses are relative to frame 0: its rays start at the origin, so their moments vanish.
    torch.testing.assert_close(first[..., 3:], torch.zeros_like(first[..., 3:]))


@pytest.mark.parametrize("frames, latent", [(1, 1), (9, 2), (961, 121)])
def test_num_latent_frames(frames, latent):
    assert num_latent_frames(frames) == latent


def test_a_clip_that_does_not_fill_latent_frames_is_refused():
    c2w, K = moving_cameras(1, 2)
    with pytest.raises(ValueError, match="10 frames does not fill latent frames"):
        camera_inputs(torch.cat([c2w, c2w[:, :1]], 1), torch.cat([K, K[:, :1]], 1), LATENT_HW, IMAGE_HW)
