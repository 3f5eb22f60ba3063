"""SynBody layout (§1.2): per subject ``cameras.json``, the 4 layer folders with ``img/camera%04d/0000.jpg``
and ``mask/camera%04d/0000.png``, and ``bounds.json`` or ``smplx.npz`` for the world box."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from humanliff.data.bounds import BOUNDS_FILE, read_bounds
from humanliff.data.files import (
    attempt,
    attempt_all,
    cameras_for,
    check_folders,
    common_views,
    read_cameras,
    stack_views,
)
from humanliff.data.images import read_pair, scale_intrinsics
from humanliff.data.smpl import smplx_bounds
from humanliff.data.types import SubjectData
from humanliff.errors import InputFileError
from humanliff.runtime.layers import LAYER_NAMES, NUM_LAYERS

POSE = 0
"""Only pose 0000 is used, as the original."""


def subject_bounds(subject_dir: Path, smpl_dir: str | Path) -> np.ndarray:
    """``bounds.json`` when present, else the padded SMPL-X box of ``smplx.npz``."""
    if (subject_dir / BOUNDS_FILE).is_file():
        return read_bounds(subject_dir / BOUNDS_FILE)
    if (subject_dir / "smplx.npz").is_file():
        return smplx_bounds(subject_dir / "smplx.npz", smpl_dir)
    raise InputFileError(subject_dir / BOUNDS_FILE, "missing (and no smplx.npz to compute the box from)")


def view_file(layer_dir: Path, kind: str, view: int) -> Path:
    """``<layer>/img/camera%04d/0000.jpg`` (kind ``img``) or ``<layer>/mask/camera%04d/0000.png``."""
    return layer_dir / kind / f"camera{view:04d}" / f"{POSE:04d}.{'jpg' if kind == 'img' else 'png'}"


def load_subject(subject_dir: str | Path, image_scaling: float = 1.0, smpl_dir: str | Path = "assets/models",
                 problems: list[str] | None = None) -> SubjectData | None:
    """Read one SynBody subject (K scaled with the images).

    Without ``problems`` the first problem raises ``InputFileError``; with a list, every problem is
    recorded there and None is returned if there was any.
    """
    subject_dir = Path(subject_dir)
    count = len(problems) if problems is not None else 0
    attempt(problems, check_folders, subject_dir, LAYER_NAMES)
    layers = [subject_dir / name for name in LAYER_NAMES if (subject_dir / name).is_dir()]
    cameras = attempt(problems, read_cameras, subject_dir / "cameras.json")
    views = attempt(problems, common_views, [layer / "img" for layer in layers])
    bounds = attempt(problems, subject_bounds, subject_dir, smpl_dir)
    if views is None:
        return None
    K_R_T = attempt(problems, cameras_for, subject_dir / "cameras.json", cameras, views) if cameras else None
    jobs = [(view_file(layer, "img", v), view_file(layer, "mask", v), image_scaling)
            for layer in layers for v in views]
    pairs = attempt_all(problems, read_pair, jobs)
    if problems is not None and len(problems) > count:
        return None
    stacked = attempt(problems, stack_views, subject_dir, pairs, NUM_LAYERS)
    if stacked is None or K_R_T is None or bounds is None:
        return None
    (images, masks), (K, R, T) = stacked, K_R_T
    K = scale_intrinsics(K, image_scaling)
    return SubjectData(subject_dir.name, bounds, K, R, T, views, images, masks)
