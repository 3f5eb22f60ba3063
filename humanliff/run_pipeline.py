"""The ``run`` pipeline: the models of ``humanliff.Pipeline`` from an artifacts folder's engines.

It lives beside the library rather than in ``humanliff.runtime`` because the pipeline around it writes
pictures and meshes through ``humanliff.outputs``; it imports only the runtime and the config, never the
model or training code. It loads the best UNet and decoder engines present (``load_engine``, ``load_unet``);
the pipeline samples the layers with the runtime's samplers (``sample_layers``, as for the torch models) and
decodes through the decoder engine wrapped as a field. On CUDA each group size's fixed-shape UNet call is
replayed as a CUDA graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from humanliff.config import Config, validate
from humanliff.runtime.compute import default_device
from humanliff.runtime.engines import graphed, load_engine
from humanliff.runtime.field import Field
from humanliff.runtime.formats import PREFERENCE, Engine
from humanliff.runtime.layered import UNetFn
from humanliff.runtime.manifest import MANIFEST_NAME, read_manifest
from humanliff.runtime.schedule import DistilledSchedule, linear_schedule, read_distilled
from humanliff.runtime.unet_engine import UNetEngines, load_unet

log = logging.getLogger(__name__)


@dataclass
class EngineModels:
    """An artifacts folder, loaded: its manifest, the engines and the noise schedule (on ``device``); the
    ``humanliff.pipeline.Models`` of ``run``."""

    folder: Path
    manifest: dict[str, Any]
    unet: UNetEngines
    decoder: Engine
    alphas_cumprod: torch.Tensor
    device: torch.device
    schedule: DistilledSchedule | None = None
    """A distilled student's schedule (the manifest's ``distilled``), None for a diffusion model."""
    graphs: dict[int, UNetFn] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.manifest["triplane"]["channels"])

    @property
    def resolution(self) -> int:
        return int(self.manifest["triplane"]["resolution"])

    @property
    def bounds(self) -> torch.Tensor:
        return torch.tensor(self.manifest["bounds"], dtype=torch.float32)

    @property
    def group(self) -> int:
        """Humans per UNet call: the batch the engines were exported for."""
        return int(self.manifest["batch"])

    @property
    def inputs(self) -> tuple[Path, ...]:
        return (self.folder,)

    @property
    def engines(self) -> dict[str, str]:
        return {"unet": self.unet.format, "decoder": self.decoder.format}

    def unet_for(self, humans: int) -> UNetFn:
        """The UNet for groups of ``humans``: on CUDA its call captured once as a CUDA graph per size; a
        group smaller than a static-batch engine's batch is padded to it (``padded_unet_fn``)."""
        size = max(humans, self.unet.batch_range[0])
        if size not in self.graphs:
            if self.unet.compiled:
                log.info("compiling the UNet engine for batch %d and capturing its CUDA graph (about 1-2 min "
                         "at the original size; Inductor's cache shortens later runs)", size)
            shape = (size, self.channels, self.resolution, self.resolution)
            example = {"x": torch.zeros(shape), "timesteps": torch.zeros(size, dtype=torch.int64),
                       "x_cond": torch.zeros(shape), "y": torch.zeros(size, dtype=torch.int64)}
            self.graphs[size] = engine_unet_fn(graphed(self.unet, example, self.device, self.unet.graphable))
        return self.graphs[size] if size == humans else padded_unet_fn(self.graphs[size], size)

    def field(self, planes: torch.Tensor) -> Field:
        return engine_field(self.decoder, planes)

    def close(self) -> None:
        self.unet.close()
        self.decoder.close()


def load_artifacts(artifacts_dir: str | Path, device: str | torch.device | None = None,
                   prefer: Sequence[str] = PREFERENCE, compile: bool = False) -> EngineModels:
    """Read the manifest and load the best engine of each network on ``device`` (default CUDA if present).

    ``compile``: torch-run engines (``ep``) compile their programs on CUDA (see ``load_engine``); the
    other formats load compiled engines and never compile.
    """
    folder = Path(artifacts_dir)
    device = default_device(device)
    manifest = read_manifest(folder)
    unet = load_unet(folder, manifest, prefer, device, compile=compile)
    decoder = load_engine(folder, "decoder", prefer, device, manifest, compile=compile)
    d = manifest["diffusion"]
    abar = linear_schedule(d["steps"], d["beta_start"], d["beta_end"]).to(device)
    return EngineModels(folder, manifest, unet, decoder, abar, device, manifest_schedule(folder, manifest))


def manifest_schedule(folder: Path, manifest: Mapping[str, Any]) -> DistilledSchedule | None:
    """The distilled student's schedule recorded in a manifest (None for a diffusion model)."""
    return read_distilled(manifest.get("distilled"), folder / MANIFEST_NAME, int(manifest["diffusion"]["steps"]))


def engine_unet_fn(unet: Callable[..., Mapping[str, torch.Tensor]]) -> UNetFn:
    """``unet_fn(x, t, x_cond, y) -> eps`` over a UNet engine (or its CUDA-graph replay)."""

    def unet_fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return unet(x=x, timesteps=t, x_cond=x_cond, y=y)["eps"]

    return unet_fn


def padded_unet_fn(unet_fn: UNetFn, batch: int) -> UNetFn:
    """``unet_fn`` (a UNet of exactly ``batch`` humans a call) for fewer: each input is padded with copies of
    its first human and the padding's outputs are dropped (the call costs the full batch)."""

    def pad(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v, v[:1].expand(batch - v.shape[0], *v.shape[1:])])

    def fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return unet_fn(pad(x), pad(t), pad(x_cond), pad(y))[:x.shape[0]]

    return fn


def engine_field(decoder: Engine, planes: torch.Tensor) -> Field:
    """The field of tri-planes ``[1 or B, 27, R, R]`` through a decoder engine (see ``runtime.field``).

    Calls above the engine's point range are split; for density-only calls (``viewdirs`` None) zero
    directions are fed and the colour dropped.
    """
    min_points, _, max_points = (int(d) for d in decoder.spec.dims["points"])

    def call(p: torch.Tensor, points: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = points.shape[1]
        if m < min_points:  # pad with copies of the first point; the padding's outputs are dropped
            pad = (0, 0, 0, min_points - m)
            points, dirs = F.pad(points, pad, mode="replicate"), F.pad(dirs, pad, mode="replicate")
        out = decoder(planes=p, points=points, viewdirs=dirs)
        return out["rgb_raw"][:, :m], out["sigma_raw"][:, :m]

    def field(points: torch.Tensor, viewdirs: torch.Tensor | None = None
              ) -> tuple[torch.Tensor | None, torch.Tensor]:
        b = points.shape[0]
        p = planes.expand(b, -1, -1, -1) if planes.shape[0] != b else planes
        dirs = torch.zeros_like(points) if viewdirs is None else viewdirs
        parts = [call(p, points[:, i:i + max_points], dirs[:, i:i + max_points])
                 for i in range(0, points.shape[1], max_points)]
        rgb = torch.cat([rgb for rgb, _ in parts], dim=1)
        sigma = torch.cat([sigma for _, sigma in parts], dim=1)
        return (None if viewdirs is None else rgb), sigma

    return field


def run_config(artifacts_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> Config:
    """The run's default settings: the manifest's sample / render / triplane sections; checked."""
    folder = Path(artifacts_dir)
    manifest = read_manifest(folder) if manifest is None else manifest
    tri = manifest["triplane"]
    cfg = Config.from_dict({"sample": manifest["sample"], "render": manifest["render"],
                            "triplane": {"resolution": tri["resolution"], "channels": tri["channels"]}},
                           source=str(folder / MANIFEST_NAME))
    return validate(cfg, str(folder / MANIFEST_NAME))
