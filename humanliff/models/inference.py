"""Fast inference of the torch UNet: eval mode, channels_last, bf16 autocast, torch.compile + CUDA graphs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from humanliff.models.unet import UNet
from humanliff.runtime.field import autocast_context

UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def inference_unet(unet: UNet, *, precision: str = "bf16", compile: bool = False,
                   mode: str = "reduce-overhead") -> UNetFn:
    """``unet_fn(x, t, x_cond, y) -> eps`` (float32, a fresh tensor each call) for sampling.

    ``precision='bf16'`` runs under bf16 autocast (GroupNorm statistics stay fp32); ``compile=True``
    compiles the whole UNet as one graph (``mode='reduce-overhead'`` replays it as a CUDA graph, so the
    batch shape should stay fixed) with weights frozen into the graph as constants.
    """
    unet = unet.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    device = next(unet.parameters()).device
    net = torch.compile(unet, mode=mode, fullgraph=True, dynamic=False) if compile else unet

    def unet_fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x_cond = x_cond.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast_context(device, precision), torch._inductor.config.patch(freezing=compile):
            eps = net(x, t, x_cond, y)
        return eps.float().clone() if eps.dtype == torch.float32 else eps.float()

    return unet_fn
