"""The per-subject world box: padding as the original, and the ``bounds.json`` file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from humanliff.errors import InputFileError

BOUNDS_FILE = "bounds.json"
SYNBODY_Y_PAD = 0.10
"""SynBody pads the SMPL-X box by 0.05 on every side, plus 0.05 more on y (0.10 in all on each y side)."""
TIGHTCAP_Y_PAD = 0.15
"""TightCap pads y by 0.15 on each side (and 0.05 on x and z)."""


def pad_box(points: np.ndarray, y_pad: float, pad: float = 0.05) -> np.ndarray:
    """Axis-aligned box of ``points [N, 3]`` (metres), grown by ``pad`` on x, z and ``y_pad`` on y.

    Returns float32 ``[2, 3]`` (min row, max row).
    """
    grow = np.array([pad, y_pad, pad])
    return np.stack([points.min(axis=0) - grow, points.max(axis=0) + grow]).astype(np.float32)


def write_bounds(path: str | Path, bounds: np.ndarray) -> None:
    """Write ``{"min": [x, y, z], "max": [x, y, z]}``."""
    Path(path).write_text(json.dumps({"min": [float(v) for v in bounds[0]],
                                      "max": [float(v) for v in bounds[1]]}) + "\n")


def read_bounds(path: str | Path) -> np.ndarray:
    """Read a ``bounds.json`` into float32 ``[2, 3]``; raises ``InputFileError`` on bad content."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        bounds = np.array([data["min"], data["max"]], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(path, f"not a bounds file with 'min' and 'max' lists of 3 numbers ({exc})"
                             ) from exc
    if bounds.shape != (2, 3) or not np.all(bounds[1] > bounds[0]):
        raise InputFileError(path, "'min' and 'max' must be 3 numbers each with min < max")
    return bounds
