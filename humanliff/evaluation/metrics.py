"""Image metrics of reconstruction evaluation: PSNR and SSIM (scikit-image), LPIPS when available.

As the original (seed-architecture §2.8): PSNR over the pixels of a region mask (the projected subject
box), SSIM on the region's bounding rectangle. LPIPS needs the ``lpips`` package with its weights
already on this machine; without them it is skipped, never downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

log = logging.getLogger(__name__)


def _check(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"images must both be [H, W, 3], got {pred.shape} and {gt.shape}")
    if region is None:
        return np.ones(pred.shape[:2], bool)
    if region.shape != pred.shape[:2]:
        raise ValueError(f"region must be [H, W] = {pred.shape[:2]}, got {region.shape}")
    if not region.any():
        raise ValueError("region is empty")
    return region.astype(bool)


def psnr(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of float images ``[H, W, 3]`` in [0, 1] over the pixels of ``region`` ``[H, W]`` bool."""
    region = _check(pred, gt, region)
    mse = float(np.mean((pred[region].astype(np.float64) - gt[region].astype(np.float64)) ** 2))
    return float(-10.0 * np.log10(max(mse, 1e-10)))


def crop_box(region: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the bounding rectangle of ``region`` ``[H, W]`` bool (non-empty)."""
    rows = np.flatnonzero(region.any(1))
    cols = np.flatnonzero(region.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def ssim(pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
    """SSIM (scikit-image, colour, data range 1) of ``[H, W, 3]`` images on ``region``'s bounding box."""
    region = _check(pred, gt, region)
    rows, cols = crop_box(region)
    a, b = pred[rows, cols], gt[rows, cols]
    win = min(7, *a.shape[:2])
    win -= 1 - win % 2
    if win < 3:
        raise ValueError(f"region's bounding box {a.shape[:2]} is too small for SSIM (3x3 at least)")
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0, win_size=win))


class Lpips:
    """LPIPS-VGG distance (``lpips`` package) on a region's bounding box; ``load()`` is None without it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @classmethod
    def load(cls) -> Lpips | None:
        """The metric if ``lpips`` and torchvision's VGG16 weights are on this machine, else None (logged)."""
        vgg = Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
        if importlib.util.find_spec("lpips") is None:
            log.info("LPIPS skipped: the 'lpips' package is not installed")
            return None
        if not vgg.is_file():
            log.info("LPIPS skipped: VGG16 weights not found at %s (never downloaded here)", vgg)
            return None
        import lpips

        return cls(lpips.LPIPS(net="vgg", verbose=False).eval())

    @torch.no_grad()
    def __call__(self, pred: np.ndarray, gt: np.ndarray, region: np.ndarray | None = None) -> float:
        """LPIPS of float ``[H, W, 3]`` images in [0, 1] (scaled to [-1, 1]) on ``region``'s bounding box."""
        rows, cols = crop_box(_check(pred, gt, region))
        a, b = (torch.from_numpy(np.ascontiguousarray(img[rows, cols], np.float32)).permute(2, 0, 1)[None]
                for img in (pred, gt))
        return float(self.model(a * 2 - 1, b * 2 - 1).item())
