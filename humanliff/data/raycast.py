"""Render a layered figure of primitives from one camera into its 4 layer images and masks.

Analytic first hits per primitive (only over the pixels its bounding sphere can cover), a depth buffer per
layer (a primitive of layer L is visible in layers L..3), Lambert shading under fixed world lights (so
every view sees the same colours), supersampling for smooth edges and a black background.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from humanliff.data.primitives import Primitive
from humanliff.runtime.cameras import project_points
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.runtime.rays import camera_rays

LIGHTS = ((np.array([0.35, 0.80, 0.50]), 0.70), (np.array([-0.45, 0.55, -0.70]), 0.35))
"""Directional lights (towards the light, world) and their strengths."""
AMBIENT, SKY = 0.30, 0.20


def shade(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Lambert shading ``[N, 3]`` of albedos ``[N, 3]`` with unit normals ``[N, 3]``."""
    light = AMBIENT + SKY * (0.5 + 0.5 * normals[:, 1])
    for direction, strength in LIGHTS:
        light = light + strength * np.clip(normals @ (direction / np.linalg.norm(direction)), 0.0, None)
    return np.clip(albedo * light[:, None], 0.0, 1.0)


def render_layers(figure: list[Primitive], K: np.ndarray, R: np.ndarray, T: np.ndarray, size: int,
                  supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render all 4 layers of ``figure`` from one camera.

    Args:
        figure: primitives (metres, world); K, R, T: ``[3, 3]``, ``[3, 3]``, ``[3]`` OpenCV world-to-camera.
        size: square image side in pixels; supersample: samples per pixel along each axis.

    Returns:
        ``(images uint8 [4, size, size, 3], masks bool [4, size, size])``; pixels outside a mask are 0.
    """
    s = supersample
    fine = s * size
    K_fine, origin, dirs = supersampled_rays(K, R, T, size, s)
    k_t, r_t, t_t = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (K_fine, R, T))

    spheres = [p.bounding_sphere() for p in figure]
    centres = torch.from_numpy(np.stack([c for c, _ in spheres]).astype(np.float32))
    pixels, depth = (a.double().numpy() for a in project_points(k_t, r_t, t_t, centres))
    focal = float(max(K_fine[0, 0], K_fine[1, 1]))

    depth_buf = np.full((NUM_LAYERS, fine * fine), np.inf)
    colour_buf = np.zeros((NUM_LAYERS, fine * fine, 3))
    for prim, (_, radius), (u, v), z in zip(figure, spheres, pixels, depth, strict=True):
        reach = 1.25 * focal * radius / max(z - radius, 1e-3) + 2.0
        c0, c1 = max(math.floor(u - reach), 0), min(math.ceil(u + reach) + 1, fine)
        r0, r1 = max(math.floor(v - reach), 0), min(math.ceil(v + reach) + 1, fine)
        if c0 >= c1 or r0 >= r1:
            continue
        t = prim.intersect(origin, dirs[r0:r1, c0:c1].reshape(-1, 3))
        hit = np.isfinite(t)
        if not hit.any():
            continue
        rows, cols = np.divmod(np.flatnonzero(hit), c1 - c0)
        index = (rows + r0) * fine + cols + c0
        t = t[hit]
        points = origin + t[:, None] * dirs[rows + r0, cols + c0]
        colour = shade(prim.material.albedo(points), prim.normal(points))
        for layer in range(prim.layer, NUM_LAYERS):
            closer = t < depth_buf[layer, index]
            depth_buf[layer, index[closer]] = t[closer]
            colour_buf[layer, index[closer]] = colour[closer]

    return resolve_supersampled(np.isfinite(depth_buf), colour_buf, size, s)


def supersampled_rays(K: np.ndarray, R: np.ndarray, T: np.ndarray, size: int, supersample: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays of a ``supersample``-times finer image of one camera.

    Returns ``(K_fine [3, 3], origin [3], dirs [fine, fine, 3])`` float64, ``fine = supersample * size``.
    """
    s = supersample
    K_fine = K.astype(np.float64).copy()
    K_fine[:2] *= s
    K_fine[:2, 2] += 0.5 * (s - 1)
    k_t, r_t, t_t = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in (K_fine, R, T))
    origins, dirs = camera_rays(k_t, r_t, t_t, s * size, s * size)
    return K_fine, origins[0, 0].double().numpy(), dirs.double().numpy()


def resolve_supersampled(hit: np.ndarray, colour: np.ndarray, size: int, supersample: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Average supersampled layers (``hit`` bool ``[L, fine*fine]``, ``colour`` ``[L, fine*fine, 3]`` in [0, 1],
    black where missed) into ``(images uint8 [L, size, size, 3], masks bool [L, size, size])``: a pixel is in
    the mask when at least half its samples hit; pixels outside a mask are 0."""
    s, n = supersample, hit.shape[0]
    coverage = hit.reshape(n, size, s, size, s).mean(axis=(2, 4))
    images = colour.reshape(n, size, s, size, s, 3).mean(axis=(2, 4))
    masks = coverage >= 0.5
    images = np.where(masks[..., None], np.round(images * 255.0), 0).astype(np.uint8)
    return images, masks
