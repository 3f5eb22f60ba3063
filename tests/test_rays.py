"""Ray generation, box intersection and camera placement (humanliff.runtime.rays / cameras)."""

import math

import pytest
import torch

from humanliff.runtime.cameras import look_at, orbit_cameras, project_points, sphere_cameras
from humanliff.runtime.rays import box_near_far, camera_rays, pixel_rays

K = torch.tensor([[100.0, 0.0, 32.0], [0.0, 110.0, 30.0], [0.0, 0.0, 1.0]])


def test_camera_rays_follow_the_opencv_convention():
    R, T = look_at(torch.tensor([0.3, 0.2, 3.0]), torch.zeros(3))
    origins, dirs = camera_rays(K, R, T, 60, 64)
    assert origins.shape == dirs.shape == (60, 64, 3)
    assert torch.allclose(origins[5, 7], -(R.T @ T), atol=1e-6)
    # camera-z of every direction is 1, and pixel (i=col, j=row) has no +0.5 offset
    cam = dirs @ R.T
    assert torch.allclose(cam[..., 2], torch.ones(60, 64), atol=1e-6)
    assert cam[0, 0, 0].item() == pytest.approx(-32.0 / 100.0, abs=1e-6)
    assert cam[30, 32, :2].abs().max().item() < 1e-6


def test_a_known_point_projects_to_its_pixel_and_back():
    R, T = look_at(torch.tensor([2.0, 1.0, 2.5]), torch.tensor([0.0, 0.1, 0.0]))
    point = torch.tensor([[0.1, 0.3, -0.2]])
    pixel, depth = project_points(K, R, T, point)
    origin, direction = pixel_rays(K, R, T, pixel)
    assert torch.allclose(origin + depth[..., None] * direction, point, atol=1e-5)
    # the look-at target lands on the principal point
    centre, _ = project_points(K, R, T, torch.tensor([[0.0, 0.1, 0.0]]))
    assert torch.allclose(centre, torch.tensor([[32.0, 30.0]]), atol=1e-4)


def test_box_near_far_values_misses_and_batching():
    bounds = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[0.0, 0.0, -5.0], [0.0, 3.0, -5.0]])
    dirs = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    near, far, hit = box_near_far(origins, dirs, bounds)
    assert hit.tolist() == [True, False]
    assert near[0].item() == pytest.approx((5 - 1.01) / 2) and far[0].item() == pytest.approx((5 + 1.01) / 2)
    assert (near[1].item(), far[1].item()) == (0.0, 1.0)
    batched = torch.stack([bounds, bounds + 10.0])
    _, _, hit2 = box_near_far(origins[None].expand(2, 2, 3), dirs[None].expand(2, 2, 3), batched)
    assert hit2.tolist() == [[True, False], [False, False]]


def test_orbit_and_sphere_cameras_look_at_the_box_centre():
    bounds = torch.tensor([[-0.4, -1.0, -0.2], [0.4, 1.0, 0.3]])
    centre = bounds.mean(0, keepdim=True)
    for K_, R, T in (orbit_cameras(bounds, 6, 64, elevation_deg=20.0), sphere_cameras(bounds, 9, 64)):
        pixels, depth = project_points(K_, R, T, centre.expand(len(R), 1, 3))
        assert torch.allclose(pixels, torch.full_like(pixels, 32.0), atol=1e-3)
        assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(len(R), 3, 3), atol=1e-5)
        corners, _ = project_points(K_, R, T, bounds[None].expand(len(R), 2, 3))
        assert corners.min() > -8 and corners.max() < 72  # the box (nearly) fits the frame
    _, R1, _ = sphere_cameras(bounds, 9, 64, azimuth_offset_deg=30.0)
    _, R2, _ = sphere_cameras(bounds, 9, 64, azimuth_offset_deg=30.0)
    assert torch.equal(R1, R2)
    elevations = torch.asin(-R1[:, 2, 1])  # forward . up
    assert elevations.min() > math.radians(-21) and elevations.max() < math.radians(51)
