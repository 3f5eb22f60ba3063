"""CUDA graph capture: warm a call up on a side stream, then record it once for replay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def capture_cuda_graph(fn: Callable[[], T], device: torch.device, warmup: int = 2,
                       generators: Sequence[torch.Generator] = ()) -> tuple[torch.cuda.CUDAGraph, T]:
    """Run ``fn()`` ``warmup`` times on a side stream (compiles, cuDNN plans), then capture one call.

    Returns the graph and the call's outputs: static tensors that each ``graph.replay()`` rewrites. ``fn``
    reads its inputs from tensors the caller keeps and refills before a replay. ``generators``: CUDA
    generators other than the default that ``fn`` draws from; registered with the graph, so that every
    replay draws new numbers from them (the default generator is registered by torch itself).
    """
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs
