"""Diffusion run files: ``checkpoint.pt`` (resumable: model, EMA, optimizer, step, RNG).

Written atomically by rank 0; the run's ``ema.pt`` has its own module, ``humanliff.ema_file``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from humanliff.config import Config
from humanliff.errors import InputFileError
from humanliff.io import atomic_path, read_torch_file, require_finite
from humanliff.models.checkpoint import load_unet_weights
from humanliff.models.unet import UNet
from humanliff.training.ema import EMA

CHECKPOINT = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
MODEL_SECTIONS = ("unet", "triplane", "diffusion")
"""Config sections that define the network and the process: a resumed run must keep them."""


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path, "checkpoint") as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | Path, model: UNet, ema: EMA, optimizer: torch.optim.Optimizer, step: int,
                    cfg: Config, extra: dict[str, Any] | None = None) -> None:
    """Write everything needed to resume at ``step`` (the number of optimizer steps done); ``extra``
    (the trainer's own state, e.g. a distillation round's teacher) goes under the key ``extra``."""
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
        **({"extra": extra} if extra else {}),
    }, Path(path))


RESUME_KEYS = {
    "train": ("seed", "batch_size", "microbatch", "lr", "lr_final", "lr_anneal_steps", "weight_decay",
              "ema_rate", "grad_clip", "cond_noise"),
    "fit": ("seed", "batch_images", "rays_per_image", "foreground_fraction", "lr_decoder", "lr_planes",
            "lr_decay", "lr_decay_b", "acc_weight", "tv_weight", "l1_weight", "clamp", "init_std",
            "subjects_per_batch_b"),
}
"""Settings a resumed run keeps unless told otherwise (``--resume-anyway``); the step counts, logging,
checkpointing, precision and compilation may change."""


def check_resume_config(path: Path, saved: Any, cfg: Config, sections: tuple[str, ...], run: str,
                        anyway: bool = False) -> None:
    """Refuse to resume ``path`` when a key of ``sections`` differs from the saved config, or (unless
    ``anyway``) one of ``RESUME_KEYS[run]``."""
    if not isinstance(saved, dict):
        raise InputFileError(path, "holds no config (not a checkpoint of this toolkit)")
    current = cfg.to_dict()
    keys = [(section, key, True) for section in sections for key in current[section]]
    keys += [(run, key, False) for key in RESUME_KEYS[run] if not anyway]
    for section, key, strict in keys:
        old, value = saved.get(section, {}).get(key), current[section][key]
        if old != value:
            hint = f"pass the run's config (its {CONFIG_FILE})" if strict else \
                "pass --resume-anyway to resume it anyway, or choose another --out"
            raise InputFileError(path, f"the run was started with {section}.{key}={old}, the config now "
                                       f"says {value}; {hint}")


def load_checkpoint(path: str | Path, model: UNet, ema: EMA, optimizer: torch.optim.Optimizer,
                    cfg: Config, resume_anyway: bool = False, *, sections: tuple[str, ...] = MODEL_SECTIONS,
                    restore: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Restore a ``checkpoint.pt`` into the given objects (and the global RNG); returns its step.

    Refuses a checkpoint written with other ``sections`` (every key must match), or other training
    settings unless ``resume_anyway``, and one holding non-finite weights. ``restore`` receives the
    checkpoint's ``extra`` (``{}`` when it has none)."""
    path = Path(path)
    blob = read_torch_file(path)
    needed = ("model", "ema", "optimizer", "step", "rng", "config")
    if not isinstance(blob, dict) or any(k not in blob for k in needed):
        raise InputFileError(path, f"not a humanliff training checkpoint (expected keys {', '.join(needed)})")
    check_resume_config(path, blob["config"], cfg, sections, "train", resume_anyway)
    require_finite(blob["model"], "the model weights", path)
    require_finite(blob["ema"], "the EMA weights", path)
    load_unet_weights(model, blob["model"], path)
    missing = [name for name in ema.names if name not in blob["ema"]]
    if missing:
        raise InputFileError(path, f"EMA weights miss keys: {', '.join(missing[:4])}")
    ema.load_state_dict(blob["ema"])
    try:
        optimizer.load_state_dict(blob["optimizer"])
    except (ValueError, KeyError) as exc:
        raise InputFileError(path, f"optimizer state does not fit this model ({exc})") from exc
    if restore is not None:
        restore(blob.get("extra", {}))
    torch.set_rng_state(blob["rng"]["torch"])
    if torch.cuda.is_available() and len(blob["rng"].get("cuda", [])) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(blob["rng"]["cuda"])
    return int(blob["step"])
