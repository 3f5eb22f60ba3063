"""Training rays as the original samples them (§1.5), vectorized in torch, and full-image ray bundles.

Per image: ``fg_fraction`` of the rays uniformly (with replacement) from mask pixels, the rest from pixels
inside the projected box but outside the mask; only pixels whose ray crosses the box are drawn (the
original redraws the others), so near < far for every ray (unless an image sees none of its box). Everything
stays on the tensors' device, with no host synchronization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from humanliff.runtime.rays import box_near_far, camera_rays, pixel_rays


@dataclass
class RayBatch:
    """Training rays: ``origins, dirs [N, n, 3]``, ``near, far [N, n]``, ``rgb [N, n, 3]`` in [0, 1],
    ``fg [N, n]`` 1.0 for mask pixels (the target of the accumulation loss)."""

    origins: torch.Tensor
    dirs: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    rgb: torch.Tensor
    fg: torch.Tensor


@dataclass
class RayBundle:
    """Every pixel's ray: ``origins, dirs [..., H, W, 3]``, ``near, far, hit [..., H, W]``.

    ``hit`` marks rays that cross the box (the original's ``mask_at_box``); the others have near 0, far 1.
    """

    origins: torch.Tensor
    dirs: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    hit: torch.Tensor


def full_image_rays(K: torch.Tensor, R: torch.Tensor, T: torch.Tensor, height: int, width: int,
                    bounds: torch.Tensor) -> RayBundle:
    """Rays of whole images for evaluation.

    K, R ``[..., 3, 3]``, T ``[..., 3]``, bounds ``[2, 3]`` or ``[N, 2, 3]`` (with K ``[N, 3, 3]``).
    """
    origins, dirs = camera_rays(K, R, T, height, width)
    near, far, hit = box_near_far(origins, dirs, bounds)
    return RayBundle(origins, dirs, near, far, hit)


def _draw(weights: torch.Tensor, fallback: torch.Tensor, n: int,
          generator: torch.Generator | None) -> torch.Tensor:
    """``n`` pixel indices per row of ``weights [N, P]`` (rows without any weight use ``fallback``)."""
    if n == 0:
        return torch.zeros(weights.shape[0], 0, dtype=torch.long, device=weights.device)
    empty = weights.sum(dim=1, keepdim=True) == 0
    weights = torch.where(empty, fallback, weights)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def sample_rays(images: torch.Tensor, masks: torch.Tensor, K: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                bounds: torch.Tensor, n_rays: int = 2048, fg_fraction: float = 0.8,
                generator: torch.Generator | None = None) -> RayBatch:
    """Draw ``n_rays`` training rays from each of N images.

    Args:
        images: uint8 ``[N, H, W, 3]``; masks: bool ``[N, H, W]``; K, R ``[N, 3, 3]``; T ``[N, 3]``;
        bounds: ``[N, 2, 3]`` world boxes; n_rays: rays per image; fg_fraction: share drawn inside the mask;
        generator: a torch generator on the tensors' device (None: the global one).

    Returns:
        a ``RayBatch`` of ``[N, n_rays, ...]`` tensors on the images' device.
    """
    n_img, height, width = masks.shape
    box = full_image_rays(K, R, T, height, width, bounds).hit.reshape(n_img, -1)
    inside = masks.reshape(n_img, -1).bool()
    fg_w = (inside & box).float()
    bg_w = (~inside & box).float()
    any_box = box.float()
    any_box = torch.where(any_box.sum(dim=1, keepdim=True) == 0, torch.ones_like(any_box), any_box)
    n_fg = int(round(n_rays * fg_fraction))
    index = torch.cat([_draw(fg_w, any_box, n_fg, generator), _draw(bg_w, any_box, n_rays - n_fg, generator)],
                      dim=1)
    pixels = torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1)
    origins, dirs = pixel_rays(K, R, T, pixels)
    near, far, _ = box_near_far(origins, dirs, bounds)
    rgb = images.reshape(n_img, -1, 3).gather(1, index[..., None].expand(-1, -1, 3)).float() / 255.0
    fg = inside.gather(1, index).float()
    return RayBatch(origins, dirs, near, far, rgb, fg)
