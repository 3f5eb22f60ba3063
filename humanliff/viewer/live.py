"""Live volume rendering for ``humanliff view``: the browser's camera to the renderer's, several humans.

viser reports a camera as ``wxyz`` (camera-to-world rotation, OpenCV axes: x right, y down, z forward),
``position`` (world), the vertical field of view (radians) and the aspect ratio; the renderer takes
OpenCV world-to-camera ``K, R, T`` (``humanliff.runtime.cameras``). Each human stands at an offset in
the scene; it is rendered in its own frame and the nearest surface wins per pixel. Needs viser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from viser.transforms import SO3

from humanliff.config import RenderConfig
from humanliff.outputs.images import to_uint8
from humanliff.runtime.field import Field
from humanliff.runtime.render import render_image

MIN_ACC = 0.05
"""Opacity below which a human's pixel does not count as its surface when compositing humans."""


@dataclass
class Placed:
    """A field in the scene: its world box ``[2, 3]``, occupancy grid and offset ``[3]`` (scene = world + offset)."""

    field: Field
    bounds: torch.Tensor
    occupancy: torch.Tensor | None
    offset: torch.Tensor


def browser_camera(wxyz: Sequence[float], position: Sequence[float], fov: float, aspect: float, height: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """``(K [3, 3], R [3, 3], T [3], height, width)`` of a viser camera rendered ``height`` pixels tall."""
    width = max(1, round(height * aspect))
    focal = 0.5 * height / math.tan(0.5 * fov)
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    rotation = SO3(np.asarray(wxyz, np.float64)).as_matrix().T
    R = torch.from_numpy(rotation).float()
    T = torch.from_numpy(-rotation @ np.asarray(position, np.float64)).float()
    return K, R, T, height, width


@torch.no_grad()
def render_placed(humans: Sequence[Placed], K: torch.Tensor, R: torch.Tensor, T: torch.Tensor, height: int,
                  width: int, cfg: RenderConfig) -> np.ndarray:
    """The scene's humans seen by camera ``K, R, T`` (scene frame): uint8 ``[height, width, 3]`` on black.

    Human i's world point ``x`` sits at ``x + offset`` in the scene, so its camera is ``R, T + R @ offset``.
    """
    device = humans[0].bounds.device if humans else torch.device("cpu")
    K, R, T = K.to(device), R.to(device), T.to(device)
    rgb = torch.zeros(height, width, 3, device=device)
    nearest = torch.full((height, width), math.inf, device=device)
    for human in humans:
        out = render_image(human.field, K, R, T + R @ human.offset.to(device), height, width, human.bounds, cfg,
                           occupancy=human.occupancy)
        depth = torch.where(out["acc"] > MIN_ACC, out["depth"] / out["acc"].clamp_min(1e-6), math.inf)
        closer = depth < nearest
        rgb = torch.where(closer[..., None], out["rgb"], rgb)
        nearest = torch.minimum(nearest, depth)
    return to_uint8(rgb.float().cpu().numpy())
