"""Meshes with vertex colours, written through trimesh: PLY or GLB (binary glTF) by suffix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path
from humanliff.outputs.images import to_uint8

MESH_TYPES = ("ply", "glb")


def write_mesh(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
) -> Path:
    """Write a triangle mesh atomically; the file type comes from the suffix (``.ply`` or ``.glb``).

    ``vertices`` float ``[N, 3]`` (world units), ``faces`` int ``[F, 3]``, ``colors`` ``[N, 3]`` uint8 or
    float in [0, 1] (optional). Empty meshes are refused.
    """
    path = Path(path)
    file_type = path.suffix.lower().lstrip(".")
    if file_type not in MESH_TYPES:
        raise HumanLiffError(f"{path}: unknown mesh type '{path.suffix}' (use {', '.join(MESH_TYPES)})")
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise HumanLiffError(
            f"{path}: expected vertices [N, 3] and faces [F, 3], got {vertices.shape} and {faces.shape}"
        )
    if len(faces) == 0:
        raise HumanLiffError(f"{path}: the mesh is empty (no surface at the chosen level)")
    if colors is not None:
        colors = to_uint8(colors)
        if colors.shape != vertices.shape:
            raise HumanLiffError(f"{path}: colours {colors.shape} do not match vertices {vertices.shape}")
        colors = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], axis=1)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(mesh.export(file_type=file_type))
    return path
