"""Volume rendering of a field: coarse + importance samples, compositing, empty-space skipping.

As the original (``Renderer.render``), with its bugs fixed: the coarse samples are evaluated once and
their outputs are reused in the final composite (only the importance samples are evaluated in the
second pass); alpha uses metric interval lengths unless ``metric_intervals`` is false (B3); density
noise has a configurable std, applied only while fitting (B2); the coarse weights are reshaped by the
coarse count (B4); importance sampling is deterministic at evaluation (B5).

Ray parameters ``t`` are in units of ``dirs`` (camera depth for ``camera_rays``); ``depth`` is
``sum(w * t)`` in those units, not normalized.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from humanliff.runtime.field import Field
from humanliff.runtime.occupancy import dilate, lookup
from humanliff.runtime.rays import box_near_far, camera_rays
from humanliff.runtime.triplane import normalize_points

LAST_INTERVAL = 1e10
"""Length of the last interval of every ray (the original's)."""
TRANSMITTANCE_EPS = 1e-7
"""Added to ``1 - alpha`` in the transmittance of the composite (the original's ``render_core``)."""
UPSAMPLE_TRANSMITTANCE_EPS = 1e-10
"""The same for the coarse weights that importance sampling draws from (the original's ``up_sample``)."""
PDF_EPS = 1e-5
"""Added to the coarse weights before inverse-CDF sampling (the original's)."""


AUTO_CHUNK = {"cuda": 1 << 18, "cpu": 8192}
"""Rays per renderer call for ``chunk = 0``, by device type (others use the CPU's)."""


def ray_chunk(chunk: int, device: torch.device) -> int:
    """``chunk``, or for 0 the device's default (``AUTO_CHUNK``)."""
    return chunk or AUTO_CHUNK.get(device.type, AUTO_CHUNK["cpu"])


class RenderSettings(Protocol):
    """The fields of ``humanliff.config.RenderConfig`` the renderer reads."""

    n_samples: int
    n_importance: int
    perturb: bool
    density_noise_std: float
    metric_intervals: bool
    chunk: int


def stratified_depths(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` depths per ray in [near, far]: ``[...] -> [..., n]``, jittered within strata if ``perturb``."""
    t = torch.linspace(0.0, 1.0, n, device=near.device, dtype=near.dtype)
    z = near[..., None] * (1.0 - t) + far[..., None] * t
    if perturb:
        mids = 0.5 * (z[..., 1:] + z[..., :-1])
        upper = torch.cat([mids, z[..., -1:]], dim=-1)
        lower = torch.cat([z[..., :1], mids], dim=-1)
        u = torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z = lower + (upper - lower) * u
    return z


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, det: bool,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-CDF samples ``[..., n]`` of the step pdf ``weights [..., K]`` over ``bins [..., K+1]``.

    ``det`` takes ``u`` on a regular grid of [0, 1] (evaluation), otherwise sorted uniform random (fitting);
    either way the samples come out sorted along the last dim (up to rounding at bin edges).
    """
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    shape = (*cdf.shape[:-1], n)
    if det:
        u = torch.linspace(0.0, 1.0, n, device=cdf.device, dtype=cdf.dtype).expand(shape).contiguous()
    else:
        u = torch.rand(shape, generator=generator, device=cdf.device, dtype=cdf.dtype).sort(dim=-1).values
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp_min(0)
    above = idx.clamp_max(cdf.shape[-1] - 1)
    cdf0, cdf1 = cdf.gather(-1, below), cdf.gather(-1, above)
    bin0, bin1 = bins.gather(-1, below), bins.gather(-1, above)
    denom = cdf1 - cdf0
    denom = torch.where(denom < PDF_EPS, torch.ones_like(denom), denom)
    return bin0 + (u - cdf0) / denom * (bin1 - bin0)


def merge_sorted(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge rows sorted ascending, ``a [..., n]`` and ``b [..., m]``: ``(merged [..., n+m], order)``.

    ``order`` indexes ``cat([a, b], -1)`` (as ``torch.sort`` would return it; ties put ``a`` first). Two
    binary searches per row instead of a full sort of the concatenation.
    """
    n, m = a.shape[-1], b.shape[-1]
    key_a, key_b = _sorted_keys(a), _sorted_keys(b)
    pos_a = torch.searchsorted(key_b, key_a) + torch.arange(n, device=a.device)
    pos_b = torch.searchsorted(key_a, key_b, right=True) + torch.arange(m, device=a.device)
    # zeros, not empty: if a row is not sorted (NaN), the holes read a valid index instead of garbage
    order = torch.zeros((*a.shape[:-1], n + m), dtype=torch.long, device=a.device)
    order.scatter_(-1, pos_a, torch.arange(n, device=a.device).expand_as(a))
    order.scatter_(-1, pos_b, torch.arange(n, n + m, device=a.device).expand_as(b))
    return torch.cat([a, b], dim=-1).gather(-1, order), order


def _sorted_keys(x: torch.Tensor) -> torch.Tensor:
    """The running maxima of ``x``'s rows: ``x`` itself when they are sorted ascending (the usual case), and
    a row off by rounding (an ulp out of order) still maps 1:1 in ``merge_sorted``. No host sync, so that a
    training step can be captured as a CUDA graph."""
    return torch.cummax(x, dim=-1).values


def alpha_weights(density: torch.Tensor, z: torch.Tensor, dir_norm: torch.Tensor | None,
                  eps: float = TRANSMITTANCE_EPS) -> torch.Tensor:
    """Compositing weights ``[..., S]`` of densities at sorted depths ``z [..., S]``.

    Intervals are ``z[i+1] - z[i]`` (the last ``1e10``), times ``dir_norm [...]`` when given (metric);
    ``w = alpha * T`` with ``T`` the exclusive cumprod of ``1 - alpha + eps``.
    """
    dists = torch.cat([z[..., 1:] - z[..., :-1], torch.full_like(z[..., :1], LAST_INTERVAL)], dim=-1)
    if dir_norm is not None:
        dists = dists * dir_norm[..., None]
    alpha = 1.0 - torch.exp(-density * dists)
    trans = PositiveCumprod.apply(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + eps], dim=-1))
    return alpha * trans[..., :-1]


class PositiveCumprod(torch.autograd.Function):
    """``x.cumprod(-1)`` of an ``x`` positive everywhere (``1 - alpha + eps``, eps > 0). Its backward is
    torch's for inputs without zeros, ``reverse_cumsum(grad * out) / x``, without torch's check for zeros,
    which reads a value on the host: a training step that composites can then be captured as a CUDA graph."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        out = x.cumprod(-1)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        x, out = ctx.saved_tensors
        return (grad * out).flip(-1).cumsum(-1).flip(-1) / x


def composite(rgb_raw: torch.Tensor, sigma_raw: torch.Tensor, z: torch.Tensor, dir_norm: torch.Tensor,
              cfg: RenderSettings, *, training: bool, occupied: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Composite raw samples along rays.

    Args:
        rgb_raw: ``[B, N, S, 3]``; sigma_raw, z: ``[B, N, S]`` (z sorted).
        dir_norm: ``[B, N]`` lengths of the ray directions.
        occupied: optional ``[B, N, S]`` bool; unoccupied samples get zero density.

    Returns:
        ``rgb [B, N, 3]``, ``acc [B, N]``, ``depth [B, N]`` (``sum(w * z)``) and ``weights [B, N, S]``.
    """
    if training and cfg.density_noise_std > 0:
        noise = torch.randn(sigma_raw.shape, generator=generator, device=sigma_raw.device,
                            dtype=sigma_raw.dtype)
        sigma_raw = sigma_raw + cfg.density_noise_std * noise
    density = F.softplus(sigma_raw)
    if occupied is not None:
        density = density * occupied
    w = alpha_weights(density, z, dir_norm if cfg.metric_intervals else None)
    rgb = (w[..., None] * torch.sigmoid(rgb_raw)).sum(dim=-2)
    return {"rgb": rgb, "acc": w.sum(dim=-1), "depth": (w * z).sum(dim=-1), "weights": w}


def _evaluate(field: Field, points: torch.Tensor, viewdirs: torch.Tensor,
              occupied: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Field at points ``[B, M, 3]``; with ``occupied [B, M]`` only those are evaluated (zeros elsewhere)."""
    if occupied is None:
        rgb, sigma = field(points, viewdirs)
        return rgb, sigma[..., 0]
    b, m, _ = points.shape
    counts = occupied.sum(dim=1)
    k = int(counts.max())  # the one host sync: the compacted batch's width
    rgb = points.new_zeros(b, m, 3)
    sigma = points.new_zeros(b, m)
    if k == 0:
        return rgb, sigma
    # compact each row's occupied samples to the front (rank by cumsum; O(M), no sort); rows with fewer
    # than k occupied samples pad with their sample 0, whose duplicate result is dropped by the mask
    rank = torch.where(occupied, occupied.cumsum(dim=1) - 1, k)
    order = points.new_zeros(b, k + 1, dtype=torch.long).scatter_(
        1, rank, torch.arange(m, device=points.device).expand(b, m))[:, :k]
    valid = torch.arange(k, device=points.device)[None] < counts[:, None]
    idx3 = order[..., None].expand(b, k, 3)
    rgb_k, sigma_k = field(points.gather(1, idx3), viewdirs.gather(1, idx3))
    rgb_k = torch.where(valid[..., None], rgb_k, 0.0)
    sigma_k = torch.where(valid, sigma_k[..., 0], 0.0)
    return rgb.scatter_add(1, idx3, rgb_k), sigma.scatter_add(1, order, sigma_k)


def _depth_points(origins: torch.Tensor, dirs: torch.Tensor, z: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Normalized points ``[B, N*S, 3]`` of rays ``[B, N, 3]`` at depths ``z [B, N, S]`` in boxes ``[B, 2, 3]``."""
    b, n, s = z.shape
    return normalize_points((origins[..., None, :] + dirs[..., None, :] * z[..., None]).reshape(b, n * s, 3), bounds)


def _evaluate_depths(field: Field, origins: torch.Tensor, dirs: torch.Tensor, z: torch.Tensor,
                     bounds: torch.Tensor, occupancy: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Field at depths ``z [B, N, S]``: rgb_raw ``[B, N, S, 3]``, sigma_raw and occupied ``[B, N, S]``."""
    b, n, s = z.shape
    points = _depth_points(origins, dirs, z, bounds)
    viewdirs = F.normalize(dirs, dim=-1)[..., None, :].expand(b, n, s, 3).reshape(b, n * s, 3)
    occupied = None if occupancy is None else lookup(occupancy.expand(b, -1, -1, -1), points)
    rgb, sigma = _evaluate(field, points, viewdirs, occupied)
    occupied = None if occupied is None else occupied.reshape(b, n, s)
    return rgb.reshape(b, n, s, 3), sigma.reshape(b, n, s), occupied


def importance_depths(sigma_raw: torch.Tensor, z: torch.Tensor, dir_norm: torch.Tensor, n: int, *,
                      det: bool, occupied: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Fine depths ``[B, N, n]`` from coarse samples, no gradient (the original's up_sample + sample_pdf).

    The coarse weights use metric intervals, no noise and the transmittance epsilon 1e-10 of the original's
    ``up_sample`` (its composite uses 1e-7); ``weights[..., 1:-1] + 1e-5`` on the midpoints.
    """
    with torch.no_grad():
        density = F.softplus(sigma_raw.detach())
        if occupied is not None:
            density = density * occupied
        w = alpha_weights(density, z, dir_norm, UPSAMPLE_TRANSMITTANCE_EPS)
        mids = 0.5 * (z[..., 1:] + z[..., :-1])
        return sample_pdf(mids, w[..., 1:-1] + PDF_EPS, n, det, generator)


def render_rays(field: Field, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
                far: torch.Tensor, bounds: torch.Tensor, cfg: RenderSettings, *, training: bool,
                generator: torch.Generator | None = None, occupancy: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """Render rays through a field (differentiable in the field's tri-planes).

    Args:
        field: ``field(points [B,M,3] normalized, viewdirs [B,M,3]) -> (rgb_raw, sigma_raw)``.
        origins, dirs: ``[B, N, 3]`` world rays (dirs need not be unit).
        near, far: ``[B, N]`` in units of dirs.
        bounds: ``[B, 2, 3]`` world box of each field (min row, max row), used to normalize points.
        cfg: ``RenderConfig``; ``training`` turns on stratified jitter (``cfg.perturb``), random
            importance sampling and density noise; at evaluation the result is deterministic.
        occupancy: optional ``[B or 1, G, G, G]`` bool grid: samples in empty cells get zero density and
            are not evaluated.

    Returns:
        ``rgb [B, N, 3]``, ``acc [B, N]``, ``depth [B, N]``, ``weights [B, N, S]`` and the sorted depths
        ``z [B, N, S]`` (S = n_samples + n_importance).
    """
    if cfg.n_importance > 0 and cfg.n_samples < 3:
        raise ValueError(f"importance sampling needs n_samples >= 3, got {cfg.n_samples}")
    dir_norm = dirs.norm(dim=-1)
    z = stratified_depths(near, far, cfg.n_samples, training and cfg.perturb, generator)
    rgb, sigma, occupied = _evaluate_depths(field, origins, dirs, z, bounds, occupancy)
    if cfg.n_importance > 0:
        z_fine = importance_depths(sigma, z, dir_norm, cfg.n_importance, det=not training, occupied=occupied,
                                   generator=generator)
        rgb_f, sigma_f, occupied_f = _evaluate_depths(field, origins, dirs, z_fine, bounds, occupancy)
        z, order = merge_sorted(z, z_fine)
        rgb = torch.cat([rgb, rgb_f], dim=-2).gather(-2, order[..., None].expand(*order.shape, 3))
        sigma = torch.cat([sigma, sigma_f], dim=-1).gather(-1, order)
        if occupied is not None:
            occupied = torch.cat([occupied, occupied_f], dim=-1).gather(-1, order)
    out = composite(rgb, sigma, z, dir_norm, cfg, training=training, occupied=occupied, generator=generator)
    out["z"] = z
    return out


def ray_reach(occupancy: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
              bounds: torch.Tensor, n_samples: int) -> torch.Tensor:
    """The grid ``[1, G, G, G]`` dilated so that a ray crossing an occupied cell has a coarse sample in it.

    Rays ``dirs [N, 3]``, ``near, far [N]`` with ``n_samples`` evenly spaced coarse samples: a ray that crosses
    an occupied cell passes within half a sample step of some coarse sample, so growing the cells by half the
    largest step (in cells of the smallest extent, ``bounds [2, 3]``) covers it. A ray with no coarse sample in
    the result has zero density at every coarse and fine sample: it renders black.
    """
    if dirs.shape[0] == 0 or n_samples < 2:
        return occupancy
    step = ((far - near) * dirs.norm(dim=-1)).max() / (n_samples - 1)
    cell = (bounds[1] - bounds[0]).min() / occupancy.shape[-1]
    return dilate(occupancy, int(torch.ceil(0.5 * step / cell)))


def _meets(grid: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
           box: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``[N]`` bool: rays (``[N, 3]``, ``[N]``) with a coarse evaluation sample in an occupied cell of ``grid``."""
    z = stratified_depths(near, far, n_samples, False)
    return lookup(grid, _depth_points(origins[None], dirs[None], z[None], box)).reshape(-1, n_samples).any(dim=-1)


@torch.no_grad()
def render_image(field: Field, K: torch.Tensor, R: torch.Tensor, T: torch.Tensor, height: int, width: int,
                 bounds: torch.Tensor, cfg: RenderSettings, *, occupancy: torch.Tensor | None = None,
                 progress: bool = False) -> dict[str, torch.Tensor]:
    """Render one view of a single field (B = 1) in chunks of ``cfg.chunk`` rays (``ray_chunk``),
    deterministically.

    Args:
        K, R: ``[3, 3]``; T: ``[3]`` (OpenCV world-to-camera); bounds: ``[2, 3]`` world box.
        occupancy: optional ``[1, G, G, G]`` grid (``build_occupancy``) to skip empty space.

    Returns:
        ``rgb [H, W, 3]`` in [0, 1] (black background), ``acc [H, W]``, ``depth [H, W]`` (camera depth;
        0 where the ray misses the box).
    """
    origins, dirs = camera_rays(K, R, T, height, width)
    near, far, hit = box_near_far(origins, dirs, bounds)
    rays = [x[hit] for x in (origins, dirs, near, far)]
    n_pixels = height * width
    device = origins.device
    rgb = torch.zeros(n_pixels, 3, device=device)
    acc = torch.zeros(n_pixels, device=device)
    depth = torch.zeros(n_pixels, device=device)
    flat_hit = hit.reshape(-1).nonzero()[:, 0]
    box = bounds.to(origins)[None]
    chunk = ray_chunk(cfg.chunk, device)
    reach = None if occupancy is None else ray_reach(occupancy, rays[1], rays[2], rays[3], box[0], cfg.n_samples)
    for start in tqdm(range(0, flat_hit.numel(), chunk), desc="render", disable=not progress, leave=False):
        o, d, n, f = (x[start:start + chunk] for x in rays)
        pix = flat_hit[start:start + chunk]
        if reach is not None:  # rays that meet no occupied cell stay black: not rendered
            live = _meets(reach, o, d, n, f, box, cfg.n_samples)
            o, d, n, f, pix = (x[live] for x in (o, d, n, f, pix))
            if pix.numel() == 0:
                continue
        out = render_rays(field, o[None], d[None], n[None], f[None], box, cfg, training=False,
                          occupancy=occupancy)
        rgb[pix] = out["rgb"][0]
        acc[pix] = out["acc"][0]
        depth[pix] = out["depth"][0]
    return {"rgb": rgb.reshape(height, width, 3), "acc": acc.reshape(height, width),
            "depth": depth.reshape(height, width)}


def render_views(field: Field, K: torch.Tensor, R: torch.Tensor, T: torch.Tensor, height: int, width: int,
                 bounds: torch.Tensor, cfg: RenderSettings, *, occupancy: torch.Tensor | None = None,
                 progress: bool = False) -> torch.Tensor:
    """``render_image`` of each camera ``K [V,3,3], R [V,3,3], T [V,3]`` (moved to ``bounds``' device):
    float32 ``[V, H, W, 3]`` in [0, 1] on the CPU (black background)."""
    device = bounds.device
    frames = [render_image(field, K[v].to(device), R[v].to(device), T[v].to(device), height, width, bounds, cfg,
                           occupancy=occupancy)["rgb"].float().cpu()
              for v in tqdm(range(len(K)), desc="views", unit="view", disable=not progress, leave=False)]
    return torch.stack(frames)
