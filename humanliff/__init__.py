"""HumanLiff toolkit: layer-wise 3D human generation with tri-plane diffusion.

``humanliff.Pipeline`` (generation), ``humanliff.fit`` and ``humanliff.train`` are loaded on first use:
importing ``humanliff`` (or ``humanliff.runtime``) stays light and pulls in no training code.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {"Pipeline": "humanliff.pipeline", "GenerationResult": "humanliff.generation_result",
         "fit": "humanliff.workflows", "train": "humanliff.workflows"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """``humanliff.Pipeline``, ``GenerationResult``, ``fit``, ``train``: imported when first used."""
    if name not in _LAZY:
        raise AttributeError(f"module 'humanliff' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
