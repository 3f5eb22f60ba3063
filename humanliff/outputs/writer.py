"""Write a layered generation: tri-planes, rendered views, contact sheet, turntables and meshes.

Shared by ``humanliff generate`` (torch decoder) and the ``run`` pipeline (exported decoder engines): it
sees only a ``field_factory`` that turns tri-planes ``[B, 27, R, R]`` into a field, so it imports no
models, training or data code. Folder layout (written under a temporary name, renamed when complete)::

    planes.npz                   planes fp16 [L, B, 27, R, R], layers [L], bounds [2, 3]
    generation.json              layers, titles, bounds and the sample / render settings
    contact_sheet.png            humans x layers (front views), titled body / +pants / +shirt / +shoes
    layer_<k>/human_<i>.png      grid of the human's views; each view in layer_<k>/views/
    layer_<k>/human_<i>.ply      marching-cubes mesh with vertex colours (and .glb)
    turntable/human_<i>.gif      all layers side by side, one turn in ``sample.turntable_seconds`` (and .mp4
                                 with imageio-ffmpeg)
    viewer.html                  every human's turntable per layer in one self-contained page

``sample.background`` (black, white, transparent) is the views' and turntables' background; pictures
that cannot hold transparency (contact sheet, MP4, viewer page) show a transparent background as white.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from humanliff.config import RenderConfig, SampleConfig
from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path, removed_if_killed
from humanliff.outputs.images import composite, contact_sheet, opaque, save_png, view_grid
from humanliff.outputs.meshes import surface_mesh, write_mesh
from humanliff.outputs.video import mp4_available, write_video
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.field import Field
from humanliff.runtime.layers import LAYER_TITLES
from humanliff.runtime.occupancy import build_occupancy
from humanliff.runtime.render import render_image
from humanliff.viewer.html import VIEWER_NAME, write_viewer_html

log = logging.getLogger(__name__)

FieldFactory = Callable[[torch.Tensor], Field]
"""``field_factory(planes [B, 27, R, R]) -> field`` (see ``humanliff.runtime.field``)."""
Cameras = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(K [V, 3, 3], R [V, 3, 3], T [V, 3])``."""



def turntable_fps(sample_cfg: SampleConfig) -> float:
    """Frames per second that make one turn of ``turntable_frames`` last ``turntable_seconds``."""
    return sample_cfg.turntable_frames / sample_cfg.turntable_seconds


@torch.no_grad()
def composited_views(field: Field, cameras: Cameras, image_size: int, bounds: torch.Tensor,
                 render_cfg: RenderConfig, occupancy: torch.Tensor | None = None,
                 background: str = "black") -> np.ndarray:
    """Render a one-human field from each camera: uint8 ``[V, S, S, 3]``, or ``[V, S, S, 4]`` with a
    ``transparent`` background (see ``humanliff.outputs.images.composite``).

    The cameras and ``bounds`` ``[2, 3]`` (world box) should be on the field's device.
    """
    size = image_size
    out = [render_image(field, K, R, T, size, size, bounds, render_cfg, occupancy=occupancy)
           for K, R, T in zip(*cameras, strict=True)]
    rgb = torch.stack([o["rgb"] for o in out]).cpu().numpy()
    acc = torch.stack([o["acc"] for o in out]).cpu().numpy()
    return composite(rgb, acc, background)


def render_occupancy(field: Field, render_cfg: RenderConfig, device: torch.device) -> torch.Tensor | None:
    """The field's occupancy grid ``[1, G, G, G]``, or None when ``render.occupancy_resolution`` is 0."""
    if render_cfg.occupancy_resolution <= 0:
        return None
    return build_occupancy(field, render_cfg.occupancy_resolution, render_cfg.occupancy_threshold,
                           largest=render_cfg.occupancy_largest, device=device)


def _write_meshes(stem: Path, field: Field, bounds: torch.Tensor, sample_cfg: SampleConfig) -> list[Path]:
    """PLY and GLB of the field's cleaned surface (``surface_mesh``); none when it has no surface or
    ``sample.meshes`` is off."""
    if not sample_cfg.meshes:
        return []
    name = str(stem.relative_to(stem.parents[1]))
    mesh = surface_mesh(field, bounds, sample_cfg.mesh_resolution, sample_cfg.mesh_level, sample_cfg.mesh_keep,
                        name=name)
    if mesh is None:
        log.warning("%s: no surface in the density at level %g, no mesh written", name, sample_cfg.mesh_level)
        return []
    return [write_mesh(stem.with_suffix(suffix), mesh.vertices, mesh.faces, mesh.visual.vertex_colors[:, :3])
            for suffix in (".ply", ".glb")]


@dataclasses.dataclass
class _Job:
    """What every (human, layer) rendering needs."""

    folder: Path
    views: Cameras
    turntable: Cameras
    bounds: torch.Tensor
    sample_cfg: SampleConfig
    render_cfg: RenderConfig
    device: torch.device


def _write_layer(job: _Job, field: Field, layer: int, human: int, written: dict[str, list[Path]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Write one human's layer (views, grid, meshes); returns ``(views [V,S,S,3], turntable [F,S,S,3])``."""
    size, background = job.sample_cfg.image_size, job.sample_cfg.background
    occupancy = render_occupancy(field, job.render_cfg, job.device)
    turntable = composited_views(field, job.turntable, size, job.bounds, job.render_cfg, occupancy, background)
    frames, views = len(job.turntable[0]), job.sample_cfg.views
    if frames % views == 0:  # the views are turntable frames: reuse them
        images = turntable[::frames // views]
    else:
        images = composited_views(field, job.views, size, job.bounds, job.render_cfg, occupancy, background)
    folder = job.folder / f"layer_{layer}"
    name = f"human_{human:03d}"
    written["grids"].append(save_png(folder / f"{name}.png", view_grid(images)))
    written["views"] += [save_png(folder / "views" / f"{name}_{v:02d}.png", image)
                         for v, image in enumerate(images)]
    written["meshes"] += _write_meshes(folder / name, field, job.bounds, job.sample_cfg)
    return images, turntable


def write_generation(out_dir: str | Path, planes: torch.Tensor, layers: Sequence[int],
                     field_factory: FieldFactory, bounds: torch.Tensor, sample_cfg: SampleConfig,
                     render_cfg: RenderConfig, *, progress: bool = True) -> dict[str, Any]:
    """Render and save tri-planes ``planes [L, B, 27, R, R]`` of layer ids ``layers`` into folder ``out_dir``.

    ``bounds`` ``[2, 3]`` is the world box the planes are decoded in (the cameras orbit it); rendering runs
    on ``planes``' device. ``sample_cfg`` sets the image size, views, turntable frames and mesh resolution.
    Returns the final paths: ``folder``, ``planes``, ``metadata``, ``contact_sheet``, ``viewer`` and the lists
    ``views``, ``grids``, ``turntables``, ``meshes``.
    """
    out_dir = Path(out_dir)
    layers = [int(k) for k in layers]
    if planes.dim() != 5 or planes.shape[0] != len(layers):
        raise HumanLiffError(f"planes must be [L={len(layers)}, B, C, R, R], got {list(planes.shape)}")
    device = planes.device
    bounds = torch.as_tensor(bounds, dtype=torch.float32).cpu()
    n_layers, batch = planes.shape[:2]
    size = sample_cfg.image_size
    cameras = [tuple(x.to(device) for x in orbit_cameras(bounds, n, size))
               for n in (sample_cfg.views, sample_cfg.turntable_frames)]
    titles = [LAYER_TITLES[k] for k in layers]
    written: dict[str, list[Path]] = {"views": [], "grids": [], "turntables": [], "meshes": []}
    fronts = np.zeros((batch, n_layers, size, size, 3), np.uint8)
    fps = turntable_fps(sample_cfg)
    turntables = []
    with atomic_path(out_dir) as tmp, removed_if_killed(tmp):  # an engine's crash leaves no temporary
        tmp.mkdir()
        np.savez(tmp / "planes.npz", planes=planes.detach().cpu().to(torch.float16).numpy(),
                 layers=np.asarray(layers, np.int64), bounds=bounds.numpy())
        metadata = {"layers": layers, "titles": titles, "batch": batch, "bounds": bounds.tolist(),
                    "sample": dataclasses.asdict(sample_cfg), "render": dataclasses.asdict(render_cfg)}
        (tmp / "generation.json").write_text(json.dumps(metadata, indent=1))
        job = _Job(tmp, cameras[0], cameras[1], bounds.to(device), sample_cfg, render_cfg, device)
        with tqdm(total=batch * n_layers, desc="rendering humans x layers", unit="layer",
                  disable=not progress) as bar:
            for i in range(batch):
                frames = []
                for li, k in enumerate(layers):
                    images, turntable = _write_layer(job, field_factory(planes[li, i:i + 1]), k, i, written)
                    fronts[i, li] = opaque(images[0])
                    frames.append(turntable)
                    bar.update()
                turntables.append(np.stack(frames))
                movie = np.concatenate(frames, axis=2)
                written["turntables"].append(write_video(tmp / "turntable" / f"human_{i:03d}.gif", movie, fps=fps))
                if mp4_available():
                    written["turntables"].append(write_video(tmp / "turntable" / f"human_{i:03d}.mp4",
                                                             opaque(movie), fps=fps))
        save_png(tmp / "contact_sheet.png", contact_sheet(fronts, titles))
        write_viewer_html(tmp / VIEWER_NAME, [opaque(t) for t in turntables], titles, fps=fps)
    result: dict[str, Any] = {key: [out_dir / p.relative_to(tmp) for p in paths]
                              for key, paths in written.items()}
    result.update(folder=out_dir, planes=out_dir / "planes.npz", metadata=out_dir / "generation.json",
                  contact_sheet=out_dir / "contact_sheet.png", viewer=out_dir / VIEWER_NAME)
    return result
