"""One fitting step's pieces shared by stages A and B: training images on the device, ray draws, the loss.

A step fits U tri-planes at once (``[U, 27, R, R]``). Each plane gets ``views_per_plane`` of its own
training images, ``rays_per_image`` rays each, drawn as the original (80% inside the mask); the rays of a
plane are rendered together (``[U, V*n, ...]``), so no plane is copied per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from humanliff.config import Config, DataConfig
from humanliff.data.loader import get_layout
from humanliff.data.raysampler import RayBatch, sample_rays
from humanliff.data.types import SubjectData
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.runtime.field import make_field
from humanliff.runtime.render import render_rays
from humanliff.training.fit_losses import plane_losses


@dataclass
class PlaneTargets:
    """Training images of U tri-planes, on the device: ``images`` uint8 ``[U, V, H, W, 3]``, ``masks`` bool
    ``[U, V, H, W]``, ``K, R [U, V, 3, 3]``, ``T [U, V, 3]``, ``bounds [U, 2, 3]`` (world box, metres)."""

    images: torch.Tensor
    masks: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    T: torch.Tensor
    bounds: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def _check_masks(subject: SubjectData, layer: int, views: np.ndarray, data_cfg: DataConfig) -> None:
    """Raise naming the mask file of the first training view whose mask is empty."""
    empty = ~subject.masks[layer, views].reshape(len(views), -1).any(1)
    if empty.any():
        view = subject.view_ids[int(views[np.argmax(empty)])]
        subject_dir = Path(data_cfg.root) / subject.name
        raise InputFileError(get_layout(data_cfg.layout).mask_file(subject_dir, layer, view),
                             "the mask is empty: nothing to fit")


def plane_targets(subjects: Sequence[SubjectData], layers: Sequence[int], views: np.ndarray,
                  device: torch.device, data_cfg: DataConfig) -> PlaneTargets:
    """Targets of the tri-planes ``(subjects[i], layers[i])`` restricted to view positions ``views``."""
    if any(s.warp is not None for s in subjects):
        raise HumanLiffError("fit: data.canonical (TightCap canonical space) is not supported by fit yet")
    shapes = {(len(s.view_ids), *s.image_size) for s in subjects}
    if len(shapes) > 1:
        raise HumanLiffError(f"{subjects[0].name}: subjects fitted together need the same view count and "
                             f"image size (found {sorted(shapes)})")
    for s, layer in zip(subjects, layers, strict=True):
        _check_masks(s, layer, views, data_cfg)

    def stack(get: object) -> torch.Tensor:
        return torch.from_numpy(np.stack([get(s, layer) for s, layer in zip(subjects, layers, strict=True)]))

    return PlaneTargets(
        images=stack(lambda s, layer: s.images[layer, views]).to(device),
        masks=stack(lambda s, layer: s.masks[layer, views]).to(device),
        K=stack(lambda s, _: s.K[views]).to(device),
        R=stack(lambda s, _: s.R[views]).to(device),
        T=stack(lambda s, _: s.T[views]).to(device),
        bounds=stack(lambda s, _: s.bounds).float().to(device),
    )


def draw_rays(targets: PlaneTargets, rows: torch.Tensor, views_per_plane: int, rays_per_image: int,
              fg_fraction: float, generator: torch.Generator) -> RayBatch:
    """Rays of ``views_per_plane`` random training images of each plane of ``rows [U]``: ``[U, V*n, ...]``."""
    u = rows.shape[0]
    views = torch.randint(0, targets.images.shape[1], (u, views_per_plane), generator=generator,
                          device=rows.device)
    r = rows[:, None].expand(u, views_per_plane)
    flat = (targets.images[r, views], targets.masks[r, views], targets.K[r, views], targets.R[r, views],
            targets.T[r, views])
    flat = tuple(x.flatten(0, 1) for x in flat)
    bounds = targets.bounds[rows].repeat_interleave(views_per_plane, dim=0)
    batch = sample_rays(*flat, bounds, rays_per_image, fg_fraction, generator)
    return RayBatch(*(x.reshape(u, views_per_plane * rays_per_image, *x.shape[2:]) for x in (
        batch.origins, batch.dirs, batch.near, batch.far, batch.rgb, batch.fg)))


def fit_precision(cfg: Config, device: torch.device) -> str:
    """``cfg.fit.precision`` on CUDA; float32 on the CPU."""
    return cfg.fit.precision if device.type == "cuda" else "fp32"


class RenderLoss(torch.nn.Module):
    """Render rays through tri-planes and a decoder, return the per-plane losses (``plane_losses``).

    A module so that stage A can wrap it in DDP: the decoder's gradients are then all-reduced, while the
    planes (an input, not a parameter) keep rank-local gradients.
    """

    def __init__(self, decoder: torch.nn.Module, cfg: Config) -> None:
        super().__init__()
        self.decoder = decoder
        self.cfg = cfg

    def forward(self, planes: torch.Tensor, rays: RayBatch, bounds: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """planes ``[U, 27, R, R]``, rays ``[U, N, ...]``, bounds ``[U, 2, 3]`` -> dict of ``[U]`` losses."""
        field = make_field(planes, self.decoder, precision=fit_precision(self.cfg, planes.device),
                           compile=self.cfg.fit.compile, fused=self.cfg.render.fused_kernel)
        out = render_rays(field, rays.origins, rays.dirs, rays.near, rays.far, bounds, self.cfg.render,
                          training=True, generator=generator)
        return plane_losses(out["rgb"], out["acc"], rays.rgb, rays.fg, planes, self.cfg.fit)
