"""A radiance field from tri-planes plus a decoder callable: the object the renderer samples.

``field(points [B, M, 3] normalized to [-1, 1], viewdirs [B, M, 3] unit or None)`` returns
``(rgb_raw [B, M, 3] or None, sigma_raw [B, M, 1])`` in float32, before sigmoid / softplus.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from humanliff.runtime.compute import autocast_context
from humanliff.runtime.triplane import sample_features

Field = Callable[[torch.Tensor, "torch.Tensor | None"], "tuple[torch.Tensor | None, torch.Tensor]"]
"""``field(points [B,M,3], viewdirs [B,M,3] | None) -> (rgb_raw [B,M,3] | None, sigma_raw [B,M,1])``."""

Decoder = Callable[..., "tuple[torch.Tensor, torch.Tensor] | torch.Tensor"]
"""``decoder(features [N,27], viewdirs [N,3] | None) -> (rgb_raw, sigma_raw)``, or ``sigma_raw`` alone."""

def decode_points(
    planes: torch.Tensor, decoder: Decoder, points: torch.Tensor, viewdirs: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Sample features and decode points ``[B, M, 3]``.

    Returns ``(rgb_raw [B, M, 3] or None, sigma_raw [B, M, 1])`` in float32.
    """
    b, m, _ = points.shape
    feats = sample_features(planes, points).reshape(b * m, -1)
    if viewdirs is None:
        out = decoder(feats, None)
        rgb, sigma = (out if isinstance(out, tuple) else (None, out))
    else:
        rgb, sigma = decoder(feats, viewdirs.reshape(b * m, 3))
    sigma = sigma.float().reshape(b, m, 1)
    return (None if rgb is None else rgb.float().reshape(b, m, 3)), sigma


def make_field(planes: torch.Tensor, decoder: Decoder, *, precision: str = "fp32",
               compile: bool = False, fused: bool = True, require_fused: bool = False) -> Field:
    """The field of tri-planes ``[B, 27, R, R]`` decoded by ``decoder``.

    ``precision='bf16'`` runs plane sampling and the MLP under bf16 autocast (outputs stay float32);
    ``compile=True`` runs them as one ``torch.compile``d graph (dynamic point count). Gradients flow to
    ``planes`` (and the decoder's parameters) in every mode.

    ``fused`` (``render.fused_kernel``) uses the fused Triton kernel of ``runtime.fused_field`` (bf16;
    gradients to ``planes`` and the decoder's parameters, none to points; neither planes nor decoder may
    change in place meanwhile) for ``precision='bf16'`` where ``fused_field.field_weights`` accepts the
    decoder (CUDA, a FusedDecoder, frozen or trainable); False never uses it. ``require_fused`` uses it
    whatever the precision and device (the kernel's tests and benchmarks).
    """
    from humanliff.runtime import fused_field  # Triton's import (0.4 s) only when a field is made here

    if fused and not require_fused:
        weights = fused_field.field_weights(decoder, planes.device) if precision == "bf16" else None
        if weights is not None:
            return fused_field.make_fused_field(planes, weights)
    elif require_fused:
        trainable = fused_field.is_trainable(decoder)
        weights = fused_field.decoder_weights(decoder, trainable=trainable).to(planes.device)
        return fused_field.make_fused_field(planes, weights)
    core = torch.compile(decode_points, dynamic=True) if compile else decode_points

    def field(points: torch.Tensor,
              viewdirs: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        points = points.contiguous()  # fixed strides: no recompiles of the compiled core
        viewdirs = None if viewdirs is None else viewdirs.contiguous()
        with autocast_context(planes.device, precision):
            return core(planes, decoder, points, viewdirs)

    return field
