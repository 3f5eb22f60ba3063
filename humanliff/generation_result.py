"""What ``Pipeline.__call__`` returns: generated tri-planes in memory, with pictures, meshes and a save.

Everything is computed on demand from the planes through the pipeline's decoder (torch or engine), so a
notebook can look at one view of one human without rendering the whole generation folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from humanliff.config import Config
from humanliff.outputs.images import contact_sheet, opaque
from humanliff.outputs.meshes import surface_mesh
from humanliff.outputs.video import write_video
from humanliff.outputs.writer import composited_views, render_occupancy, turntable_fps, write_generation
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.layers import LAYER_TITLES

if TYPE_CHECKING:
    import trimesh

    from humanliff.pipeline import Pipeline


@dataclasses.dataclass
class GenerationResult:
    """Generated humans: ``planes`` float32 ``[L, B, 27, R, R]`` of layer ids ``layers`` (on the pipeline's
    device), decoded in the world box ``bounds`` ``[2, 3]``, with the settings ``config`` they were made
    with (``config.sample.batch`` = B)."""

    planes: torch.Tensor
    layers: list[int]
    bounds: torch.Tensor
    config: Config
    pipeline: Pipeline

    @property
    def humans(self) -> int:
        return int(self.planes.shape[1])

    def _render(self, human: int, li: int, cameras: tuple[torch.Tensor, ...], size: int, background: str
                ) -> np.ndarray:
        """uint8 ``[V, S, S, 3 or 4]``: one human's layer (index ``li``) from ``cameras`` (K, R, T; CPU)."""
        device = self.pipeline.device
        field = self.pipeline.field(self.planes[li, human:human + 1])
        occupancy = render_occupancy(field, self.config.render, device)
        return composited_views(field, tuple(c.to(device) for c in cameras), size, self.bounds.to(device),
                            self.config.render, occupancy, background)

    def images(self, view: int = 0, size: int | None = None, *, views: int | None = None,
               background: str | None = None) -> list[list[Image.Image]]:
        """PIL images ``[human][layer]``: orbit view ``view`` of ``views`` (default ``sample.views``; view 0
        faces the front) at ``size`` pixels (default ``sample.image_size``) on ``background`` (default
        ``sample.background``; ``transparent`` gives RGBA images)."""
        s = self.config.sample
        views, size, background = views or s.views, size or s.image_size, background or s.background
        picked = tuple(c[view:view + 1] for c in orbit_cameras(self.bounds.cpu(), views, size))
        return [[Image.fromarray(self._render(i, li, picked, size, background)[0]) for li in range(len(self.layers))]
                for i in range(self.humans)]

    def contact_sheet(self, size: int | None = None) -> Image.Image:
        """Humans x layers (front views, titled body / +pants / ...) as one PIL image."""
        fronts = np.stack([np.stack([opaque(np.asarray(im)) for im in row]) for row in self.images(0, size)])
        return Image.fromarray(contact_sheet(fronts, [LAYER_TITLES[k] for k in self.layers]))

    def meshes(self, level: float | None = None, resolution: int | None = None, keep: float | None = None
               ) -> list[list[trimesh.Trimesh | None]]:
        """Coloured trimesh meshes ``[human][layer]`` (None where the density never reaches ``level``):
        the iso-surface at ``level`` (default ``sample.mesh_level``) on a ``resolution``-point grid
        (default ``sample.mesh_resolution``), without components under ``keep`` of the largest
        (default ``sample.mesh_keep``); see ``humanliff.outputs.meshes.surface_mesh``."""
        s = self.config.sample
        level = s.mesh_level if level is None else level
        keep = s.mesh_keep if keep is None else keep
        resolution = resolution or s.mesh_resolution
        bounds = self.bounds.to(self.pipeline.device)
        return [[surface_mesh(self.pipeline.field(self.planes[li, i:i + 1]), bounds, resolution, level, keep,
                              name=f"human {i}, layer {k}")
                 for li, k in enumerate(self.layers)] for i in range(self.humans)]

    def turntable(self, human: int = 0, *, frames: int | None = None, size: int | None = None,
                  background: str | None = None, path: str | Path | None = None) -> np.ndarray:
        """One human orbiting, its layers side by side: uint8 ``[F, S, L*S, 3]`` (``4`` channels when
        transparent); ``frames``, ``size``, ``background`` default to ``sample.*``. With ``path`` (``.gif``
        or ``.mp4``) it is also written, one turn in ``sample.turntable_seconds``."""
        s = self.config.sample
        frames, size, background = frames or s.turntable_frames, size or s.image_size, background or s.background
        cameras = orbit_cameras(self.bounds.cpu(), frames, size)
        movie = np.concatenate([self._render(human, li, cameras, size, background)
                                for li in range(len(self.layers))], axis=2)
        if path is not None:
            fps = turntable_fps(dataclasses.replace(s, turntable_frames=frames))
            write_video(path, movie if Path(path).suffix.lower() == ".gif" else opaque(movie), fps=fps)
        return movie

    def save(self, out_dir: str | Path, *, force: bool = False, progress: bool = False) -> dict[str, Any]:
        """Write the generation folder (planes.npz, generation.json, views, contact sheet, turntables, meshes,
        viewer.html; see ``humanliff.outputs.writer``) atomically, after ``Pipeline.check_output``; an
        existing folder of ours needs ``force``. Returns the written paths."""
        self.pipeline.check_output(out_dir, self.humans, force=force)
        return write_generation(out_dir, self.planes, self.layers, self.pipeline.field, self.bounds,
                                self.config.sample, self.config.render, progress=progress)
