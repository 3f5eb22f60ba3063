"""Meshes with vertex colours: the cleaned surface of a field, written through trimesh as PLY or GLB."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path
from humanliff.outputs.images import to_uint8
from humanliff.runtime.field import Field
from humanliff.runtime.mesh import extract_mesh

if TYPE_CHECKING:
    import trimesh

log = logging.getLogger(__name__)

MESH_TYPES = ("ply", "glb")


def keep_largest(mesh: trimesh.Trimesh, keep: float) -> trimesh.Trimesh:
    """``mesh`` without the connected components smaller than ``keep`` times the largest one's face count
    (floaters of haze); ``keep`` 0 returns it unchanged."""
    import trimesh  # trimesh imports SciPy (1-2 s): only when a mesh is made

    if keep <= 0 or len(mesh.faces) == 0:
        return mesh
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    largest = max(len(p.faces) for p in parts)
    return trimesh.util.concatenate([p for p in parts if len(p.faces) >= keep * largest])


def touches_box(vertices: np.ndarray, bounds: np.ndarray, resolution: int) -> bool:
    """True when a vertex lies within one grid cell of the box's walls (the surface is cut by the box)."""
    lo, hi = np.asarray(bounds[0], np.float32), np.asarray(bounds[1], np.float32)
    cell = (hi - lo) / max(resolution - 1, 1)
    return bool(((vertices <= lo + cell) | (vertices >= hi - cell)).any())


def surface_mesh(field: Field, bounds: torch.Tensor, resolution: int, level: float, keep: float, *,
                 name: str = "mesh") -> trimesh.Trimesh | None:
    """The ``level`` iso-surface of a one-human field's density (``runtime.mesh.extract_mesh`` on a grid of
    ``resolution`` points a side over the world box ``bounds [2, 3]``), cleaned by ``keep_largest``; vertex
    colours from the field. None when the density never reaches ``level``. Logs a warning naming ``name``
    when the surface touches the box's walls (a level too low for the model: haze fills the box)."""
    import trimesh

    vertices, faces, colors = extract_mesh(field, bounds, resolution, level=level)
    if len(faces) == 0:
        return None
    rgba = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], axis=1)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=rgba, process=False)
    mesh = keep_largest(mesh, keep)
    if touches_box(mesh.vertices, bounds.cpu().numpy(), resolution):
        log.warning("%s: the surface at level %g touches the box's walls (raise sample.mesh_level)", name, level)
    return mesh


def write_mesh(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
) -> Path:
    """Write a triangle mesh atomically; the file type comes from the suffix (``.ply`` or ``.glb``).

    ``vertices`` float ``[N, 3]`` (world units), ``faces`` int ``[F, 3]``, ``colors`` ``[N, 3]`` uint8 or
    float in [0, 1] (optional). Empty meshes are refused.
    """
    import trimesh

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
