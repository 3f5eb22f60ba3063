"""Tri-plane feature sampling: the one implementation of the original's nine-plane convention.

A layer's tri-plane is ``[27, R, R]`` with channel = plane*9 + group*3 + c. Planes are XY, XZ and ZY
(u indexes the last dimension, v the one before). Group 0 is sampled at (u, v), group 1 at
(u + 1/R, v) and group 2 at (u, v + 1/R) in grid_sample's normalized coordinates (half a texel with
``align_corners=False``), bilinear, zero padding. Features are concatenated in channel order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_PLANES = 3
N_GROUPS = 3
GROUP_CHANNELS = 3
CHANNELS = N_PLANES * N_GROUPS * GROUP_CHANNELS

_PLANE_AXES = ((0, 1), (0, 2), (2, 1))
"""(u axis, v axis) of each plane: XY, XZ, ZY."""


def normalize_points(points: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """World points ``[B, M, 3]`` to [-1, 1] per axis by the box ``bounds [B, 2, 3]`` (min row, max row)."""
    bmin = bounds[:, 0:1, :]
    bmax = bounds[:, 1:2, :]
    return 2.0 * (points - bmin) / (bmax - bmin) - 1.0


def sample_features(planes: torch.Tensor, points: torch.Tensor,
                    bounds: torch.Tensor | None = None) -> torch.Tensor:
    """Nine-plane features of points.

    Args:
        planes: ``[B, 27, R, R]`` tri-planes.
        points: ``[B, M, 3]``, normalized to [-1, 1] (or world coordinates when ``bounds`` is given).
        bounds: optional ``[B, 2, 3]`` world box (min row, max row) used to normalize ``points``.

    Returns:
        ``[B, M, 27]`` features, index plane*9 + group*3 + c; differentiable in planes and points.
    """
    if planes.dim() != 4 or planes.shape[1] != CHANNELS:
        raise ValueError(f"planes must be [B, {CHANNELS}, R, R], got {tuple(planes.shape)}")
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"points must be [B, M, 3] with B={planes.shape[0]}, got {tuple(points.shape)}")
    if bounds is not None:
        points = normalize_points(points, bounds)
    b, _, res, _ = planes.shape
    m = points.shape[1]
    points = points.to(planes.dtype)
    # slices and scalars only (no index or constant tensor copied from the host: capturable in a CUDA graph)
    u = torch.stack([points[..., a] for a, _ in _PLANE_AXES], dim=1)  # [B, 3, M]
    v = torch.stack([points[..., b] for _, b in _PLANE_AXES], dim=1)
    step = 1.0 / res
    groups = ((u, v), (u + step, v), (u, v + step))  # the texel and its right and lower neighbours
    grid = torch.stack([torch.stack(g, dim=-1) for g in groups], dim=2)  # [B, 3, 3, M, 2]
    grid = grid.reshape(-1, 1, m, 2)  # [B*9, 1, M, 2]; -1, not b * 9: no size arithmetic in traced graphs
    texels = planes.reshape(-1, GROUP_CHANNELS, res, res)
    out = F.grid_sample(texels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # [B*9, 3, 1, M] -> [B, 9 (plane, group), 3 (c), M] -> [B, M, 27]
    return out.reshape(b, N_PLANES * N_GROUPS, GROUP_CHANNELS, m).permute(0, 3, 1, 2).reshape(b, m, CHANNELS)
