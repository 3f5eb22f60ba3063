"""``humanliff.Pipeline``: layered generation from Python, with the torch models or exported engines.

::

    pipe = humanliff.Pipeline.from_pretrained("default")      # or a model / run folder, or an artifacts folder
    result = pipe(humans=2, layers="0-3", steps=10, seed=0)   # planes [L, B, 27, R, R] in memory
    result.images(view=0, size=256)[0][3]                     # PIL image: human 0, layer 3 (+shoes)
    result.save("generated")                                  # the generation folder of `humanliff generate`

``humanliff generate`` and ``humanliff run`` are thin callers of this class, so the two commands and
Python cannot drift apart. The models behind a pipeline are a ``Models``: the torch UNet and decoder
(``humanliff.generate``, imported only for torch sources so that engines run without the model code) or
an artifacts folder's engines (``humanliff.run_pipeline``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from humanliff.config import Config, load_config, validate
from humanliff.errors import HumanLiffError
from humanliff.generation_result import GenerationResult
from humanliff.io import require_finite
from humanliff.output_sizes import generation_bytes
from humanliff.outputs.writer import composited_views, render_occupancy
from humanliff.run_folder import guard_output
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.compute import default_device
from humanliff.runtime.field import Field
from humanliff.runtime.files import read_json
from humanliff.runtime.formats import PREFERENCE
from humanliff.runtime.layered import UNetFn, calls_per_layer, human_generators, parse_layers, sample_layers
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.runtime.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from humanliff.runtime.sampling import check_sampler
from humanliff.runtime.schedule import DistilledSchedule
from humanliff.store import TriplaneRef, parse_triplane_ref

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, int]], None]
"""``callback({"layer", "step", "steps", "first_human", "humans"})`` after every UNet call (step from 1)."""

PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}
"""``dtype`` as a torch dtype -> the precision name of ``sample.precision``."""


StartSpec = TriplaneRef
"""A ``STORE:SUBJECT:LAYER`` request: dress the given layer of a fitted subject."""


def parse_from(spec: str) -> StartSpec:
    """Parse ``--from STORE:SUBJECT:LAYER`` (the store path may itself contain ``:``); LAYER is 0..2."""
    return parse_triplane_ref(spec, NUM_LAYERS - 1, "--from")


def resolve_layers(layers: Sequence[int] | str | None, start: StartSpec | None) -> list[int]:
    """The layers to sample (``"LO-HI"`` or ids): all of 0..3, or those above ``start``, by default; they
    must follow ``start``."""
    first = 0 if start is None else start.layer + 1
    if isinstance(layers, str):
        layers = parse_layers(layers)
    layers = list(range(first, NUM_LAYERS)) if layers is None else [int(k) for k in layers]
    if not layers or layers[0] != first:
        if start is None:
            raise HumanLiffError(f"--layers must start at 0 (or give --from STORE:SUBJECT:LAYER for the "
                                 f"layer below), got {layers}")
        raise HumanLiffError(f"--layers must start at {first}, the layer above --from's {start.layer}, "
                             f"got {layers}")
    return layers


class Models(Protocol):
    """What a pipeline samples and renders with (torch models or engines), all on ``device``."""

    device: torch.device
    alphas_cumprod: torch.Tensor
    """``[T]`` training schedule on the device."""
    channels: int
    resolution: int
    bounds: torch.Tensor
    """``[2, 3]`` world box generated humans are decoded in (the reference subject's)."""
    group: int
    """Humans per UNet call at most (0: any number at once)."""
    inputs: tuple[Path, ...]
    """The files the models were read from (an output folder must not be one of them)."""
    engines: dict[str, str]
    """Format per network (``{"unet": "torch", "decoder": "torch"}`` for the torch models)."""
    schedule: DistilledSchedule | None
    """A distilled student's schedule (``humanliff distill``), None for a diffusion model."""

    def unet_for(self, humans: int) -> UNetFn: ...

    def field(self, planes: torch.Tensor) -> Field: ...

    def close(self) -> None: ...


def is_artifacts(path: str | Path) -> bool:
    """True when ``path`` is an artifacts folder of ``humanliff export`` (its manifest names the format)."""
    manifest = Path(path) / MANIFEST_NAME
    if not manifest.is_file():
        return False
    values = read_json(manifest)
    return isinstance(values, dict) and values.get("format") == MANIFEST_FORMAT


def _precision(dtype: str | torch.dtype | None, default: str) -> str:
    if dtype is None:
        return default
    name = PRECISION_NAMES.get(dtype, dtype) if isinstance(dtype, torch.dtype) else dtype
    if name not in PRECISION_NAMES.values():
        raise HumanLiffError(f"dtype {dtype}: use one of {', '.join(PRECISION_NAMES.values())}")
    return str(name)


class Pipeline:
    """Layered generation: ``pipe(humans, layers, ...) -> GenerationResult``; see the module doc."""

    def __init__(self, models: Models, config: Config) -> None:
        self.models = models
        self.config = config
        """Sample and render settings (``sample.*`` are the defaults of ``__call__``)."""

    @property
    def device(self) -> torch.device:
        return self.models.device

    @classmethod
    def from_pretrained(cls, source: str | Path | None = "default", *, store: str | Path | None = None,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        config: Config | str | Path | None = None, overrides: Sequence[str] = (),
                        prefer: Sequence[str] = PREFERENCE, compile: bool = False,
                        engines_only: bool = False) -> Pipeline:
        """Load a pipeline.

        Args:
            source: ``"default"`` or None (the shipped model), a packed model folder (``ema.pt`` + ``store/``), a
                training run folder or its ``ema.pt`` (with ``store``), or an artifacts folder (engines).
            store: the tri-plane store a run's UNet was trained on (its decoder renders, its first
                subject's box frames the humans); not needed for the default or a packed model.
            device: torch device (default: CUDA when available, else the CPU).
            dtype: compute precision of the torch models on CUDA, ``"bf16"`` / ``"fp32"`` or a torch dtype
                (default ``sample.precision``; the CPU runs fp32). Engines run in their export dtype.
            config: a ``Config``, a preset name or a YAML file for the sample / render settings; default:
                the model's own (the config its training run recorded, or the artifacts manifest's).
            overrides: ``section.key=value`` strings applied on top.
            prefer, compile: engines only: formats to try, best first, and ``ep`` compilation on CUDA.
            engines_only: refuse a source that is not an artifacts folder (``humanliff run``).
        """
        device = default_device(device)
        chosen = None if config is None else (config if isinstance(config, Config) else load_config(config))
        if engines_only or (store is None and source is not None and is_artifacts(source)):
            from humanliff.run_pipeline import load_artifacts, run_config

            if dtype is not None:
                raise HumanLiffError(f"{source}: engines run in the dtype they were exported with "
                                     "(humanliff export --dtype); do not pass dtype")
            engines = load_artifacts(source, device, prefer, compile)
            cfg = (chosen or run_config(source, manifest=engines.manifest)).with_overrides(overrides)
            models: Models = engines
        else:
            from humanliff.generate import load_torch_models, resolve_model
            from humanliff.pretrained import model_config

            unet_ckpt, store_path = resolve_model(source, store)
            cfg = (chosen or model_config(unet_ckpt)).with_overrides(overrides)
            precision = _precision(dtype, cfg.sample.precision) if device.type == "cuda" else "fp32"
            models = load_torch_models(unet_ckpt, store_path, device, precision,
                                       compile=cfg.sample.compile and device.type == "cuda",
                                       fused=cfg.render.fused_kernel)
        cfg = dataclasses.replace(cfg, triplane=dataclasses.replace(
            cfg.triplane, channels=models.channels, resolution=models.resolution))
        return cls(models, validate(cfg))

    def sample_config(self, humans: int | None = None, sampler: str | None = None, steps: int | None = None,
                      seed: int | None = None, eta: float | None = None, keep_top: float | None = None,
                      strength: float | None = None) -> Config:
        """``self.config`` with the given sample settings (None: keep), checked."""
        chosen = {"batch": humans, "sampler": sampler, "steps": steps, "seed": seed, "eta": eta,
                  "keep_top": keep_top, "strength": strength}
        sample = dataclasses.replace(self.config.sample, **{k: v for k, v in chosen.items() if v is not None})
        return validate(dataclasses.replace(self.config, sample=sample), "pipeline")

    def check_output(self, out_dir: str | Path, humans: int | None = None, *, force: bool = False,
                     inputs: Sequence[str | Path | None] = ()) -> Path:
        """Refuse ``out_dir`` before any work (one of the models' files or ``inputs``, a foreign folder, too
        little space; see ``humanliff.run_folder``); an existing folder of ours needs ``force``."""
        sample = self.sample_config(humans).sample
        return guard_output(out_dir, [*self.models.inputs, *inputs], force=force,
                            needed_bytes=generation_bytes(sample, sample.batch, self.models.resolution))

    def __call__(self, humans: int | None = None, layers: str | Sequence[int] | None = None, *,
                 sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                 start: StartSpec | str | None = None, eta: float | None = None, keep_top: float | None = None,
                 strength: float | None = None, callback: Callback | None = None, progress: bool = False
                 ) -> GenerationResult:
        """Generate ``humans`` layered humans (default ``sample.batch``); human i uses ``seed + i``.

        ``layers``: ``"0-3"`` or ids (default all, or those above ``start``); ``start``: a fitted layer
        kept fixed, ``STORE:SUBJECT:LAYER`` (the result then holds it as its first layer); ``sampler``,
        ``steps``, ``eta``, ``keep_top``, ``strength`` as ``sample.*`` (a distilled student takes only
        ``distilled`` with its own steps, the default ``steps`` then). ``callback`` is called after every UNet call.
        """
        schedule = self.models.schedule
        if steps is None and schedule is not None and (sampler or self.config.sample.sampler) == "distilled":
            steps = schedule.steps  # the student's own number of calls
        cfg = self.sample_config(humans, sampler, steps, seed, eta, keep_top, strength)
        s = cfg.sample
        check_sampler(s.sampler, schedule, s.steps, self.models.inputs[0])
        start = parse_from(start) if isinstance(start, str) else start
        layers = resolve_layers(layers, start)
        start_planes, bounds = self._start(start)
        log.info("sampling %d humans, layers %s, %s with %d steps", s.batch, layers, s.sampler, s.steps)
        group = self.models.group or s.batch
        parts = []
        for first in range(0, s.batch, group):
            n = min(group, s.batch - first)
            shape = (n, self.models.channels, self.models.resolution, self.models.resolution)
            unet_fn = self.models.unet_for(n)
            if callback is not None:
                unet_fn = _reporting(unet_fn, callback, s.steps, s.strength, first, s.batch)
            fixed = None if start_planes is None else start_planes.expand(shape).contiguous()
            parts.append(sample_layers(unet_fn, shape, self.models.alphas_cumprod, layers, s.sampler, s.steps,
                                       generator=human_generators(s.seed + first, n), start=fixed, eta=s.eta,
                                       keep_top=s.keep_top, strength=s.strength, progress=progress,
                                       schedule=schedule))
        planes = torch.cat(parts, dim=1)
        require_finite(planes, "the sampled tri-planes", f"{self.models.inputs[0]}: the UNet")
        if start_planes is not None:
            planes = torch.cat([start_planes.expand(planes.shape[1:])[None], planes])
            layers = [start.layer, *layers]
        return GenerationResult(planes, layers, bounds, cfg, self)

    def _start(self, start: StartSpec | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The fixed start layer ``[1, 27, R, R]`` (or None) and the box the humans are decoded in."""
        if start is None:
            return None, self.models.bounds
        from humanliff.store import check_layout, open_store  # only when dressing a fitted body

        source = open_store(start.store)
        check_layout(self.config.triplane, source, f"the UNet of {self.models.inputs[0]}")
        return source.layer(start.subject, start.layer, self.device)[None], source.subject_bounds(start.subject)

    def field(self, planes: torch.Tensor) -> Field:
        """The field of tri-planes ``[1 or B, 27, R, R]`` through the pipeline's decoder."""
        return self.models.field(planes.to(self.device))

    def render(self, planes: torch.Tensor, cameras: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               *, views: int = 4, size: int | None = None, bounds: torch.Tensor | None = None,
               background: str | None = None) -> np.ndarray:
        """Render tri-planes ``[B, 27, R, R]``: uint8 ``[B, V, S, S, 3]`` (``[..., 4]`` when transparent).

        ``cameras``: ``(K [V, 3, 3], R [V, 3, 3], T [V, 3])`` in OpenCV world-to-camera form for ``size``
        pixels (default: ``views`` cameras orbiting ``bounds``, the reference box by default);
        ``background``: ``black``, ``white`` or ``transparent`` (default ``sample.background``).
        """
        size = size or self.config.sample.image_size
        bounds = (self.models.bounds if bounds is None else torch.as_tensor(bounds, dtype=torch.float32)).cpu()
        cams = orbit_cameras(bounds, views, size) if cameras is None else cameras
        cams = tuple(torch.as_tensor(c, dtype=torch.float32).to(self.device) for c in cams)
        background = background or self.config.sample.background
        out = []
        for p in planes[None] if planes.dim() == 3 else planes:
            field = self.field(p[None])
            occupancy = render_occupancy(field, self.config.render, self.device)
            out.append(composited_views(field, cams, size, bounds.to(self.device), self.config.render, occupancy,
                                    background))
        return np.stack(out)

    def close(self) -> None:
        """Release the engines (the torch models are freed with the pipeline)."""
        self.models.close()


def _reporting(unet_fn: UNetFn, callback: Callback, steps: int, strength: float, first: int, humans: int
               ) -> UNetFn:
    """``unet_fn`` that calls ``callback`` after each call (a layer makes ``calls_per_layer`` calls)."""
    calls = {"n": 0, "layer": -1}

    def fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = unet_fn(x, t, x_cond, y)
        layer = int(y[0])
        total = calls_per_layer(steps, strength, layer)
        calls["n"] = 1 if layer != calls["layer"] else calls["n"] % total + 1
        calls["layer"] = layer
        callback({"layer": layer, "step": calls["n"], "steps": total, "first_human": first, "humans": humans})
        return eps

    return fn
