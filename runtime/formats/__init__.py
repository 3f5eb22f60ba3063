"""The registry of engine formats: one module per format, each holding one ``Format`` record.

``FORMATS`` maps names to records in preference order (the runtime tries them in this order); the
export's ``--formats`` choices, the manifest's file names and the engine classes all come from here.
"""

from __future__ import annotations

from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.formats import aoti, ep, onnx, tensorrt, torchscript
from humanliff.runtime.formats.base import Engine, EngineUnavailable, Format

FORMATS: dict[str, Format] = {f.name: f for f in sorted(
    (aoti.FORMAT, ep.FORMAT, onnx.FORMAT, tensorrt.FORMAT, torchscript.FORMAT), key=lambda f: f.rank)}
PREFERENCE = tuple(FORMATS)
"""Formats from fastest to most portable: what the runtime tries, in order."""


def get_format(name: str) -> Format:
    """The record of format ``name``; one-line error listing the known ones."""
    if name not in FORMATS:
        raise HumanLiffError(f"unknown engine format {name!r} (known: {', '.join(FORMATS)})")
    return FORMATS[name]


def artifact_name(network: str, fmt: str) -> str:
    """File name of ``network``'s engine file in format ``fmt`` (``unet.onnx``, ``decoder.ts``, ...)."""
    return get_format(fmt).file_name(network)


__all__ = ["FORMATS", "PREFERENCE", "Engine", "EngineUnavailable", "Format", "artifact_name", "get_format"]
