"""Mesh extraction: density grid, marching cubes in world coordinates, vertex colours."""

import numpy as np
import torch
import trimesh

from humanliff.runtime.mesh import DEFAULT_LEVEL, density_grid, extract_mesh


def sphere_field(radius: float = 0.5):
    """Density high inside a sphere of ``radius`` (normalized units); colour = the view direction."""

    def field(points, viewdirs=None):
        sigma = 40.0 * (radius - points.norm(dim=-1, keepdim=True))
        return (None if viewdirs is None else 4.0 * viewdirs), sigma

    return field


def test_density_grid_layout():
    grid = density_grid(lambda p: p[:, 0] + 10 * p[:, 1] + 100 * p[:, 2], 5, chunk=30)
    assert grid.shape == (5, 5, 5) and grid.dtype == np.float32
    assert grid[4, 0, 0] == 1 - 10 - 100 and grid[0, 4, 2] == -1 + 10 + 0


def test_sphere_mesh_radius_in_world_and_outward_faces():
    bounds = torch.tensor([[-2.0, -1.0, 0.0], [2.0, 3.0, 4.0]])  # centre (0, 1, 2), half size 2
    verts, faces, colors = extract_mesh(sphere_field(0.5), bounds, 40, chunk=4096)
    assert verts.dtype == np.float32 and faces.dtype == np.int64 and colors.dtype == np.uint8
    assert verts.shape[1] == 3 and faces.shape[1] == 3 and colors.shape == verts.shape
    r = np.linalg.norm(verts - np.array([0.0, 1.0, 2.0]), axis=1)
    # level log 2 is raw sigma 0, i.e. radius 0.5 normalized = 1.0 world
    assert abs(r.mean() - 1.0) < 0.02 and r.std() < 0.02
    mesh = trimesh.Trimesh(verts, faces, process=False)
    assert mesh.is_watertight and abs(mesh.volume - 4 / 3 * np.pi) < 0.1  # positive: faces wound outward
    # colour = sigmoid(4 * viewdir), viewdir = inward normal: red is low where x is largest
    right, left = verts[:, 0].argmax(), verts[:, 0].argmin()
    assert colors[right, 0] < 10 and colors[left, 0] > 245


def test_empty_field_gives_empty_mesh():
    verts, faces, colors = extract_mesh(sphere_field(-1.0), torch.tensor([[0.0] * 3, [1.0] * 3]), 8)
    assert verts.shape == (0, 3) and faces.shape == (0, 3) and colors.shape == (0, 3)
    assert np.log(2.0) == DEFAULT_LEVEL
