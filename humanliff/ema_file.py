"""A diffusion run's ``ema.pt``: the one module that writes, finds and reads it.

The file is ``{"state_dict": the EMA UNet's weights, "config": Config.to_dict(), "store_manifest": the
tri-plane store's manifest.json}``, plus ``distilled`` (the schedule record of
``runtime.schedule.DistilledSchedule``) for a student of ``humanliff distill``; written by ``humanliff
train``, ``humanliff distill`` and ``humanliff model pack`` and read by ``generate``, ``export`` and the
packed default model (``humanliff.models.checkpoint.load_ema`` builds the UNet from it). An original
``ema_0.9999_*.pt`` is a bare state dict, not this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from humanliff.config import DiffusionConfig
from humanliff.errors import InputFileError
from humanliff.io import atomic_path, read_torch_file
from humanliff.runtime.schedule import DistilledSchedule, read_distilled

EMA_FILE = "ema.pt"
EMA_KEYS = ("state_dict", "config", "store_manifest")
"""The keys of a run's ``ema.pt``."""


def resolve_ema(path: str | Path) -> Path:
    """The ``ema.pt`` meant by ``path``: the file itself, or ``path/ema.pt`` for a run folder."""
    path = Path(path)
    return path / EMA_FILE if path.is_dir() else path


def read_ema(path: str | Path) -> dict[str, Any]:
    """The dict of an ``ema.pt`` (or a run folder's), checked for ``EMA_KEYS``; one-line error otherwise."""
    path = resolve_ema(path)
    blob = read_torch_file(path)
    if not isinstance(blob, dict) or any(k not in blob for k in EMA_KEYS):
        raise InputFileError(path, f"not a humanliff ema.pt (expected keys {', '.join(EMA_KEYS)}); "
                                   "an original ema_0.9999_*.pt loads with load_unet and a config")
    if not isinstance(blob["store_manifest"], dict):
        raise InputFileError(path, "not a humanliff ema.pt (its store_manifest is not a dict)")
    return blob


def read_schedule(path: str | Path) -> DistilledSchedule | None:
    """A distilled student's schedule (its ``ema.pt``'s ``distilled`` record; ``humanliff distill``), or None
    for a diffusion model."""
    path = resolve_ema(path)
    blob = read_ema(path)
    cfg = blob["config"] if isinstance(blob["config"], dict) else {}
    total = int(cfg.get("diffusion", {}).get("steps", DiffusionConfig.steps))
    return read_distilled(blob.get("distilled"), path, total)


def write_ema(path: str | Path, state_dict: Mapping[str, torch.Tensor], config: dict[str, Any],
              store_manifest: dict[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    """Write an ``ema.pt`` atomically (fault-injection point ``checkpoint``); returns its path. ``extra``:
    more keys, e.g. a distilled student's ``distilled`` schedule record."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    with atomic_path(path, "checkpoint") as tmp:
        torch.save({"state_dict": state, "config": config, "store_manifest": store_manifest, **(extra or {})}, tmp)
    return path
