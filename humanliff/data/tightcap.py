"""TightCap layout (§1.2): one real image per view plus garment masks; layers 0-2 are synthesized from them
exactly as the original (§1.1), and the SMPL fit gives the world box and, if asked, the canonical warp."""

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
from humanliff.data.images import read_mask, read_pair, scale_intrinsics
from humanliff.data.smpl import CanonicalWarp, tightcap_bounds, tightcap_warp
from humanliff.data.synbody import view_file
from humanliff.data.types import SubjectData
from humanliff.errors import InputFileError

FULL = "person-top-bottom-shoes"
GARMENTS = ("top", "bottom", "shoes")
FOLDERS = (FULL, "person", *GARMENTS)
SKIN = (0.607186, 0.49289057, 0.43795943)
"""The skin colour the original paints where a removed garment overlapped the body (RGB in [0, 1])."""
REMOVED = (("top", "bottom", "shoes"), ("top", "shoes"), ("shoes",))
"""Garments removed to make layers 0, 1, 2 (layer 3 is the full image)."""
SMPL_FILE = Path(FULL) / "outputs_re_fitting" / "refit_smpl_2nd.npz"


def synthesize_layers(image: np.ndarray, full_mask: np.ndarray, body: np.ndarray,
                      garments: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The 4 layer images and masks of one view (§1.1).

    For layer L: zero the pixels of each removed garment outside the body mask; paint the skin colour where
    body + removed garment masks sum to 2 or more; zero outside the full mask; mask = nonzero pixels.

    Args:
        image: uint8 ``[H, W, 3]``; full_mask, body: bool ``[H, W]``; garments: ``top``, ``bottom``, ``shoes``
            bool ``[H, W]``.

    Returns:
        ``(images uint8 [4, H, W, 3], masks bool [4, H, W])``.
    """
    skin = np.round(np.asarray(SKIN) * 255.0).astype(np.uint8)
    images, masks = [], []
    for removed in REMOVED:
        layer = image.copy()
        for name in removed:
            layer[garments[name] & ~body] = 0
        overlap = body.astype(np.int32) + sum(garments[name].astype(np.int32) for name in removed)
        layer[overlap >= 2] = skin
        layer[~full_mask] = 0
        images.append(layer)
        masks.append(layer.sum(axis=-1) != 0)
    images.append(np.where(full_mask[..., None], image, 0).astype(np.uint8))
    masks.append(full_mask)
    return np.stack(images), np.stack(masks)


def _read_view(subject_dir: Path, view: int, scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """One view's 4 layers, stacked ``[4, H, W, 3]``, ``[4, H, W]``."""
    image, full_mask = read_pair(view_file(subject_dir / FULL, "img", view),
                                 view_file(subject_dir / FULL, "mask", view), scaling)
    masks = {name: read_mask(view_file(subject_dir / name, "mask", view), scaling)
             for name in ("person", *GARMENTS)}
    for name, mask in masks.items():
        if mask.shape != full_mask.shape:
            raise InputFileError(view_file(subject_dir / name, "mask", view),
                                 f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {full_mask.shape[1]}x"
                                 f"{full_mask.shape[0]}")
    return synthesize_layers(image, full_mask, masks.pop("person"), masks)


def subject_geometry(subject_dir: Path, smpl_dir: str | Path, canonical: bool
                     ) -> tuple[np.ndarray, CanonicalWarp | None]:
    """World box (``bounds.json`` if present, else the padded posed SMPL box); the warp if ``canonical``."""
    warp = tightcap_warp(subject_dir / SMPL_FILE, smpl_dir) if canonical else None
    if (subject_dir / BOUNDS_FILE).is_file():
        return read_bounds(subject_dir / BOUNDS_FILE), warp
    warp_for_box = warp or tightcap_warp(subject_dir / SMPL_FILE, smpl_dir)
    return tightcap_bounds(warp_for_box), warp


def load_subject(subject_dir: str | Path, image_scaling: float = 1.0, smpl_dir: str | Path = "assets/models",
                 canonical: bool = False, problems: list[str] | None = None) -> SubjectData | None:
    """Read one TightCap subject; ``problems`` as ``synbody.load_subject``."""
    subject_dir = Path(subject_dir)
    count = len(problems) if problems is not None else 0
    attempt(problems, check_folders, subject_dir, FOLDERS)
    present = [name for name in FOLDERS if (subject_dir / name).is_dir()]
    cameras = attempt(problems, read_cameras, subject_dir / FULL / "cameras.json")
    views = attempt(problems, common_views, [subject_dir / name / "mask" for name in present])
    geometry = attempt(problems, subject_geometry, subject_dir, smpl_dir, canonical)
    if views is None:
        return None
    cameras_path = subject_dir / FULL / "cameras.json"
    K_R_T = attempt(problems, cameras_for, cameras_path, cameras, views) if cameras else None
    if len(present) < len(FOLDERS):
        return None
    per_view = attempt_all(problems, _read_view, [(subject_dir, v, image_scaling) for v in views])
    if problems is not None and len(problems) > count:
        return None
    pairs = [(view[0][layer], view[1][layer]) for layer in range(4) for view in per_view]
    stacked = attempt(problems, stack_views, subject_dir, pairs, 4)
    if stacked is None or K_R_T is None or geometry is None:
        return None
    (images, masks), (K, R, T), (bounds, warp) = stacked, K_R_T, geometry
    K = scale_intrinsics(K, image_scaling)
    return SubjectData(subject_dir.name, bounds, K, R, T, views, images, masks, warp)
