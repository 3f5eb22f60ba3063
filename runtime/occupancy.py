"""Occupancy grids: which cells of the normalized box [-1, 1]^3 hold density, to skip empty space.

A grid is a bool tensor ``[B, G, G, G]`` indexed ``[b, x, y, z]``; cell (i, j, k) covers
``[-1 + 2i/G, -1 + 2(i+1)/G)`` on x (likewise y, z). Points outside the box use the nearest border cell.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from humanliff.runtime.field import Field


def cell_points(resolution: int, subsamples: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Regular sub-cell sample points: ``[G^3, s^3, 3]`` normalized coordinates, cells in (x, y, z) order."""
    g, s = resolution, subsamples
    corner = torch.arange(g, device=device, dtype=torch.float32)
    offset = (torch.arange(s, device=device, dtype=torch.float32) + 0.5) / s
    cells = torch.stack(torch.meshgrid(corner, corner, corner, indexing="ij"), dim=-1).reshape(-1, 1, 3)
    subs = torch.stack(torch.meshgrid(offset, offset, offset, indexing="ij"), dim=-1).reshape(1, -1, 3)
    return (cells + subs) * (2.0 / g) - 1.0


@torch.no_grad()
def build_occupancy(field: Field, resolution: int, threshold: float, *, batch: int = 1,
                    subsamples: int = 2, dilation: int = 1, chunk: int = 1 << 18, largest: bool = False,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Occupancy of a field's density ``softplus(sigma_raw)``: ``[B, G, G, G]`` bool.

    A cell is occupied when any of its ``subsamples^3`` regular sample points has density above
    ``threshold``; with ``largest`` only the largest connected group of such cells is kept (floaters
    dropped, see ``largest_component``); the result is then dilated by ``dilation`` cells so that thin
    surfaces are kept. ``batch`` is the field's B (one grid per tri-plane).
    """
    pts = cell_points(resolution, subsamples, device).reshape(-1, 3)
    density = torch.empty(batch, pts.shape[0], device=device)
    for start in range(0, pts.shape[0], chunk):
        part = pts[start:start + chunk].expand(batch, -1, -1)
        _, sigma_raw = field(part, None)
        density[:, start:start + chunk] = F.softplus(sigma_raw[..., 0])
    g = resolution
    occ = (density.reshape(batch, g**3, subsamples**3).amax(dim=-1) > threshold).reshape(batch, g, g, g)
    if largest:
        occ = torch.from_numpy(np.stack([largest_component(o) for o in occ.cpu().numpy()])).to(occ.device)
    return dilate(occ, dilation)


def largest_component(occupied: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a bool grid ``[G, G, G]`` (all False when none is occupied)."""
    from scipy import ndimage  # SciPy's import only when the grid is cleaned

    labels, count = ndimage.label(occupied, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros_like(occupied, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def dilate(grid: torch.Tensor, cells: int) -> torch.Tensor:
    """``grid [B, G, G, G]`` with every occupied cell grown by ``cells`` in each direction (a cube)."""
    if cells <= 0:
        return grid
    grown = F.max_pool3d(grid[:, None].float(), kernel_size=2 * cells + 1, stride=1, padding=cells) > 0
    return grown[:, 0]


def lookup(grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Occupancy of normalized points ``[B, M, 3]`` in ``grid [B, G, G, G]``: ``[B, M]`` bool."""
    g = grid.shape[-1]
    idx = ((points.detach() + 1.0) * (g / 2.0)).floor().long().clamp(0, g - 1)
    flat = (idx[..., 0] * g + idx[..., 1]) * g + idx[..., 2]
    return torch.gather(grid.reshape(grid.shape[0], -1), 1, flat)
