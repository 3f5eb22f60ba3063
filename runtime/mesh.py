"""Mesh extraction from a field: a density grid over the box, scikit-image marching cubes, vertex colours.

Unlike the original (``extract_geometry``), the grid is not smoothed with ``mcubes.smooth`` (bug B19:
that filter is meant for binary volumes). The default iso-level ``log 2`` is the density softplus(0),
i.e. the original's level 0 on raw sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from humanliff.runtime.field import Field

DEFAULT_LEVEL = math.log(2.0)
"""softplus(0): the original's iso-surface (raw sigma = 0)."""


@torch.no_grad()
def density_grid(density_fn: Callable[[torch.Tensor], torch.Tensor], resolution: int, *, chunk: int = 1 << 18,
                 device: torch.device | str = "cpu", progress: bool = False) -> np.ndarray:
    """Density on ``N = resolution`` points per side spanning [-1, 1]^3: float32 ``[N, N, N]`` (x, y, z).

    ``density_fn(points [M, 3] normalized) -> [M]``; it is called on x-slabs of about ``chunk`` points.
    """
    n = resolution
    axis = torch.linspace(-1.0, 1.0, n, device=device)
    yz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    slabs = max(1, chunk // (n * n))
    grid = np.empty((n, n, n), dtype=np.float32)
    for start in tqdm(range(0, n, slabs), desc="density grid", disable=not progress, leave=False):
        xs = axis[start:start + slabs]
        pts = torch.cat([xs[:, None, None].expand(-1, n * n, 1), yz[None].expand(len(xs), -1, -1)], dim=-1)
        values = density_fn(pts.reshape(-1, 3)).float().reshape(len(xs), n, n)
        grid[start:start + len(xs)] = values.cpu().numpy()
    return grid


def field_density(field: Field) -> Callable[[torch.Tensor], torch.Tensor]:
    """``points [M, 3] -> softplus(sigma_raw) [M]`` of a single field (B = 1)."""
    return lambda points: F.softplus(field(points[None], None)[1][0, :, 0])


@torch.no_grad()
def extract_mesh(field: Field, bounds: torch.Tensor, resolution: int, *, level: float = DEFAULT_LEVEL,
                 chunk: int = 1 << 18, progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``level`` iso-surface of a single field's density (B = 1) as a coloured triangle mesh.

    Args:
        bounds: ``[2, 3]`` world box of the field (min row, max row); the grid spans it.
        resolution: grid points per side.

    Returns:
        ``vertices`` float32 ``[V, 3]`` (world), ``faces`` int64 ``[F, 3]`` (outward winding) and ``colors``
        uint8 ``[V, 3]``: the field's colour at each vertex seen along its inward normal. All empty
        (``V = F = 0``) when the density never crosses ``level``.
    """
    from skimage.measure import marching_cubes  # scikit-image is needed only here

    device = bounds.device
    grid = density_grid(field_density(field), resolution, chunk=chunk, device=device, progress=progress)
    if not grid.min() < level < grid.max():
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8)
    spacing = (2.0 / (resolution - 1),) * 3
    verts, faces, normals, _ = marching_cubes(grid, level=level, spacing=spacing)
    bounds = bounds.float()
    half = (bounds[1] - bounds[0]) / 2.0
    verts_n = torch.from_numpy(verts.astype(np.float32)).to(device) - 1.0
    world = (verts_n + 1.0) * half + bounds[0]
    # normals in normalized space map to world by the inverse scale; look along the inward normal
    viewdirs = F.normalize(-torch.from_numpy(normals.astype(np.float32)).to(device) / half, dim=-1)
    colors = torch.empty(len(verts_n), 3, device=device)
    for start in range(0, len(verts_n), chunk):
        rgb_raw, _ = field(verts_n[None, start:start + chunk], viewdirs[None, start:start + chunk])
        colors[start:start + chunk] = torch.sigmoid(rgb_raw[0])
    colors_u8 = (colors * 255.0).round().clamp(0, 255).to(torch.uint8)
    # scikit-image winds the faces inward for a density (high inside); flip them to face outward
    return world.cpu().numpy(), np.ascontiguousarray(faces[:, ::-1]).astype(np.int64), colors_u8.cpu().numpy()
