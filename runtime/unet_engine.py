"""The UNet from its engines: the whole graph, or its four parts with the control encoder on a second stream.

``load_unet`` loads every UNet network the manifest lists (``manifest["unet"]``, see
:mod:`humanliff.runtime.manifest`) and returns a :class:`UNetEngines`, called as ``unet(x=, timesteps=,
x_cond=, y=) -> {"eps": ...}`` like a single engine. Parts are run in the manifest's order, each on
the tensors named by its inputs; a part listed in ``side_stream`` runs on a second CUDA stream, so the
control encoder overlaps the main encoder as in ``humanliff generate``, and the whole call can be
captured into one CUDA graph (``graphed``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.engines import load_engine
from humanliff.runtime.formats import FORMATS, PREFERENCE, Engine
from humanliff.runtime.manifest import UNET_OUTPUT, unet_layout


class UNetEngines:
    """The UNet's engines in call order; ``side_stream`` names the ones run on a second CUDA stream."""

    def __init__(self, engines: Mapping[str, Engine], side_stream: Sequence[str], device: torch.device) -> None:
        self.engines = dict(engines)
        self.device = device
        on_cuda = device.type == "cuda" and len(self.engines) > 1
        self.side = {n for n in side_stream if n in self.engines} if on_cuda else set()
        self.stream = torch.cuda.Stream(device) if self.side else None
        formats = sorted({e.format for e in self.engines.values()})
        self.format = "+".join(formats)
        self.graphable = all(FORMATS[f].graphable for f in formats)
        self.compiled = any(e.compiled for e in self.engines.values())

    @property
    def batch_range(self) -> tuple[int, int]:
        """The batches every engine takes: ``(min, max)`` humans a call (equal for a static batch)."""
        ranges = [e.spec.dims["batch"] for e in self.engines.values()]
        return max(int(r[0]) for r in ranges), min(int(r[-1]) for r in ranges)

    def __call__(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x, x_cond [B, 27, R, R]``, ``timesteps, y [B]`` -> ``{"eps": [B, 27, R, R]}`` (float32)."""
        values: dict[str, torch.Tensor] = dict(feeds)
        from_side: set[str] = set()
        main = torch.cuda.current_stream(self.device) if self.stream is not None else None
        for name, engine in self.engines.items():
            needs = {s.name: values[s.name] for s in engine.spec.inputs}
            if name in self.side:
                self.stream.wait_stream(main)
                with torch.cuda.stream(self.stream):
                    for tensor in needs.values():
                        tensor.record_stream(self.stream)
                    outs = engine(**needs)
                    for tensor in outs.values():
                        tensor.record_stream(main)
                from_side.update(outs)
            else:
                if from_side & needs.keys():
                    main.wait_stream(self.stream)
                    from_side.clear()
                outs = engine(**needs)
            values.update(outs)
        return {UNET_OUTPUT: values[UNET_OUTPUT]}

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


def load_unet(artifacts_dir: str | Path, manifest: Mapping[str, Any], prefer: Sequence[str] = PREFERENCE,
              device: str | torch.device = "cpu", *, compile: bool = False) -> UNetEngines:
    """Load the UNet's networks (each the first of ``prefer`` that runs here) as one callable.

    One thread per network: the sha256 checks of their files (about 1 GB at the original size) run side by
    side and beside the loading, which stays one network at a time (``load_engine``); a failure is raised
    for the first network in the manifest's order that fails.
    """
    device = torch.device(device)
    layout = unet_layout(manifest)
    names = list(layout["networks"])

    def load(name: str) -> Engine:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            return load_engine(artifacts_dir, name, prefer, device, manifest, compile=compile)

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="load-unet") as pool:
        futures = [pool.submit(load, name) for name in names]
        engines = {name: future.result() for name, future in zip(names, futures, strict=True)}
    return UNetEngines(engines, layout.get("side_stream", []), device)
