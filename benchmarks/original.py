"""Faithful fp32 eager re-creations of the original HumanLiff hot paths, the baselines of the benchmark.

Each is checked against the golden outputs of the original code (tests/test_benchmark_baselines.py):
- ``original_sample_from_planes``: the original's EG3D-style projection through inverted plane
  matrices and three ``grid_sample`` calls (one per shifted group) over a ``[B*3, 9, R, R]`` batch;
- ``use_einsum_attention``: the original's legacy attention (per-head interleaved qkv, 1/sqrt(sqrt(d))
  on q and k, einsum, softmax in fp32) swapped into our UNet, which otherwise matches it key for key.
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F

from humanliff.models.unet import AttentionBlock, UNet

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
