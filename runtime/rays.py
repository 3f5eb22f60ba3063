"""Camera rays (OpenCV world-to-camera, as the original's ``get_rays``) and ray/box intersection.

The one ray generator of the toolkit: fitting, evaluation, rendering and the synthetic data all use it.
Convention: ``x_cam = R @ x_world + T``; pixel (i=col, j=row) with no +0.5 centre offset; the origin is
``-R^T T``; ``dirs = R^T K^-1 [i, j, 1]`` is not normalized (its camera-z is 1, so t is camera depth).
"""

from __future__ import annotations

import torch


def pixel_rays(K: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
               pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through given pixels.

    Args:
        K, R: ``[..., 3, 3]``; T: ``[..., 3]`` (metres).
        pixels: ``[..., M, 2]`` (column i, row j) in pixels, any float dtype.

    Returns:
        ``(origins, dirs)``, each ``[..., M, 3]`` in world space; dirs have camera-z 1.
    """
    K, R, T = K.float(), R.float(), T.float()
    pixels = pixels.to(K.dtype)
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    skew = K[..., 0, 1, None]
    y = (pixels[..., 1] - cy) / fy
    x = (pixels[..., 0] - cx - skew * y) / fx
    cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    dirs = cam @ R
    origins = -(R.transpose(-1, -2) @ T[..., None])[..., 0]
    return origins[..., None, :].expand_as(dirs), dirs


def camera_rays(K: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel of an image.

    Args:
        K, R: ``[..., 3, 3]``; T: ``[..., 3]``; height, width: image size in pixels.

    Returns:
        ``(origins, dirs)``, each ``[..., H, W, 3]``.
    """
    j, i = torch.meshgrid(torch.arange(height, device=K.device, dtype=torch.float32),
                          torch.arange(width, device=K.device, dtype=torch.float32), indexing="ij")
    pixels = torch.stack([i, j], dim=-1).reshape(height * width, 2)
    origins, dirs = pixel_rays(K, R, T, pixels.expand(*K.shape[:-2], height * width, 2))
    shape = (*K.shape[:-2], height, width, 3)
    return origins.reshape(shape), dirs.reshape(shape)


def box_near_far(origins: torch.Tensor, dirs: torch.Tensor, bounds: torch.Tensor,
                 pad: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays enter and leave an axis-aligned box (the original pads the box by 0.01 m here).

    Args:
        origins, dirs: ``[..., 3]``; t is in units of ``dirs`` (camera depth for ``camera_rays``).
        bounds: ``[2, 3]`` (min row, max row) or ``[B, 2, 3]`` with origins ``[B, ..., 3]``.
        pad: metres added on every side of the box.

    Returns:
        ``(near, far, hit)``, each ``[...]``; near >= 0. Rays that miss get near 0, far 1 (as the original).
    """
    bounds = bounds.to(origins)
    lo, hi = bounds[..., 0, :] - pad, bounds[..., 1, :] + pad
    if bounds.dim() == 3:
        view = (bounds.shape[0],) + (1,) * (origins.dim() - 2) + (3,)
        lo, hi = lo.reshape(view), hi.reshape(view)
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (lo - origins) / safe, (hi - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    return torch.where(hit, near, torch.zeros_like(near)), torch.where(hit, far, torch.ones_like(far)), hit
