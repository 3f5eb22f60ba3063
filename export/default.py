"""Artifacts of the default model, exported once per device type into a cache folder for ``humanliff run``."""

from __future__ import annotations

from pathlib import Path

import torch

from humanliff.export.artifacts import export_artifacts
from humanliff.pretrained import default_model
from humanliff.runtime.compute import default_device
from humanliff.runtime.formats.base import cache_dir
from humanliff.runtime.manifest import sha256_file

DEFAULT_DTYPE = {"cuda": "bf16", "cpu": "fp32"}
"""Compute dtype of the default model's engines per device type."""


def default_artifacts(device: str | torch.device | None = None, distilled: bool = False) -> Path:
    """The default model's artifacts (``distilled``: its shipped student's) for ``device``'s type, exported on
    first use (``--formats auto``), keyed by the weights' hash and the device type."""
    device = default_device(device)
    ema, store = default_model(distilled)
    folder = cache_dir() / f"default{'-distilled' if distilled else ''}-{sha256_file(ema)[:12]}-{device.type}"
    if not (folder / "manifest.json").is_file():
        export_artifacts(ema, store, folder, "auto", batch=1, dtype=DEFAULT_DTYPE[device.type], device=device)
    return folder
