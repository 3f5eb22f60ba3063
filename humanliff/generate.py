"""The torch models of a pipeline: a training run's EMA UNet and a tri-plane store's decoder.

The UNet comes from a run's ``ema.pt`` (with its config), the decoder and the reference box from a
tri-plane store. Generated planes are decoded in the box of the store's first subject (the original's
reference subject). ``humanliff.Pipeline.from_pretrained`` imports this module only for torch sources, so
that the ``run`` pipeline's engines load without the model and training code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from humanliff.config import Config
from humanliff.ema_file import EMA_FILE, read_schedule
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.models.checkpoint import load_ema
from humanliff.models.inference import inference_unet
from humanliff.pipeline import Pipeline
from humanliff.pretrained import DEFAULT_MODEL, DEFAULT_SOURCES, default_model
from humanliff.runtime.field import Field, make_field
from humanliff.runtime.layered import UNetFn
from humanliff.runtime.schedule import DistilledSchedule, linear_schedule
from humanliff.store import check_layout, open_store

NO_MODEL = "no --unet given (pass a training run's ema.pt, or neither --unet nor --store for the default model)"
NO_STORE = "no --store given (pass the tri-plane store the UNet was trained on, or neither for the default model)"
PACKED_STORE = "store"
"""A packed model folder's store (``humanliff model pack``), beside its ``ema.pt``."""


def resolve_model(source: str | Path | None, store: str | Path | None) -> tuple[Path, Path]:
    """``(ema.pt, store folder)`` of a pipeline source: ``"default"`` (or None), ``"default-distilled"`` (its
    shipped student), a packed model folder, a run folder or its ``ema.pt`` (then ``store`` is needed). A
    missing ``source`` is named before anything else."""
    if source is None and store is not None:
        raise HumanLiffError(NO_MODEL)
    name = "default" if source is None else str(source)
    if name in DEFAULT_SOURCES and not Path(name).exists():
        if store is not None:
            raise HumanLiffError(f"--store {store}: the default model has its own store; give --unet too")
        return default_model(distilled=DEFAULT_SOURCES[name])
    path = Path(source)
    if not path.exists():
        raise InputFileError(path, "no such file or folder (pass a training run's ema.pt or its folder)")
    ema = path / EMA_FILE if path.is_dir() else path
    if not ema.is_file():
        raise InputFileError(ema, "no such file (a training run folder holds ema.pt)")
    if store is None and path.is_dir() and (path / PACKED_STORE / "manifest.json").is_file():
        store = path / PACKED_STORE
    if store is None:
        raise HumanLiffError(NO_STORE)
    return ema, Path(store)


@dataclass
class TorchModels:
    """The torch UNet (``unet_fn``) and decoder on ``device``; see ``humanliff.pipeline.Models``."""

    unet_fn: UNetFn
    decoder: torch.nn.Module
    alphas_cumprod: torch.Tensor
    bounds: torch.Tensor
    channels: int
    resolution: int
    precision: str
    fused: bool
    device: torch.device
    inputs: tuple[Path, ...]
    schedule: DistilledSchedule | None = None
    """A distilled student's schedule (its ``ema.pt``'s ``distilled``), None for a diffusion model."""
    group: int = 0
    engines: dict[str, str] = field(default_factory=lambda: {"unet": "torch", "decoder": "torch"})

    def unet_for(self, humans: int) -> UNetFn:
        return self.unet_fn

    def field(self, planes: torch.Tensor) -> Field:
        return make_field(planes.to(self.device), self.decoder, precision=self.precision, fused=self.fused)

    def close(self) -> None:
        """Nothing to release."""


def load_torch_models(unet_ckpt: Path, store: Path, device: torch.device, precision: str, *,
                      compile: bool = False, fused: bool = True) -> TorchModels:
    """Load a run's EMA UNet and the store's decoder on ``device``; the store must match the UNet's planes."""
    unet, unet_cfg = load_ema(unet_ckpt, device)
    triplanes = open_store(store)
    check_layout(unet_cfg.triplane, triplanes, f"the UNet in {unet_ckpt}")
    expected = (unet_cfg.triplane.channels, unet_cfg.triplane.resolution)
    d = unet_cfg.diffusion
    abar = linear_schedule(d.steps, d.beta_start, d.beta_end).to(device)
    inputs = (unet_ckpt, store) if not unet_ckpt.is_relative_to(DEFAULT_MODEL) else (DEFAULT_MODEL,)
    return TorchModels(inference_unet(unet, precision=precision, compile=compile), triplanes.load_decoder(device),
                       abar, triplanes.subject_bounds(0), expected[0], expected[1], precision, fused, device, inputs,
                       read_schedule(unet_ckpt))


def generate(cfg: Config, unet_ckpt: str | Path | None, store: str | Path | None, out_dir: str | Path,
             layers: Sequence[int] | None = None, from_spec: str | None = None, *,
             device: torch.device | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Generate ``cfg.sample.batch`` humans with the torch models and write them to ``out_dir``: the
    one-call form of ``Pipeline`` (the demo's); returns ``GenerationResult.save``'s paths."""
    pipe = Pipeline.from_pretrained(unet_ckpt, store=store, device=device, config=cfg)
    return pipe(layers=layers, start=from_spec, progress=progress).save(out_dir, force=True, progress=progress)
