"""One optimizer step as a CUDA graph: run eagerly once, captured on the second call, replayed after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from humanliff.runtime.cuda_graph import capture_cuda_graph

Update = Callable[..., Sequence[torch.Tensor]]
CaptureContext = Callable[[], contextlib.AbstractContextManager[None]]


class GraphedUpdate:
    """Replays ``update(*inputs) -> outputs`` (device tensors in and out) as one captured CUDA graph.

    The first call runs ``update`` eagerly on a side stream (a real step: it compiles, plans cuDNN and
    creates the optimizer's state), the second captures it and replays the capture, and later calls only
    copy their inputs into the static buffers and replay. ``update`` must do device work only (no host
    sync, no Python value that changes between steps: pass a device tensor instead) and keep the
    shapes, dtypes and layouts of its inputs; the capture runs inside ``capture_context()``. ``generators``:
    the CUDA generators (besides the default one) that ``update`` draws from.
    Returns fresh copies of the outputs (the graph rewrites its own on every replay).
    """

    def __init__(self, update: Update, device: torch.device,
                 capture_context: CaptureContext = contextlib.nullcontext,
                 generators: Sequence[torch.Generator] = ()) -> None:
        self.update, self.device, self.capture_context = update, device, capture_context
        self.generators = tuple(generators)
        self.static: list[torch.Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Sequence[torch.Tensor] = ()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        main = torch.cuda.current_stream(self.device)
        if self.static is None:
            self.static = [x.clone() for x in inputs]  # clone keeps the strides (channels_last stays)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                outputs = self.update(*self.static)
            main.wait_stream(side)
            return tuple(o.clone() for o in outputs)
        for buffer, x in zip(self.static, inputs, strict=True):
            buffer.copy_(x)
        if self.graph is None:
            torch.cuda.empty_cache()  # the eager step's cached blocks, or the graph's pool would double them
            static = self.static
            with self.capture_context():
                self.graph, self.outputs = capture_cuda_graph(lambda: self.update(*static), self.device,
                                                              warmup=0, generators=self.generators)
        self.graph.replay()
        return tuple(o.clone() for o in self.outputs)


@contextlib.contextmanager
def tensor_lr(optimizer: torch.optim.Optimizer, lr: torch.Tensor) -> Iterator[None]:
    """While capturing a step: the (fused) optimizer is capturable and reads its learning rate from the
    device scalar ``lr`` (refilled before every replay) instead of a float frozen into the graph; outside
    the capture (and in the state dict) its param groups are as they were."""
    kept = [(group["lr"], group["capturable"]) for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"], group["capturable"] = lr, True
    try:
        yield
    finally:
        for group, (rate, capturable) in zip(optimizer.param_groups, kept, strict=True):
            group["lr"], group["capturable"] = rate, capturable
