"""In-memory form of one subject: cameras, world box and the decoded images and masks of its 4 layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from humanliff.data.smpl import CanonicalWarp

@dataclass
class SubjectData:
    """One subject, decoded once and kept in memory.

    ``bounds`` float32 ``[2, 3]`` world box (min row, max row, already padded); ``K [V, 3, 3]``,
    ``R [V, 3, 3]``, ``T [V, 3]`` float32 OpenCV world-to-camera; ``view_ids`` the dataset's view
    indices; ``images`` uint8 ``[4, V, H, W, 3]`` on black; ``masks`` bool ``[4, V, H, W]``.
    ``warp`` (TightCap with ``data.canonical``): maps world points to the canonical big pose, whose
    own box (``warp.bounds``) then normalizes the tri-plane coordinates.
    """

    name: str
    bounds: np.ndarray
    K: np.ndarray
    R: np.ndarray
    T: np.ndarray
    view_ids: list[int]
    images: np.ndarray
    masks: np.ndarray
    warp: CanonicalWarp | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return self.images.shape[2], self.images.shape[3]
