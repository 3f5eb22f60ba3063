"""Render layered triangle meshes into the 4 layer images and masks of one camera, by ray casting (Embree).

Layer L shows every part of layers 0..L: one first-hit query per layer through ``trimesh``'s Embree binding
(``embreex``), smooth normals interpolated at the hit, the same Lambert shading and world lights as the
primitive renderer (``raycast.shade``), 2x2 supersampling and a black background. Because layer L's meshes
include layer L-1's, each layer's mask contains the one below.
"""

from __future__ import annotations

import numpy as np
import trimesh

from humanliff.data.garments import MeshPart
from humanliff.data.raycast import resolve_supersampled, shade, supersampled_rays
from humanliff.runtime.layers import NUM_LAYERS


class LayeredScene:
    """The parts of one subject, with one Embree scene per layer built once and reused for every view."""

    def __init__(self, parts: list[MeshPart]) -> None:
        from trimesh.ray.ray_pyembree import RayMeshIntersector

        self.parts = parts
        self.layers = []
        for layer in range(NUM_LAYERS):
            chosen = [p for p in parts if p.layer <= layer]
            offsets = np.cumsum([0] + [len(p.vertices) for p in chosen])
            vertices = np.concatenate([p.vertices for p in chosen])
            faces = np.concatenate([p.faces + o for p, o in zip(chosen, offsets, strict=False)])
            owner = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(chosen)])
            mesh = trimesh.Trimesh(vertices, faces, process=False)
            normals = np.concatenate([p.normals for p in chosen])
            self.layers.append((RayMeshIntersector(mesh), mesh, normals, owner, chosen))

    def render(self, K: np.ndarray, R: np.ndarray, T: np.ndarray, size: int, supersample: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
        """Images uint8 ``[4, size, size, 3]`` and masks bool ``[4, size, size]`` of one OpenCV camera
        (``K [3, 3]``, world-to-camera ``R [3, 3]``, ``T [3]``, metres)."""
        _, origin, dirs = supersampled_rays(K, R, T, size, supersample)
        dirs = dirs.reshape(-1, 3)
        dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        origins = np.broadcast_to(origin, dirs.shape)
        hit = np.zeros((NUM_LAYERS, len(dirs)), dtype=bool)
        colour = np.zeros((NUM_LAYERS, len(dirs), 3))
        for layer, (intersector, mesh, normals, owner, chosen) in enumerate(self.layers):
            tri = intersector.intersects_first(origins, dirs)
            rays = np.flatnonzero(tri >= 0)
            tri = tri[rays]
            corners = mesh.triangles[tri]
            face_n = mesh.face_normals[tri]
            depth = np.einsum("ni,ni->n", face_n, corners[:, 0] - origin) / np.einsum("ni,ni->n", face_n,
                                                                                      dirs[rays])
            points = origin + depth[:, None] * dirs[rays]
            bary = trimesh.triangles.points_to_barycentric(corners, points)
            n = np.einsum("nk,nki->ni", bary, normals[mesh.faces[tri]])
            n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
            n *= np.where(np.einsum("ni,ni->n", n, dirs[rays]) > 0, -1.0, 1.0)[:, None]  # e.g. inside a sleeve
            albedo = np.zeros((len(rays), 3))
            for i, part in enumerate(chosen):
                mine = owner[tri] == i
                if mine.any():
                    albedo[mine] = part.material.albedo(points[mine])
            hit[layer, rays] = True
            colour[layer, rays] = shade(albedo, n)
        return resolve_supersampled(hit, colour, size, supersample)
