"""Faithful fp32 eager re-creations of the original HumanLiff hot paths, the baselines of the benchmark.

Each is checked against the golden outputs of the original code (tests/test_benchmark_baselines.py)
or built from pieces that are:
- ``original_sample_from_planes``: the original's EG3D-style projection through inverted plane
  matrices and three ``grid_sample`` calls (one per shifted group) over a ``[B*3, 9, R, R]`` batch;
- ``use_einsum_attention``: the original's legacy attention (per-head interleaved qkv, 1/sqrt(sqrt(d))
  on q and k, einsum, softmax in fp32) swapped into our UNet, which otherwise matches it key for key;
- ``OriginalFitStep``: one stage-B step as the original runs it (coarse pass without gradients, then
  all coarse + fine samples evaluated again with gradients, N(0,1) density noise, non-metric intervals,
  dense Adam over the whole plane tensor, clamp, optionally anomaly mode as its ``fields.py`` sets);
- ``OriginalTrainStep``: the original diffusion step (fp16 autocast, GradScaler-scaled gradients never
  unscaled, value clipping, micro-batches of 2 with summed losses, a Python-loop EMA).
"""

from __future__ import annotations

import contextlib
import math
import types
from dataclasses import replace

import torch
import torch.nn.functional as F

from humanliff.config import Config
from humanliff.models.unet import AttentionBlock, UNet
from humanliff.runtime.render import composite, importance_depths, stratified_depths
from humanliff.runtime.schedule import q_sample
from humanliff.training.fit_losses import plane_losses

_PLANE_MATRICES = torch.tensor([
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
])


def original_sample_from_planes(planes: torch.Tensor, coords: torch.Tensor,
                                box: torch.Tensor | None = None) -> torch.Tensor:
    """``planes [N, 3, 9, R, R]``, ``coords [N, M, 3]`` (world when ``box [N, 2, 3]``) -> ``[N, M, 27]``."""
    n, n_planes, c, h, w = planes.shape
    m = coords.shape[1]
    if box is not None:
        coords = 2 * (coords - box[:, :1]) / (box[:, 1:] - box[:, :1]) - 1
    inv = torch.linalg.inv(_PLANE_MATRICES.to(coords)).unsqueeze(0).expand(n, -1, -1, -1).reshape(-1, 3, 3)
    pts = coords.unsqueeze(1).expand(-1, n_planes, -1, -1).reshape(n * n_planes, m, 3)
    uv = torch.bmm(pts, inv)[..., :2].unsqueeze(1)  # [N*3, 1, M, 2]
    flat = planes.reshape(n * n_planes, c, h, w)
    shift = 1.0 / h
    groups = [
        F.grid_sample(flat[:, 0:3], uv, mode="bilinear", padding_mode="zeros", align_corners=False),
        F.grid_sample(flat[:, 3:6], uv + uv.new_tensor([shift, 0.0]), mode="bilinear", padding_mode="zeros",
                      align_corners=False),
        F.grid_sample(flat[:, 6:9], uv + uv.new_tensor([0.0, shift]), mode="bilinear", padding_mode="zeros",
                      align_corners=False),
    ]
    out = torch.cat(groups, dim=1)  # [N*3, 9, 1, M]
    return out.permute(0, 3, 2, 1).reshape(n, n_planes, m, c).permute(0, 2, 1, 3).reshape(n, m, n_planes * c)


def original_points(planes: torch.Tensor, decoder: torch.nn.Module, points: torch.Tensor,
                    viewdirs: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The original point path: ``planes [B, 27, R, R]``, normalized ``points [B, M, 3]`` -> raw outputs."""
    b, m, _ = points.shape
    feats = original_sample_from_planes(planes.reshape(b, 3, 9, *planes.shape[-2:]), points).reshape(b * m, 27)
    if viewdirs is None:
        return None, decoder(feats, None).reshape(b, m, 1)
    rgb, sigma = decoder(feats, viewdirs.reshape(b * m, 3))
    return rgb.reshape(b, m, 3), sigma.reshape(b, m, 1)


def _einsum_attention_forward(self: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    b, c, height, width = x.shape
    qkv = self.qkv(self.norm(x).reshape(b, c, -1))  # [B, 3C, T]
    heads = self.num_heads
    q, k, v = qkv.reshape(b * heads, 3 * c // heads, -1).split(c // heads, dim=1)
    scale = 1 / math.sqrt(math.sqrt(c // heads))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    return x + self.proj_out(h).reshape(b, c, height, width)


def use_einsum_attention(unet: UNet) -> UNet:
    """Switch every attention block of ``unet`` to the original's einsum attention (in place)."""
    for module in unet.modules():
        if isinstance(module, AttentionBlock):
            module.forward = types.MethodType(_einsum_attention_forward, module)
    return unet


class OriginalFitStep:
    """One original stage-B iteration over ``planes [U, 27, R, R]`` (a dense fp32 parameter).

    ``rays``: a ``RayBatch`` with ``[U, N, ...]`` tensors; ``bounds [U, 2, 3]``.
    """

    def __init__(self, cfg: Config, decoder: torch.nn.Module, planes: torch.Tensor, anomaly: bool) -> None:
        self.cfg = replace(cfg, render=replace(cfg.render, density_noise_std=1.0, metric_intervals=False))
        self.decoder = decoder.float().requires_grad_(False)
        self.planes = torch.nn.Parameter(planes.detach().float().clone())
        self.optimizer = torch.optim.Adam([self.planes], lr=cfg.fit.lr_planes)
        self.anomaly = anomaly

    def _points(self, rays, z: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
        b, n, s = z.shape
        world = rays.origins[..., None, :] + rays.dirs[..., None, :] * z[..., None]
        lo, hi = bounds[:, None, None, 0], bounds[:, None, None, 1]
        return (2 * (world - lo) / (hi - lo) - 1).reshape(b, n * s, 3)

    def step(self, rays, bounds: torch.Tensor) -> torch.Tensor:
        rc = self.cfg.render
        ctx = torch.autograd.detect_anomaly(check_nan=True) if self.anomaly else contextlib.nullcontext()
        with ctx:
            dir_norm = rays.dirs.norm(dim=-1)
            z = stratified_depths(rays.near, rays.far, rc.n_samples, True, None)
            b, n, s = z.shape
            with torch.no_grad():
                _, sigma = original_points(self.planes, self.decoder, self._points(rays, z, bounds), None)
            z_fine = importance_depths(sigma.reshape(b, n, s), z, dir_norm, rc.n_importance, det=False)
            z_all, _ = torch.sort(torch.cat([z, z_fine], dim=-1), dim=-1)
            viewdirs = F.normalize(rays.dirs, dim=-1)[..., None, :].expand(b, n, z_all.shape[-1], 3)
            rgb, sigma = original_points(self.planes, self.decoder, self._points(rays, z_all, bounds),
                                         viewdirs.reshape(b, -1, 3))
            out = composite(rgb.reshape(b, n, -1, 3), sigma.reshape(b, n, -1), z_all, dir_norm, rc,
                            training=True)
            loss = plane_losses(out["rgb"], out["acc"], rays.rgb, rays.fg, self.planes, self.cfg.fit)["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
        self.optimizer.step()
        with torch.no_grad():
            self.planes.clamp_(-1.0, 1.0)
        return loss.detach()


class OriginalTrainStep:
    """One original diffusion optimizer step (D1 reproduced): ``batch`` items in micro-batches of 2."""

    def __init__(self, unet: UNet, alphas_cumprod: torch.Tensor, lr: float = 5e-5, microbatch: int = 2,
                 ema_rate: float = 0.9999) -> None:
        self.unet = use_einsum_attention(unet)
        self.alphas_cumprod = alphas_cumprod
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
        self.scaler = torch.amp.GradScaler("cuda")
        self.microbatch = microbatch
        self.ema = [p.detach().clone() for p in unet.parameters()]
        self.ema_rate = ema_rate

    def step(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        for start in range(0, x0.shape[0], self.microbatch):
            part = slice(start, start + self.microbatch)
            t = torch.randint(0, self.alphas_cumprod.shape[0], (x0[part].shape[0],), device=x0.device)
            noise = torch.randn_like(x0[part])
            x_t = q_sample(x0[part], t, noise, self.alphas_cumprod)
            with torch.autocast("cuda", dtype=torch.float16):
                eps = self.unet(x_t, t, x_cond[part], y[part])
                loss = (eps.float() - noise).square().mean()
            self.scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_value_(self.unet.parameters(), 0.5)
        self.optimizer.step()
        with torch.no_grad():
            for target, p in zip(self.ema, self.unet.parameters(), strict=True):
                target.mul_(self.ema_rate).add_(p, alpha=1 - self.ema_rate)
