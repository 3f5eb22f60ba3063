"""Camera placement: look-at, turntable orbits and capture-like spheres of views around a subject box.

All cameras are OpenCV world-to-camera (``x_cam = R @ x_world + T``; x right, y down, z forward) with the
world's up axis +y (SMPL's convention, as the original datasets). float32 torch tensors on the CPU.
"""

from __future__ import annotations

import math

import torch

WORLD_UP = (0.0, 1.0, 0.0)


def look_at(eye: torch.Tensor, target: torch.Tensor,
            up: tuple[float, float, float] = WORLD_UP) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera rotation and translation of cameras at ``eye`` looking at ``target``.

    Args:
        eye, target: ``[..., 3]`` world points (metres); up: world up direction.

    Returns:
        ``(R [..., 3, 3], T [..., 3])``.
    """
    eye, target = eye.float(), target.float()
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up_t = torch.tensor(up, dtype=eye.dtype).expand_as(forward)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.linalg.cross(forward, up_t.roll(1, -1), dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    R = torch.stack([right, down, forward], dim=-2)
    T = -(R @ eye[..., None])[..., 0]
    return R, T


def intrinsics(image_size: int, fov_deg: float) -> torch.Tensor:
    """Pinhole K ``[3, 3]`` of a square image with the given full field of view, centred principal point."""
    focal = 0.5 * image_size / math.tan(math.radians(fov_deg) / 2)
    return torch.tensor([[focal, 0.0, image_size / 2], [0.0, focal, image_size / 2], [0.0, 0.0, 1.0]])


def fit_distance(bounds: torch.Tensor, fov_deg: float, margin: float = 0.9) -> float:
    """Camera distance (metres) at which the box's bounding sphere fits the field of view from any side."""
    radius = 0.5 * float((bounds[1] - bounds[0]).norm())
    return margin * radius / math.sin(math.radians(fov_deg) / 2)


def _cameras_at(bounds: torch.Tensor, azimuth: torch.Tensor, elevation: torch.Tensor, image_size: int,
                fov_deg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cameras on the sphere around the box centre at the given angles (radians), looking at the centre."""
    bounds = bounds.float().cpu()
    centre = bounds.mean(dim=0)
    distance = fit_distance(bounds, fov_deg)
    eye = centre + distance * torch.stack([torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation),
                                           torch.cos(elevation) * torch.cos(azimuth)], dim=-1)
    R, T = look_at(eye, centre.expand_as(eye))
    K = intrinsics(image_size, fov_deg).expand(len(azimuth), 3, 3).clone()
    return K, R, T


def orbit_cameras(bounds: torch.Tensor, n_views: int, image_size: int, elevation_deg: float = 10.0,
                  fov_deg: float = 40.0, azimuth_offset_deg: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A turntable: ``n_views`` cameras evenly spaced in azimuth at one elevation, starting in front (+z).

    Args:
        bounds: ``[2, 3]`` world box (min row, max row); the orbit centre is its centre.
        n_views: number of cameras; image_size: square image side in pixels.
        elevation_deg: angle above the horizontal plane; fov_deg: full field of view.

    Returns:
        ``(K [V, 3, 3], R [V, 3, 3], T [V, 3])``.
    """
    steps = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    azimuth = torch.deg2rad(steps + azimuth_offset_deg)
    elevation = torch.full_like(azimuth, math.radians(elevation_deg))
    return _cameras_at(bounds, azimuth, elevation, image_size, fov_deg)


def sphere_cameras(bounds: torch.Tensor, n_views: int, image_size: int, fov_deg: float = 40.0,
                   elevation_range_deg: tuple[float, float] = (-20.0, 50.0), azimuth_offset_deg: float = 0.0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Capture-dome views: a Fibonacci spiral over a band of elevations, evenly covering it.

    Args:
        bounds: ``[2, 3]`` world box; the cameras look at its centre.
        n_views: number of cameras; image_size: square image side in pixels; fov_deg: full field of view.
        elevation_range_deg: lowest and highest elevation; azimuth_offset_deg: rotates the whole set.

    Returns:
        ``(K [V, 3, 3], R [V, 3, 3], T [V, 3])``.
    """
    k = torch.arange(n_views, dtype=torch.float64) + 0.5
    lo, hi = (math.sin(math.radians(a)) for a in elevation_range_deg)
    elevation = torch.asin(lo + (hi - lo) * k / n_views)
    golden = math.pi * (3.0 - math.sqrt(5.0))
    azimuth = k * golden + math.radians(azimuth_offset_deg)
    return _cameras_at(bounds, azimuth.float(), elevation.float(), image_size, fov_deg)


def project_points(K: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                   points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points into images.

    Args:
        K, R: ``[..., 3, 3]``; T: ``[..., 3]``; points: ``[..., M, 3]``.

    Returns:
        ``(pixels [..., M, 2] (column, row), depth [..., M])``.
    """
    cam = points.float() @ R.float().transpose(-1, -2) + T.float()[..., None, :]
    uvw = cam @ K.float().transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3], cam[..., 2]
