"""The ``run`` pipeline: layered generation from an artifacts folder, with no model or training code.

It lives beside the library rather than in ``humanliff.runtime`` because it writes pictures and meshes
through ``humanliff.outputs``; it imports only the runtime, the config and the output writers.

It loads the best UNet and decoder engines present (``load_engine``), samples the layers with the
runtime's samplers (``sample_layers``, the same code ``humanliff generate`` runs), and renders and
writes the same outputs as ``generate`` through ``humanliff.outputs.writer``, which decodes through
the decoder engine wrapped as a field. On CUDA the fixed-shape UNet call is replayed as a CUDA graph.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from humanliff.config import Config, validate
from humanliff.errors import HumanLiffError
from humanliff.io import require_finite
from humanliff.outputs.writer import write_generation
from humanliff.runtime.engines import graphed, load_engine
from humanliff.runtime.field import Field
from humanliff.runtime.formats import PREFERENCE, Engine
from humanliff.runtime.layered import UNetFn, human_generators, sample_layers
from humanliff.runtime.manifest import MANIFEST_NAME, read_manifest
from humanliff.runtime.sampling import check_sampler
from humanliff.runtime.schedule import DistilledSchedule, alphas_cumprod, linear_betas, read_distilled
from humanliff.runtime.unet_engine import UNetEngines, load_unet

log = logging.getLogger(__name__)


@dataclass
class LoadedArtifacts:
    """An artifacts folder, loaded: its manifest, the engines and the noise schedule (on ``device``)."""

    folder: Path
    manifest: dict[str, Any]
    unet: UNetEngines
    decoder: Engine
    alphas_cumprod: torch.Tensor
    device: torch.device
    schedule: DistilledSchedule | None = None
    """A distilled student's schedule (the manifest's ``distilled``), None for a diffusion model."""

    def close(self) -> None:
        self.unet.close()
        self.decoder.close()


def load_artifacts(artifacts_dir: str | Path, device: str | torch.device | None = None,
                   prefer: Sequence[str] = PREFERENCE, compile: bool = False) -> LoadedArtifacts:
    """Read the manifest and load the best engine of each network on ``device`` (default CUDA if present).

    ``compile``: torch-run engines (``ep``) compile their programs on CUDA (see ``load_engine``); the
    other formats load compiled engines and never compile.
    """
    folder = Path(artifacts_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    manifest = read_manifest(folder)
    unet = load_unet(folder, manifest, prefer, device, compile=compile)
    decoder = load_engine(folder, "decoder", prefer, device, manifest, compile=compile)
    d = manifest["diffusion"]
    abar = alphas_cumprod(linear_betas(d["steps"], d["beta_start"], d["beta_end"])).to(device)
    return LoadedArtifacts(folder, manifest, unet, decoder, abar, device, manifest_schedule(folder, manifest))


def manifest_schedule(folder: Path, manifest: Mapping[str, Any]) -> DistilledSchedule | None:
    """The distilled student's schedule recorded in a manifest (None for a diffusion model)."""
    return read_distilled(manifest.get("distilled"), folder / MANIFEST_NAME, int(manifest["diffusion"]["steps"]))


def engine_unet_fn(unet: Callable[..., Mapping[str, torch.Tensor]]) -> UNetFn:
    """``unet_fn(x, t, x_cond, y) -> eps`` over a UNet engine (or its CUDA-graph replay)."""

    def unet_fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return unet(x=x, timesteps=t, x_cond=x_cond, y=y)["eps"]

    return unet_fn


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


def sample_planes(arts: LoadedArtifacts, humans: int, sampler: str, steps: int, seed: int,
                  layers: Sequence[int], eta: float = 0.0, keep_top: float = 0.0, progress: bool = False
                  ) -> torch.Tensor:
    """Sample ``layers`` (from 0) for ``humans`` humans: float32 ``[L, humans, 27, R, R]`` on the device.

    Humans go through the UNet in groups of the manifest's ``batch``; human i uses seed + i whatever the
    grouping, as in ``humanliff generate``. On CUDA each group size's UNet call runs as a CUDA graph.
    """
    if humans < 1:
        raise HumanLiffError(f"--humans must be at least 1, got {humans}")
    layers = list(layers)
    if not layers or layers[0] != 0:
        raise HumanLiffError(f"run samples from layer 0: --layers must start at 0, got {layers}")
    tri = arts.manifest["triplane"]
    group = int(arts.manifest["batch"])
    graphs: dict[int, Callable[..., Mapping[str, torch.Tensor]]] = {}
    out = []
    for start in range(0, humans, group):
        n = min(group, humans - start)
        shape = (n, tri["channels"], tri["resolution"], tri["resolution"])
        if n not in graphs:
            if arts.unet.compiled:
                log.info("compiling the UNet engine for batch %d and capturing its CUDA graph (about 1-2 min "
                         "at the original size; Inductor's cache shortens later runs)", n)
            example = {"x": torch.zeros(shape), "timesteps": torch.zeros(n, dtype=torch.int64),
                       "x_cond": torch.zeros(shape), "y": torch.zeros(n, dtype=torch.int64)}
            graphs[n] = graphed(arts.unet, example, arts.device, arts.unet.graphable)
        generators = human_generators(seed + start, n)
        out.append(sample_layers(engine_unet_fn(graphs[n]), shape, arts.alphas_cumprod, layers, sampler,
                                 steps, generator=generators, eta=eta, keep_top=keep_top, progress=progress,
                                 schedule=arts.schedule))
    return torch.cat(out, dim=1)


def run_config(artifacts_dir: str | Path, overrides: Sequence[str] = (), humans: int = 4,
               sampler: str | None = None, steps: int | None = None, seed: int = 0,
               manifest: Mapping[str, Any] | None = None) -> Config:
    """The run's settings: the manifest's sample / render / triplane sections, then ``overrides``
    (``section.key=value``), then ``seed``, ``humans`` and, when given, ``sampler`` and ``steps``; checked."""
    folder = Path(artifacts_dir)
    manifest = read_manifest(folder) if manifest is None else manifest
    tri = manifest["triplane"]
    cfg = Config.from_dict({"sample": manifest["sample"], "render": manifest["render"],
                            "triplane": {"resolution": tri["resolution"], "channels": tri["channels"]}},
                           source=str(folder / MANIFEST_NAME)).with_overrides(overrides)
    sample = dataclasses.replace(cfg.sample, sampler=sampler or cfg.sample.sampler, seed=seed, batch=humans,
                                 steps=cfg.sample.steps if steps is None else steps)
    return validate(dataclasses.replace(cfg, sample=sample), "run")


def run_artifacts(artifacts_dir: str | Path, out_dir: str | Path, humans: int = 4, sampler: str | None = None,
                  steps: int | None = None, seed: int = 0, layers: Sequence[int] | None = None,
                  device: str | torch.device | None = None, *, prefer: Sequence[str] = PREFERENCE,
                  overrides: Sequence[str] = (), compile: bool = False, progress: bool = True) -> dict[str, Any]:
    """Generate ``humans`` layered humans from an artifacts folder and write them to ``out_dir``.

    The sample and render settings are those of ``run_config``. Returns the written paths (as
    ``humanliff generate``) plus ``engines`` (format per network) and ``timings`` (s).
    """
    t0 = time.perf_counter()
    folder = Path(artifacts_dir)
    manifest = read_manifest(folder)
    cfg = run_config(folder, overrides, humans, sampler, steps, seed, manifest)
    sample_cfg = cfg.sample
    check_sampler(sample_cfg.sampler, manifest_schedule(folder, manifest), sample_cfg.steps, folder / MANIFEST_NAME)
    arts = load_artifacts(folder, device, prefer, compile)
    layers = list(range(int(manifest["layers"]))) if layers is None else list(layers)
    t1 = time.perf_counter()
    log.info("sampling %d humans, layers %s, %s with %d steps (unet: %s, decoder: %s)", humans, layers,
             sample_cfg.sampler, sample_cfg.steps, arts.unet.format, arts.decoder.format)
    planes = sample_planes(arts, humans, sample_cfg.sampler, sample_cfg.steps, seed, layers, sample_cfg.eta,
                           sample_cfg.keep_top, progress)
    require_finite(planes, "the sampled tri-planes", f"{arts.folder}: the UNet engine")
    t2 = time.perf_counter()
    bounds = torch.tensor(manifest["bounds"], dtype=torch.float32)
    result = write_generation(out_dir, planes, layers, lambda p: engine_field(arts.decoder, p), bounds,
                              sample_cfg, cfg.render, progress=progress)
    t3 = time.perf_counter()
    arts.close()
    result["engines"] = {"unet": arts.unet.format, "decoder": arts.decoder.format}
    result["timings"] = {"load_s": t1 - t0, "sample_s": t2 - t1, "write_s": t3 - t2, "total_s": t3 - t0}
    return result
