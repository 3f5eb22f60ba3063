"""One export spec per network: I/O names and shapes, dynamic dims, sample inputs.

Every format's writer reads the network's spec (``ExportSpec.network_spec``, also recorded in the
manifest), so every engine of a network has the same interface. The graphs exported are
:class:`UNetGraph` (the whole UNet), :class:`UNetPartGraph` (its four parts) and :class:`DecoderGraph`:
network float I/O is float32 whatever the compute dtype (fp16 / bf16 run under autocast inside the
graph), ids are int64; the UNet parts hand activations to each other in the compute dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from humanliff.errors import HumanLiffError
from humanliff.models.unet import UNet
from humanliff.runtime.field import decode_points
from humanliff.runtime.manifest import DTYPE_NAMES, DTYPES, NetworkSpec, TensorSpec

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""``--dtype`` names and the compute dtypes they select."""
MAX_POINTS = 1 << 21
"""Most points per decoder call (the runtime's engine field splits larger calls)."""
MIN_POINTS = 2
"""Fewest points per decoder call (export specializes sizes 0 and 1; the runtime pads smaller calls)."""


def _autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """Autocast to ``dtype`` on ``device`` (off for float32): weights stay float32 in the artifacts."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


AUTOCAST_LOWERED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Modules whose weights autocast casts to the compute dtype on every call (torch's autocast op lists)."""


def with_compute_weights(graph: nn.Module) -> nn.Module:
    """A copy of a spec graph whose convolution and linear weights are stored in its compute ``dtype``.

    Autocast casts exactly these weights to the compute dtype at every call, so the outputs are
    unchanged; the engines skip that cast and their files halve (norms and embeddings stay float32).
    A float32 graph is returned as it is. See ``shared_compute_weights``.
    """
    return shared_compute_weights([graph])[0]


def shared_compute_weights(graphs: Sequence[nn.Module]) -> list[nn.Module]:
    """``with_compute_weights`` of several spec graphs, copied together: a network they share (the UNet of
    its four part graphs) is lowered once and shared by the copies.

    Only the lowered weights are new tensors (made straight in the compute dtype, no float32 copy); the
    other parameters and buffers are shared with the originals, which are left as they were.
    """
    memo: dict[int, Any] = {}
    for graph in graphs:
        if graph.dtype == torch.float32:
            memo[id(graph)] = graph
            continue
        for module in graph.modules():
            lower = isinstance(module, AUTOCAST_LOWERED)
            for p in module.parameters(recurse=False):
                memo.setdefault(id(p), nn.Parameter(p.detach().to(graph.dtype), p.requires_grad) if lower else p)
            for b in module.buffers(recurse=False):
                memo.setdefault(id(b), b)
    return copy.deepcopy(list(graphs), memo)


class UNetGraph(nn.Module):
    """The UNet (with its control branch) as exported: ``(x, timesteps, x_cond, y) -> eps``, float32 I/O."""

    def __init__(self, unet: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.unet = unet.eval()
        self.dtype = dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor
                ) -> torch.Tensor:
        """``x, x_cond [B, 27, R, R]`` float32, ``timesteps, y [B]`` int64 -> eps ``[B, 27, R, R]``."""
        with _autocast(x.device, self.dtype):
            return self.unet(x, timesteps, x_cond, y).float()


UNET_PARTS = ("embed", "encode_control", "encode", "decode")
"""The UNet's parts in call order (the control encoder before the main one: it goes to the side stream)."""
PART_IO = {"embed": (("timesteps", "y"), "emb"), "encode": (("x", "emb"), "h"),
           "encode_control": (("x", "x_cond", "emb"), "c")}
"""Per part before ``decode``: its inputs and its output's name (a prefix for the per-block lists)."""


class UNetPartGraph(nn.Module):
    """One UNet part as exported: flat tensors in, a tensor or a tuple of tensors out, under autocast.

    ``decode`` takes ``emb, h0..hN, c0..cN``; the encoders return one tensor per input block. Outputs
    keep the compute dtype (the parts hand bf16 activations to each other); ``eps`` is float32.
    """

    def __init__(self, unet: UNet, part: str, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.unet = unet.eval()
        self.part = part
        self.dtype = dtype
        self.blocks = len(unet.input_blocks)

    def forward(self, *flat: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        with _autocast(flat[0].device, self.dtype):
            if self.part == "decode":
                n = self.blocks
                return self.unet.decode(list(flat[1:1 + n]), list(flat[1 + n:]), flat[0]).float()
            out = getattr(self.unet, self.part)(*flat)
        return tuple(out) if isinstance(out, list) else out


class DecoderGraph(nn.Module):
    """Tri-plane feature sampling plus the decoder in one graph: ``(planes, points, viewdirs) -> raw``."""

    def __init__(self, decoder: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.decoder = decoder.eval()
        self.dtype = dtype

    def forward(self, planes: torch.Tensor, points: torch.Tensor, viewdirs: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``planes [B, 27, R, R]``, ``points [B, M, 3]`` in [-1, 1], ``viewdirs [B, M, 3]`` unit ->
        ``(rgb_raw [B, M, 3], sigma_raw [B, M, 1])`` float32, before sigmoid / softplus."""
        with _autocast(planes.device, self.dtype):
            rgb, sigma = decode_points(planes, self.decoder, points, viewdirs)
        return rgb, sigma


@dataclass(frozen=True)
class ExportSpec:
    """How one network is exported: tensors, dynamic dims ``{symbol: (min, max)}``, sample-input kinds."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: Mapping[str, tuple[int, int]]
    kinds: Mapping[str, str]
    """Per input: ``normal``, ``uniform`` (in [-1.1, 1.1]), ``unit`` (unit vectors) or ``int:<high>``."""
    auto_dims: frozenset[str] = frozenset()
    """Symbols traced as ``Dim.AUTO`` (export infers their range; ``dims`` is enforced at run time): for
    dims whose named ``Dim`` trips an unprovable guard, as the decoder's point count does on CUDA."""
    varargs: bool = False
    """The graph's forward takes ``*flat`` tensors (the UNet parts) rather than named arguments."""

    def check_dims(self, sizes: Mapping[str, int]) -> None:
        """Raise when a symbol's size lies outside its exported range."""
        for name, size in sizes.items():
            low, high = self.dims[name]
            if not low <= size <= high:
                raise HumanLiffError(f"{self.name}: {name} = {size} is outside the supported range "
                                     f"[{low}, {high}]")

    def sample_inputs(self, sizes: Mapping[str, int], generator: torch.Generator | None = None,
                      device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Random inputs of the given symbol sizes (``{"batch": 2, "points": 64}``), on ``device``."""
        self.check_dims(sizes)
        feeds = {}
        for spec in self.inputs:
            shape, kind = spec.resolve(sizes), self.kinds[spec.name]
            if kind.startswith("int:"):
                value = torch.randint(0, int(kind[4:]), shape, generator=generator)
            elif kind == "uniform":
                value = torch.rand(shape, generator=generator) * 2.2 - 1.1
            elif kind == "unit":
                value = F.normalize(torch.randn(shape, generator=generator), dim=-1)
            else:
                value = torch.randn(shape, generator=generator)
            feeds[spec.name] = value.to(device, DTYPES[spec.dtype])
        return feeds

    def dynamic_shapes(self) -> tuple[Any, ...]:
        """``torch.export`` dynamic shapes in input order, one shared ``Dim`` per symbol; a symbol whose range
        is one size (a static batch) is traced static."""
        dims = {name: torch.export.Dim.AUTO if name in self.auto_dims else torch.export.Dim(name, min=low, max=high)
                for name, (low, high) in self.dims.items() if low < high or name in self.auto_dims}
        shapes = tuple({i: dims[d] for i, d in enumerate(s.shape) if d in dims} or None for s in self.inputs)
        return (shapes,) if self.varargs else shapes

    def network_spec(self, opt: Mapping[str, int]) -> NetworkSpec:
        """The manifest's record of this interface, with ``opt`` as each symbol's optimal size."""
        ranges = {k: (lo, opt[k], hi) for k, (lo, hi) in self.dims.items()}
        return NetworkSpec(self.inputs, self.outputs, ranges)


def unet_spec(resolution: int, channels: int, layers: int, timesteps: int, max_batch: int,
              min_batch: int = 1) -> ExportSpec:
    """The UNet's spec: ``x, timesteps, x_cond, y -> eps`` with a batch in ``[min_batch, max_batch]`` (static
    when the two are equal)."""
    plane = ("batch", channels, resolution, resolution)
    return ExportSpec(
        name="unet",
        inputs=(TensorSpec("x", plane), TensorSpec("timesteps", ("batch",), "int64"),
                TensorSpec("x_cond", plane), TensorSpec("y", ("batch",), "int64")),
        outputs=(TensorSpec("eps", plane),),
        dims={"batch": (min_batch, max_batch)},
        kinds={"x": "normal", "timesteps": f"int:{timesteps}", "x_cond": "normal", "y": f"int:{layers}"},
    )


def decoder_spec(resolution: int, channels: int, max_batch: int) -> ExportSpec:
    """The decoder graph's spec: ``planes, points, viewdirs -> rgb_raw, sigma_raw``; dynamic batch, points."""
    points = ("batch", "points", 3)
    return ExportSpec(
        name="decoder",
        inputs=(TensorSpec("planes", ("batch", channels, resolution, resolution)),
                TensorSpec("points", points), TensorSpec("viewdirs", points)),
        outputs=(TensorSpec("rgb_raw", points), TensorSpec("sigma_raw", ("batch", "points", 1))),
        dims={"batch": (1, max_batch), "points": (MIN_POINTS, MAX_POINTS)},
        kinds={"planes": "normal", "points": "uniform", "viewdirs": "unit"},
        auto_dims=frozenset({"points"}),
    )


def unet_part_specs(unet: UNet, resolution: int, channels: int, layers: int, timesteps: int, max_batch: int,
                    dtype: torch.dtype, min_batch: int = 1) -> list[tuple[UNetPartGraph, ExportSpec]]:
    """The four part graphs and their specs, in call order (``UNET_PARTS``).

    ``embed`` gives ``emb``, the encoders ``h0..hN`` and ``c0..cN``; their channels, sizes and dtypes are
    read off one evaluation at ``min_batch`` (the batch, in ``[min_batch, max_batch]``, is the only dynamic dim).
    """
    whole = unet_spec(resolution, channels, layers, timesteps, max_batch, min_batch)
    device = next(unet.parameters()).device
    values = whole.sample_inputs({"batch": min_batch}, torch.Generator().manual_seed(0), device)
    known = {s.name: s for s in whole.inputs}
    kinds = dict(whole.kinds)
    blocks = len(unet.input_blocks)
    io = {**PART_IO, "decode": (("emb", *(f"h{i}" for i in range(blocks)), *(f"c{i}" for i in range(blocks))),
                                whole.outputs[0].name)}
    out = []
    for part in UNET_PARTS:
        graph = UNetPartGraph(unet, part, dtype)
        names, label = io[part]
        with torch.inference_mode():
            result = graph(*(values[n] for n in names))
        tensors = result if isinstance(result, tuple) else (result,)
        labels = [f"{label}{i}" for i in range(len(tensors))] if isinstance(result, tuple) else [label]
        outputs = tuple(TensorSpec(n, ("batch", *t.shape[1:]), DTYPE_NAMES[t.dtype])
                        for n, t in zip(labels, tensors, strict=True))
        values.update(zip(labels, tensors, strict=True))
        known.update({s.name: s for s in outputs})
        kinds.update({s.name: "normal" for s in outputs})
        out.append((graph, ExportSpec(name=f"unet.{part}", inputs=tuple(known[n] for n in names), outputs=outputs,
                                      dims=whole.dims, kinds={n: kinds[n] for n in names},
                                      varargs=True)))
    return out
