"""Layered generation with the torch models: sample tri-planes layer after layer, then render and save them.

The UNet comes from a training run's ``ema.pt`` (with its config), the decoder and the reference box from
a tri-plane store. Generated planes are decoded in the box of the store's first subject (the original's
reference subject), or in the given subject's box when dressing an existing body (``from_spec``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from humanliff.config import Config
from humanliff.errors import HumanLiffError
from humanliff.io import require_finite
from humanliff.models.checkpoint import load_ema, read_schedule
from humanliff.models.inference import inference_unet
from humanliff.outputs.writer import write_generation
from humanliff.pretrained import default_model
from humanliff.runtime.field import Field, make_field
from humanliff.runtime.layered import LAYER_TITLES, human_generators, sample_layers
from humanliff.runtime.sampling import check_sampler
from humanliff.runtime.schedule import alphas_cumprod, linear_betas
from humanliff.training.store import TriplaneStore, open_store

log = logging.getLogger(__name__)

NO_MODEL = "no --unet given (pass a training run's ema.pt, or neither --unet nor --store for the default model)"
NO_STORE = "no --store given (pass the tri-plane store the UNet was trained on, or neither for the default model)"


@dataclass
class StartSpec:
    """A ``--from STORE:SUBJECT:LAYER`` request: dress the given layer of a fitted subject."""

    store: Path
    subject: str
    layer: int


def parse_from(spec: str) -> StartSpec:
    """Parse ``STORE:SUBJECT:LAYER`` (the store path may itself contain ``:``); LAYER is 0..2."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise HumanLiffError(f"--from '{spec}' is not of the form STORE:SUBJECT:LAYER")
    store, subject, layer = parts
    if not layer.isdigit() or not 0 <= int(layer) < len(LAYER_TITLES) - 1:
        raise HumanLiffError(f"--from '{spec}': LAYER must be 0..{len(LAYER_TITLES) - 2} "
                             f"(the fixed layer; generation continues above it)")
    return StartSpec(Path(store), subject, int(layer))


def resolve_layers(layers: Sequence[int] | None, start: StartSpec | None) -> list[int]:
    """The layers to sample: all of 0..3 (or those above ``start``) by default; they must follow ``start``."""
    first = 0 if start is None else start.layer + 1
    layers = list(range(first, len(LAYER_TITLES))) if layers is None else [int(k) for k in layers]
    if not layers or layers[0] != first:
        if start is None:
            raise HumanLiffError(f"--layers must start at 0 (or give --from STORE:SUBJECT:LAYER for the "
                                 f"layer below), got {layers}")
        raise HumanLiffError(f"--layers must start at {first}, the layer above --from's {start.layer}, "
                             f"got {layers}")
    return layers


def _check_store(store: TriplaneStore, cfg: Config, unet_ckpt: Path) -> None:
    expected = (cfg.triplane.channels, cfg.triplane.resolution)
    if (store.channels, store.resolution) != expected:
        raise HumanLiffError(f"{store.path}: tri-planes are {store.channels}x{store.resolution}^2 but the "
                             f"UNet in {unet_ckpt} was trained on {expected[0]}x{expected[1]}^2")


def generate(cfg: Config, unet_ckpt: str | Path | None, store: str | Path | None, out_dir: str | Path,
             layers: Sequence[int] | None = None, from_spec: str | None = None, *,
             device: torch.device | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate ``cfg.sample.batch`` humans, layer after layer, and write them to ``out_dir``.

    ``cfg.sample`` sets the sampler, steps, seed (human i uses seed + i), batch, precision and the
    outputs' sizes; ``cfg.render`` the renderer. ``layers`` defaults to 0..3, or to the layers above
    ``from_spec`` (``STORE:SUBJECT:LAYER``: that fitted layer is kept fixed, shown as the first column).
    Returns the written paths (see ``humanliff.outputs.writer.write_generation``).
    """
    if unet_ckpt is None and store is None:
        unet_ckpt, store = default_model()
    if unet_ckpt is None:
        raise HumanLiffError(NO_MODEL)
    if store is None:
        raise HumanLiffError(NO_STORE)
    if cfg.sample.batch < 1:
        raise HumanLiffError(f"sample.batch must be at least 1, got {cfg.sample.batch}")
    start = parse_from(from_spec) if from_spec else None
    layers = resolve_layers(layers, start)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = cfg.sample.precision if device.type == "cuda" else "fp32"
    schedule = read_schedule(unet_ckpt)
    check_sampler(cfg.sample.sampler, schedule, cfg.sample.steps, unet_ckpt)
    unet, unet_cfg = load_ema(unet_ckpt, device)
    triplanes = open_store(store)
    _check_store(triplanes, unet_cfg, Path(unet_ckpt))
    decoder = triplanes.load_decoder(device)
    batch, res = cfg.sample.batch, unet_cfg.triplane.resolution
    shape = (batch, unet_cfg.triplane.channels, res, res)
    bounds = triplanes.subject_bounds(0)
    start_planes = None
    if start is not None:
        source = triplanes if start.store.resolve() == Path(store).resolve() else open_store(start.store)
        _check_store(source, unet_cfg, Path(unet_ckpt))
        start_planes = source.layer(start.subject, start.layer, device).expand(shape).contiguous()
        bounds = source.subject_bounds(start.subject)

    unet_fn = inference_unet(unet, precision=precision, compile=cfg.sample.compile and device.type == "cuda")
    diffusion = unet_cfg.diffusion
    abar = alphas_cumprod(linear_betas(diffusion.steps, diffusion.beta_start, diffusion.beta_end)).to(device)
    log.info("sampling %d humans, layers %s, %s with %d steps", batch, layers, cfg.sample.sampler,
             cfg.sample.steps)
    planes = sample_layers(unet_fn, shape, abar, layers, cfg.sample.sampler, cfg.sample.steps,
                           generator=human_generators(cfg.sample.seed, batch), start=start_planes,
                           eta=cfg.sample.eta, keep_top=cfg.sample.keep_top, progress=progress, schedule=schedule)
    require_finite(planes, "the sampled tri-planes", f"{unet_ckpt}: the UNet")
    if start_planes is not None:
        planes = torch.cat([start_planes[None], planes])
        layers = [start.layer, *layers]

    def field_factory(p: torch.Tensor) -> Field:
        return make_field(p.to(device), decoder, precision=precision, fused=cfg.render.fused_choice())

    return write_generation(out_dir, planes, layers, field_factory, bounds, cfg.sample, cfg.render,
                            progress=progress)
