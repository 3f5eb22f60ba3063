"""Packed models: a UNet's EMA weights (fp16) plus a small tri-plane store, and the default model.

A packed model folder holds ``ema.pt`` (the EMA UNet in fp16 with its config) and ``store/`` (the
decoder and the first few subjects' planes and boxes: the reference box that generated humans are
framed by, and bodies to start from with ``--from``). The default model ships inside the package at
``humanliff/assets/default`` (trained on built-in anny humans by ``make default-model-anny``; see the README
for the commands); ``generate`` and ``run`` use it when no checkpoint is given.
"""

from __future__ import annotations

from pathlib import Path

from humanliff.config import Config
from humanliff.ema_file import EMA_FILE, EMA_KEYS, read_ema, resolve_ema, write_ema
from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path, require_finite
from humanliff.store import PLANES, create_store, open_store

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default"
"""Where the default model lives in the package."""
DEFAULT_STUDENT = DEFAULT_MODEL / "student"
"""The default model's distilled student (``humanliff distill``, sampler ``distilled``): its ``ema.pt`` only,
beside the default model, whose store it shares."""
DEFAULT_SOURCES = {"default": False, "default-distilled": True}
"""Pipeline source names of the shipped models: name -> whether it is the distilled student."""


def default_model(distilled: bool = False) -> tuple[Path, Path]:
    """``(ema.pt, store folder)`` of the default model (``distilled``: of its shipped student, which samples
    each layer in a few calls with the sampler ``distilled``), or a one-line error when it is not installed."""
    teacher, store = DEFAULT_MODEL / EMA_FILE, DEFAULT_MODEL / "store"
    if not teacher.is_file() or not (store / "manifest.json").is_file():
        raise HumanLiffError(f"no --unet/--store given and no default model installed at {DEFAULT_MODEL}")
    if not distilled:
        return teacher, store
    student = DEFAULT_STUDENT / EMA_FILE
    if not student.is_file():
        raise HumanLiffError(f"{student}: no distilled student of the default model is installed "
                             "(make one with humanliff distill and pass it as --unet)")
    return student, store


def pack_model(unet_ckpt: str | Path, store_path: str | Path, out: str | Path, subjects: int = 4) -> Path:
    """Write a packed model folder ``out`` from a run's ``ema.pt`` and a store (first ``subjects`` kept)."""
    unet_ckpt = resolve_ema(unet_ckpt)
    blob = read_ema(unet_ckpt)
    if subjects < 1:
        raise HumanLiffError(f"--subjects {subjects}: must be at least 1 (the subjects of the store kept)")
    require_finite(blob["state_dict"], "the UNet weights", unet_ckpt)
    store = open_store(store_path)
    keep = min(subjects, len(store.subjects))
    if keep < 1:
        raise HumanLiffError(f"{store_path}: the store holds no subjects")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        small = create_store(tmp / "store", store.subjects[:keep], store.bounds[:keep], store.resolution,
                             store.channels, store.decoder_state(), store.decoder_config, store.config)
        require_finite(store.planes[:keep], "the tri-planes", store.path / PLANES)
        small.planes[:] = store.planes[:keep]
        small.planes.flush()
        state = {k: v.half() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
        extra = {k: v for k, v in blob.items() if k not in EMA_KEYS}  # a student's ``distilled`` schedule
        write_ema(tmp / EMA_FILE, state, blob["config"], blob["store_manifest"], extra)
    return Path(out)


def model_config(unet_ckpt: str | Path) -> Config:
    """The resolved config a training run recorded in its ``ema.pt`` (sizes, sampler and render settings)."""
    return Config.from_dict(read_ema(unet_ckpt)["config"], source=f"{resolve_ema(unet_ckpt)}: config")
