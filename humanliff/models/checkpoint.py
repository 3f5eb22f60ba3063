"""Reading UNet weights: a run's ``ema.pt`` or an original ``ema_0.9999_*.pt`` / ``model*.pt`` state dict.

``ema.pt`` is read through ``humanliff.ema_file`` (its one home); an original file is a bare state dict,
read with a config (the defaults are the original SynBody / TightCap UNet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from humanliff.config import Config
from humanliff.ema_file import read_ema, resolve_ema
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.io import read_torch_file, require_finite
from humanliff.models.unet import UNet, build_unet


def _list(keys: list[str]) -> str:
    shown = ", ".join(keys[:4])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > 4 else shown


def load_unet_weights(model: UNet, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``model.load_state_dict(state, strict=True)``, raising one line that names the missing, unexpected
    or misshapen keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    if not problems:
        wrong = [f"{k} {list(state[k].shape)} (model: {list(v.shape)})" for k, v in expected.items()
                 if tuple(state[k].shape) != tuple(v.shape)]
        if wrong:
            problems.append(f"shape mismatch: {_list(wrong)}")
    if problems:
        raise InputFileError(path, "weights do not fit the configured UNet; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _is_state_dict(blob: Any) -> bool:
    return isinstance(blob, dict) and bool(blob) and all(isinstance(v, torch.Tensor) for v in blob.values())


def load_unet(path: str | Path, cfg: Config | None = None, device: torch.device | str = "cpu"
              ) -> tuple[UNet, Config]:
    """A UNet in eval mode from ``ema.pt`` (its own config) or an original state dict (``cfg``, default
    the original's). Returns ``(unet, config)``."""
    return _unet_from(read_torch_file(path), path, cfg, device)


def _unet_from(blob: Any, path: str | Path, cfg: Config | None, device: torch.device | str
               ) -> tuple[UNet, Config]:
    if isinstance(blob, dict) and "state_dict" in blob and "config" in blob:
        try:
            cfg = Config.from_dict(blob["config"], source=f"{path}: config")
        except HumanLiffError as exc:
            raise InputFileError(path, f"bad stored config ({exc})") from exc
        state = blob["state_dict"]
    elif _is_state_dict(blob):
        cfg = cfg or Config()
        state = blob
    else:
        raise InputFileError(path, "neither a humanliff ema.pt (keys state_dict, config) "
                                   "nor a UNet state dict")
    require_finite(state, "the UNet weights", path)
    unet = build_unet(cfg.unet, cfg.triplane.resolution, cfg.triplane.channels)
    load_unet_weights(unet, state, path)
    return unet.to(device).eval(), cfg


def load_ema(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet, Config]:
    """The EMA UNet of a training run (its ``ema.pt``, or the run folder) with the run's config."""
    return _unet_from(read_ema(path), resolve_ema(path), None, device)


def read_store_manifest(path: str | Path) -> dict[str, Any]:
    """The tri-plane store manifest recorded in a run's ``ema.pt`` (subjects, bounds, decoder config)."""
    return read_ema(path)["store_manifest"]
