"""The fused kernels' plane layout: tri-planes ``[B, 27, R, R]`` as channels-last ``[B, 9, R, R, 4]``.

9 = plane*3 + group; the 3 channels of a group are padded to 4, so one bilinear tap of a group is one
8-byte load (bf16) and one vector atomic in the backward (fp32).
"""

from __future__ import annotations

import torch

from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.triplane import CHANNELS, GROUP_CHANNELS, N_GROUPS, N_PLANES

TAP_CHANNELS = 4
"""Channels of one texel of a prepared plane (the group's 3 channels plus one zero)."""
PLANE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def check_planes(planes: torch.Tensor) -> None:
    """Raise unless ``planes`` is ``[B, 27, R, R]``."""
    if planes.dim() != 4 or planes.shape[1] != CHANNELS or planes.shape[2] != planes.shape[3]:
        raise HumanLiffError(f"fused field: planes must be [B, {CHANNELS}, R, R], got {tuple(planes.shape)}")


def prepared_shape(planes: torch.Tensor) -> tuple[int, ...]:
    """``[B, 9, R, R, 4]``: the shape ``prepare_planes(planes)`` has."""
    return (planes.shape[0], N_PLANES * N_GROUPS, planes.shape[2], planes.shape[3], TAP_CHANNELS)


def prepare_planes(planes: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Tri-planes ``[B, 27, R, R]`` to the fused layout ``[B, 9, R, R, 4]`` (channels last, ``dtype``).

    Index ``[b, plane*3 + group, y, x, c]`` holds channel ``plane*9 + group*3 + c``; ``c = 3`` is zero.
    Detached: gradients reach ``planes`` through ``fused_decode``, not through this copy.
    """
    check_planes(planes)
    if dtype not in PLANE_DTYPES:
        raise HumanLiffError(f"fused field: plane dtype {dtype} is not one of {PLANE_DTYPES}")
    b, _, r, _ = planes.shape
    groups = planes.detach().reshape(b, N_PLANES * N_GROUPS, GROUP_CHANNELS, r, r).permute(0, 1, 3, 4, 2)
    out = planes.new_zeros(prepared_shape(planes), dtype=dtype)
    out[..., :GROUP_CHANNELS] = groups
    return out


def plane_grad_to_nchw(grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 ``[B, 9, R, R, 4]`` gradient to ``[B, 27, R, R]`` in ``dtype``."""
    b, _, r, _, _ = grad.shape
    return grad[..., :GROUP_CHANNELS].permute(0, 1, 4, 2, 3).reshape(b, CHANNELS, r, r).to(dtype)
