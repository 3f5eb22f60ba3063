"""Fast inference of the torch UNet: eval mode, channels_last, bf16 autocast, torch.compile + CUDA graphs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from humanliff.models.unet import UNet
from humanliff.runtime.compute import autocast_context
from humanliff.runtime.cuda_graph import capture_cuda_graph

UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Shapes = tuple[torch.Size, ...]


class TwoStreamGraphs:
    """The compiled UNet replayed as one CUDA graph per input shape, the control branch on a second stream.

    ``UNet.encode`` and ``UNet.encode_control`` only share the embedding, so the graph runs them side by
    side (their small deep-level kernels leave most of the GPU idle one at a time); ``decode`` joins them.
    Call with ``x [B, C, R, R]``, ``t [B]``, ``x_cond [B, C, R, R]``, ``y [B]``; returns the graph's static
    output (overwritten by the next call with the same shapes).
    """

    def __init__(self, unet: UNet, device: torch.device) -> None:
        compile_ = partial(torch.compile, fullgraph=True, dynamic=False)
        self.embed = compile_(unet.embed)
        self.encode = compile_(unet.encode)
        self.encode_control = compile_(unet.encode_control)
        self.decode = compile_(unet.decode)
        self.device = device
        self.side = torch.cuda.Stream(device)
        self.graphs: dict[Shapes, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def forward(self, x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One evaluation with the two encoders on two streams (capturable; no host syncs)."""
        main = torch.cuda.current_stream(self.device)
        emb = self.embed(t, y)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            emb.record_stream(self.side)
            hs_cond = self.encode_control(x, x_cond, emb)
            for h in hs_cond:
                h.record_stream(main)
        hs = self.encode(x, emb)
        main.wait_stream(self.side)
        return self.decode(hs, hs_cond, emb)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feeds = (x, t, x_cond, y)
        shapes = tuple(v.shape for v in feeds)
        if shapes not in self.graphs:
            static = [v.clone() for v in feeds]
            graph, out = capture_cuda_graph(lambda: self.forward(*static), self.device)
            self.graphs[shapes] = graph, static, out
        graph, static, out = self.graphs[shapes]
        for buffer, value in zip(static, feeds, strict=True):
            buffer.copy_(value)
        graph.replay()
        return out


def inference_unet(unet: UNet, *, precision: str = "bf16", compile: bool = False) -> UNetFn:
    """``unet_fn(x, t, x_cond, y) -> eps`` (float32, a fresh tensor each call) for sampling.

    ``precision='bf16'`` runs under bf16 autocast (GroupNorm statistics stay fp32); ``compile=True``
    compiles the UNet with its weights frozen into the graph as constants and, on CUDA, replays it as
    CUDA graphs (``TwoStreamGraphs``: one per batch shape, so keep the batch fixed).
    """
    unet = unet.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    device = next(unet.parameters()).device
    if compile and device.type == "cuda":
        net: Callable[..., torch.Tensor] = TwoStreamGraphs(unet, device)
    else:
        net = torch.compile(unet, fullgraph=True, dynamic=False) if compile else unet

    def unet_fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x_cond = x_cond.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast_context(device, precision), torch._inductor.config.patch(freezing=compile):
            eps = net(x, t, x_cond, y)
        return eps.float().clone() if eps.dtype == torch.float32 else eps.float()

    return unet_fn
