"""Artifacts of the default model, exported once into a cache folder for ``humanliff run``."""

from __future__ import annotations

import os
from pathlib import Path

from humanliff.export.artifacts import export_artifacts
from humanliff.pretrained import default_model
from humanliff.runtime.manifest import sha256_file


def cache_dir() -> Path:
    """``$HUMANLIFF_CACHE`` or ``~/.cache/humanliff``."""
    return Path(os.environ.get("HUMANLIFF_CACHE", Path.home() / ".cache" / "humanliff"))


def default_artifacts(formats: tuple[str, ...] = ("ep", "onnx")) -> Path:
    """The default model's artifacts folder, exported on first use (keyed by the weights' hash)."""
    ema, store = default_model()
    folder = cache_dir() / f"default-{sha256_file(ema)[:12]}"
    if not (folder / "manifest.json").is_file():
        export_artifacts(ema, store, folder, formats, batch=1, dtype="fp32", device="cpu")
    return folder
