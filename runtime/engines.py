"""Loading engines: the best format of a network that runs here, and CUDA-graph replay of a fixed call.

``load_engine`` walks the format registry's preference order (``humanliff.runtime.formats``) and
returns the first engine that loads on the device; ``graphed`` replays a fixed-shape call under a CUDA
graph. The UNet, whole or in parts, is loaded by :mod:`humanliff.runtime.unet_engine` on top of these.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.cuda_graph import capture_cuda_graph
from humanliff.runtime.errors import HumanLiffError, InputFileError
from humanliff.runtime.formats import FORMATS, PREFERENCE, Engine, EngineUnavailable
from humanliff.runtime.manifest import MANIFEST_NAME, network_spec, read_manifest, usable_formats
from humanliff.runtime.verified_files import verified_files

log = logging.getLogger(__name__)

_LOADING = threading.Lock()
"""Engines are loaded one at a time (their loaders are not known to be thread-safe); when networks are loaded
from several threads (``humanliff.runtime.unet_engine.load_unet``) only their files' sha256 checks overlap."""

EngineCall = Callable[..., dict[str, torch.Tensor]]
"""``call(**feeds) -> {output name: tensor}``: an engine, a set of UNet part engines, or their graph."""


def load_engine(artifacts_dir: str | Path, network: str, prefer: Sequence[str] = PREFERENCE,
                device: str | torch.device = "cpu", manifest: Mapping[str, Any] | None = None, *,
                compile: bool = False) -> Engine:
    """Load the first of ``prefer``'s formats that ``network`` has and that runs here.

    ``compile`` lets a torch-run format (``ep``) compile its program on CUDA (first call slower).

    Formats whose package, device or loader is missing, that were exported for another device type, or
    whose file is missing, altered or does not load are skipped (logged, the file named); a folder where
    no format loads is a one-line error listing each format's reason.
    """
    artifacts_dir = Path(artifacts_dir)
    manifest = manifest if manifest is not None else read_manifest(artifacts_dir)
    source = artifacts_dir / MANIFEST_NAME
    if network not in manifest["networks"]:
        raise InputFileError(source, f"no network '{network}' (has {', '.join(manifest['networks'])})")
    unknown = [f for f in prefer if f not in FORMATS]
    if unknown:
        raise HumanLiffError(f"unknown engine format(s) {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    device = torch.device(device)
    spec = network_spec(manifest, network)
    artifacts = manifest["networks"][network]["artifacts"]
    usable = usable_formats(manifest, network)
    skipped = []
    for name in prefer:
        fmt = FORMATS[name]
        if name not in usable:
            skipped.append(f"{name}: {artifacts[name]['status']}" if name in artifacts else f"{name}: absent")
            continue
        built_for = artifacts[name].get("device", device.type)
        if not fmt.portable and built_for != device.type:
            skipped.append(f"{name}: built for {built_for}")
            continue
        try:
            paths = verified_files(artifacts_dir, artifacts[name])
            with _LOADING:
                engine = fmt.engine(paths[0], spec, device, artifacts[name], compile=compile).load()
        except EngineUnavailable as exc:
            log.info("%s: %s engine skipped: %s", network, name, exc)
            skipped.append(f"{name}: {exc}")
            continue
        except InputFileError as exc:  # a missing, altered or unloadable file: say so, try the next format
            log.warning("%s: %s engine skipped: %s", network, name, exc)
            skipped.append(f"{name}: {exc}")
            continue
        log.info("%s: %s engine (%s)", network, name, paths[0].name)
        return engine
    raise InputFileError(source, f"no engine for '{network}' runs on {device} "
                                 f"({'; '.join(skipped)})")


class GraphedCall:
    """Replays a CUDA graph of one call for fixed input shapes (captured at construction).

    Calls with other shapes fall through to the call itself. Outputs are cloned out of the static buffers.
    """

    def __init__(self, call: EngineCall, feeds: Mapping[str, torch.Tensor], device: torch.device,
                 warmup: int = 2) -> None:
        self.call = call
        self.static = {k: v.to(device).clone() for k, v in feeds.items()}
        self.graph, self.outputs = capture_cuda_graph(lambda: call(**self.static), device, warmup)

    def __call__(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        if any(feeds[k].shape != v.shape for k, v in self.static.items()):
            return self.call(**feeds)
        for k, v in self.static.items():
            v.copy_(feeds[k])
        self.graph.replay()
        return {k: v.clone() for k, v in self.outputs.items()}


def graphed(call: EngineCall, feeds: Mapping[str, torch.Tensor], device: torch.device, graphable: bool
            ) -> EngineCall:
    """A CUDA-graph replay of ``call`` for the shapes of ``feeds`` where possible, else ``call`` itself.

    Only on CUDA and for graph-capturable engines (``Format.graphable``); a failed capture logs one
    warning. ``feeds`` carry the engine's input dtypes.
    """
    if device.type != "cuda" or not graphable:
        return call
    try:
        return GraphedCall(call, feeds, device)
    except Exception as exc:
        log.warning("CUDA graph capture failed (%s); running the engines eagerly", str(exc).splitlines()[0][:200])
        torch.cuda.synchronize(device)
        return call
