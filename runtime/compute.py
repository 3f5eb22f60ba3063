"""Where and in what precision networks compute: the default device, the precision names, bf16 autocast.

torch is imported inside the functions, so that the config (and the CLI's ``--help``) can read
``PRECISIONS`` without importing torch.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("bf16", "fp32")
"""Compute precisions of the UNet, the decoder and fitting (``sample.precision``, ``train.precision``,
``fit.precision``); the CPU always runs fp32."""


def default_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None picks CUDA when available, else the CPU."""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` (CUDA or CPU) for ``precision='bf16'``, else a no-op."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
