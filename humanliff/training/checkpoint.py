"""Diffusion run files: ``checkpoint.pt`` (resumable: model, EMA, optimizer, step, RNG) and ``ema.pt``.

Both are written atomically by rank 0. ``ema.pt`` is what ``generate`` and ``export`` read
(``humanliff.models.checkpoint.load_ema``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from humanliff.config import Config
from humanliff.errors import InputFileError
from humanliff.io import atomic_path, read_torch_file
from humanliff.models.checkpoint import load_unet_weights
from humanliff.models.unet import UNet
from humanliff.training.ema import EMA

CHECKPOINT = "checkpoint.pt"
EMA_FILE = "ema.pt"
CONFIG_FILE = "config.yaml"
MODEL_SECTIONS = ("unet", "triplane", "diffusion")
"""Config sections that define the network and the process: a resumed run must keep them."""


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_ema(path: str | Path, model: UNet, ema: EMA, cfg: Config, store_manifest: dict[str, Any]) -> None:
    """Write ``{"state_dict": EMA weights, "config": cfg.to_dict(), "store_manifest": ...}``."""
    _save({"state_dict": ema.state_dict(model), "config": cfg.to_dict(), "store_manifest": store_manifest},
          Path(path))


def save_checkpoint(path: str | Path, model: UNet, ema: EMA, optimizer: torch.optim.Optimizer, step: int,
                    cfg: Config) -> None:
    """Write everything needed to resume at ``step`` (the number of optimizer steps done)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    _save({
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": ema.state_dict(model),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": rng,
        "config": cfg.to_dict(),
    }, Path(path))


def _check_config(path: Path, saved: dict[str, Any], cfg: Config) -> None:
    current = cfg.to_dict()
    for section in MODEL_SECTIONS:
        for key, value in current[section].items():
            old = saved.get(section, {}).get(key)
            if old != value:
                raise InputFileError(path, f"the run was trained with {section}.{key}={old}, the config now "
                                           f"says {value}; pass the run's config (its {CONFIG_FILE})")


def load_checkpoint(path: str | Path, model: UNet, ema: EMA, optimizer: torch.optim.Optimizer,
                    cfg: Config) -> int:
    """Restore a ``checkpoint.pt`` into the given objects (and the global RNG); returns its step."""
    path = Path(path)
    blob = read_torch_file(path)
    needed = ("model", "ema", "optimizer", "step", "rng", "config")
    if not isinstance(blob, dict) or any(k not in blob for k in needed):
        raise InputFileError(path, f"not a humanliff training checkpoint (expected keys {', '.join(needed)})")
    _check_config(path, blob["config"], cfg)
    load_unet_weights(model, blob["model"], path)
    missing = [name for name in ema.names if name not in blob["ema"]]
    if missing:
        raise InputFileError(path, f"EMA weights miss keys: {', '.join(missing[:4])}")
    ema.load_state_dict(blob["ema"])
    try:
        optimizer.load_state_dict(blob["optimizer"])
    except (ValueError, KeyError) as exc:
        raise InputFileError(path, f"optimizer state does not fit this model ({exc})") from exc
    torch.set_rng_state(blob["rng"]["torch"])
    if torch.cuda.is_available() and len(blob["rng"].get("cuda", [])) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
    return int(blob["step"])
