"""What ``humanliff view`` shows: humans, each with per-layer tri-planes and coloured meshes.

A target is a generation folder (``generate`` / ``run``: meshes read from its ``layer_<k>/human_<i>.ply``),
a tri-plane store (every subject; meshes extracted by marching cubes when first shown) or
``STORE:SUBJECT`` (one subject). The decoder renders the tri-planes live; a generation folder does not
record its decoder, so it comes from ``--store`` or else the default model's, when the shapes fit.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from humanliff.config import Config, RenderConfig
from humanliff.errors import HumanLiffError
from humanliff.runtime.compute import default_device
from humanliff.runtime.field import Field, make_field
from humanliff.runtime.layers import LAYER_TITLES
from humanliff.runtime.mesh import extract_mesh
from humanliff.runtime.occupancy import build_occupancy
from humanliff.store import MANIFEST, TriplaneStore, open_store

log = logging.getLogger(__name__)

GENERATION_META = "generation.json"


@dataclass
class ViewHuman:
    """One human: float32 tri-planes ``[L, C, R, R]`` and its world box ``[2, 3]`` (CPU tensors)."""

    name: str
    planes: torch.Tensor
    bounds: torch.Tensor
    mesh_files: list[Path] | None = None
    """Per layer, the mesh written by the generation (None: extract from the planes)."""


@dataclass
class ViewTarget:
    """Humans with the same layers, the decoder that renders them (or None) and the render settings."""

    title: str
    layers: list[int]
    humans: list[ViewHuman]
    decoder: torch.nn.Module | None
    render_cfg: RenderConfig
    device: torch.device
    mesh_resolution: int = 128
    _meshes: dict[tuple[int, int], trimesh.Trimesh | None] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def titles(self) -> list[str]:
        return [LAYER_TITLES[k] for k in self.layers]

    @property
    def precision(self) -> str:
        """bf16 on CUDA (as ``generate``), fp32 elsewhere."""
        return "bf16" if self.device.type == "cuda" else "fp32"

    def field(self, human: int, layer_index: int) -> tuple[Field, torch.Tensor | None]:
        """The field of one human's layer on the device and its occupancy grid (None when off)."""
        if self.decoder is None:
            raise HumanLiffError(f"{self.title}: no decoder to render the tri-planes (pass --store)")
        planes = self.humans[human].planes[layer_index][None].to(self.device)
        fld = make_field(planes, self.decoder, precision=self.precision, fused=self.render_cfg.fused_kernel)
        cfg = self.render_cfg
        occupancy = (build_occupancy(fld, cfg.occupancy_resolution, cfg.occupancy_threshold, device=self.device)
                     if cfg.occupancy_resolution > 0 else None)
        return fld, occupancy

    def mesh(self, human: int, layer_index: int) -> trimesh.Trimesh | None:
        """One human's layer as a vertex-coloured mesh (cached); None when it has no surface."""
        key = (human, layer_index)
        with self._lock:
            if key not in self._meshes:
                self._meshes[key] = self._load_mesh(human, layer_index)
            return self._meshes[key]

    def _load_mesh(self, human: int, layer_index: int) -> trimesh.Trimesh | None:
        person = self.humans[human]
        if person.mesh_files is not None:
            path = person.mesh_files[layer_index]
            return trimesh.load(path, force="mesh", process=False) if path.is_file() else None
        fld, _ = self.field(human, layer_index)
        vertices, faces, colors = extract_mesh(fld, person.bounds.to(self.device), self.mesh_resolution)
        if len(faces) == 0:
            return None
        return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)


def _render_config(values: dict, source: str) -> RenderConfig:
    return Config.from_dict({"render": values}, source=source).render


def _decoder_for(channels: int, resolution: int, store: str | Path | None, device: torch.device
                 ) -> torch.nn.Module | None:
    """The decoder of ``store``, else the default model's when its tri-planes have this shape, else None."""
    if store is not None:
        return open_store(store).load_decoder(device)
    from humanliff.pretrained import default_model

    try:
        source = open_store(default_model()[1])
    except HumanLiffError:
        return None
    return source.load_decoder(device) if (source.channels, source.resolution) == (channels, resolution) else None


def open_generation(folder: Path, store: str | Path | None, device: torch.device) -> ViewTarget:
    """A generation folder: its planes, boxes, meshes and render settings."""
    meta = json.loads((folder / GENERATION_META).read_text())
    with np.load(folder / "planes.npz") as saved:
        planes = torch.from_numpy(saved["planes"].astype(np.float32))
        bounds = torch.from_numpy(saved["bounds"].astype(np.float32))
    layers = [int(k) for k in meta["layers"]]
    humans = [ViewHuman(f"human {i}", planes[:, i], bounds,
                        [folder / f"layer_{k}" / f"human_{i:03d}.ply" for k in layers])
              for i in range(planes.shape[1])]
    decoder = _decoder_for(planes.shape[2], planes.shape[-1], store, device)
    if decoder is None:
        log.warning("%s: no decoder for live rendering (pass --store, the store the model was trained on)", folder)
    return ViewTarget(folder.name, layers, humans, decoder, _render_config(meta.get("render", {}), str(folder)),
                      device)


def open_store_target(store: TriplaneStore, subjects: list[int], device: torch.device, mesh_resolution: int
                      ) -> ViewTarget:
    """Subjects (row indices) of a tri-plane store; their meshes are extracted when first shown."""
    humans = [ViewHuman(store.subjects[s], torch.from_numpy(np.asarray(store.planes[s], np.float32)),
                        store.subject_bounds(s)) for s in subjects]
    render_cfg = _render_config(store.config.get("render", {}), str(store.path / MANIFEST))
    return ViewTarget(store.path.name, list(range(store.planes.shape[1])), humans, store.load_decoder(device),
                      render_cfg, device, mesh_resolution)


def open_target(target: str, store: str | Path | None = None, device: torch.device | str | None = None,
                mesh_resolution: int = 128) -> ViewTarget:
    """A generation folder, a tri-plane store or ``STORE:SUBJECT``, ready to view on ``device``."""
    device = default_device(device)
    path = Path(target)
    if (path / GENERATION_META).is_file():
        view = open_generation(path, store, device)
    elif (path / MANIFEST).is_file():
        triplanes = open_store(path)
        view = open_store_target(triplanes, list(range(len(triplanes.subjects))), device, mesh_resolution)
    else:
        store_path, sep, subject = target.rpartition(":")
        if not sep or not (Path(store_path) / MANIFEST).is_file():
            raise HumanLiffError(f"{target}: not a generation folder ({GENERATION_META}), a tri-plane store "
                                 f"({MANIFEST}) or STORE:SUBJECT")
        triplanes = open_store(store_path)
        view = open_store_target(triplanes, [triplanes.index(subject)], device, mesh_resolution)
    return view
