"""Metrics: reconstruction's image metrics and the table of generation metrics ``eval gen`` loops over.

Reconstruction (``RECON_METRICS``), as the original (seed-architecture §2.8): PSNR over the pixels of a region mask (the
projected subject box), SSIM on the region's bounding rectangle. LPIPS needs the ``lpips`` package with its
weights already on this machine; without them it is skipped, never downloaded.

Generation (``GENERATION_METRICS``): per-human metrics of one layer given the layer below (containment,
identity drift, haze), and set metrics between a generated and a reference set of one layer (Fréchet
distance and k-NN precision / recall of tri-planes in a PCA basis, FID and KID of renders).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import cdist
from skimage.metrics import structural_similarity

from humanliff.runtime.occupancy import largest_component

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


ImageMetric = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]
"""``metric(pred [H,W,3], gt [H,W,3] float in [0, 1], region [H,W] bool | None) -> float``."""


@dataclass(frozen=True)
class ReconMetric:
    """One row of ``RECON_METRICS``: what it measures, which way is better, and how to get it here."""

    doc: str
    better: str
    """``lower`` or ``higher``."""
    load: Callable[[], ImageMetric | None]
    """The metric, or None where it cannot run on this machine (the reason is logged)."""


RECON_METRICS: dict[str, ReconMetric] = {
    "psnr": ReconMetric("PSNR (dB) over the region's pixels", "higher", lambda: psnr),
    "ssim": ReconMetric("SSIM on the region's bounding rectangle", "higher", lambda: ssim),
    "lpips": ReconMetric("LPIPS-VGG on the region's bounding box (needs lpips and its weights)", "lower",
                         Lpips.load),
}
"""The reconstruction metrics by name; ``eval recon`` computes each available one per held-out view."""


@dataclass
class HumanLayer:
    """One human (or reference subject) at one layer, as the per-human generation metrics read it."""

    density: np.ndarray
    """float32 ``[G, G, G]`` density as rendered (the mesh code's grid over the box)."""
    occupied: np.ndarray
    """bool ``[G, G, G]``: density above the mesh iso-level."""
    renders: np.ndarray
    """float32 ``[V, S, S, 3]`` in [0, 1], from fixed cameras around the box."""
    head: np.ndarray
    """bool ``[V, S, S]``: pixels whose rays cross the head band of the box."""


@dataclass
class LayerSet:
    """A set (generated or reference) at one layer, as the set metrics read it."""

    pca: np.ndarray
    """float64 ``[N, P]``: tri-planes in the layer's PCA basis (fitted on the reference)."""
    features: np.ndarray | None
    """float64 ``[N * V, 2048]`` Inception features of the renders, or None without the weights."""


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]`` (N, M >= 2).

    ``|mu_a - mu_b|^2 + Tr S_a + Tr S_b - 2 Tr sqrt(S_a S_b)`` with the sample covariances
    ``S = X^T X / (n - 1)`` of the centred sets: the eigenvalues of ``S_a S_b`` are the squared singular
    values of ``A B^T / sqrt((N - 1)(M - 1))``, so the trace of the root is that matrix's nuclear norm,
    exact and cheap when N, M << D (no D x D matrix square root).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs two samples a set at least, got {len(a)} and {len(b)}")
    ca, cb = a - a.mean(0), b - b.mean(0)
    scale_a, scale_b = 1.0 / (len(a) - 1), 1.0 / (len(b) - 1)
    root_trace = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() * np.sqrt(scale_a * scale_b)
    value = (((a.mean(0) - b.mean(0)) ** 2).sum() + scale_a * (ca**2).sum() + scale_b * (cb**2).sum()
             - 2.0 * root_trace)
    return float(max(value, 0.0))


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID (Bińkowski et al. 2018): the unbiased MMD^2 with kernel ``(x.y / D + 1)^3`` between ``a [N, D]``
    and ``b [M, D]``, averaged over ``subsets`` random subsets of ``min(subset_size, N, M)`` rows."""
    n = min(subset_size, len(a), len(b))
    if n < 2:
        raise ValueError(f"KID needs two samples a set at least, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = ((p @ q.T / a.shape[1] + 1.0) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        pairs = n * (n - 1)
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / pairs - 2.0 * kxy.mean())
    return float(np.mean(values))


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake [M, D]`` against ``real [N, D]``.

    Each set's manifold is the union of balls around its samples with radius the distance to the k-th
    nearest other sample (k lowered to the set size - 1); precision is the share of fakes inside the real
    manifold, recall the share of reals inside the fake one.
    """
    def radii(x: np.ndarray) -> np.ndarray:
        d = np.sort(cdist(x, x), axis=1)
        return d[:, min(k, len(x) - 1)]

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"precision / recall need two samples a set at least, got {len(real)} and {len(fake)}")
    fake_to_real = cdist(fake, real)
    real_to_fake = fake_to_real.T
    precision = float((fake_to_real <= radii(real)[None, :]).any(axis=1).mean())
    recall = float((real_to_fake <= radii(fake)[None, :]).any(axis=1).mean())
    return precision, recall


def containment(now: HumanLayer, below: HumanLayer | None) -> float | None:
    """Share of layer k-1's occupied cells still occupied in layer k (garments add; the body stays)."""
    if below is None or not below.occupied.any():
        return None
    return float((now.occupied & below.occupied).sum() / below.occupied.sum())


def drift_psnr(now: HumanLayer, below: HumanLayer | None) -> float | None:
    """PSNR (dB) between the layer k and layer k-1 renders inside the head band, over the views."""
    if below is None:
        return None
    views = [psnr(a, b, region) for a, b, region in zip(now.renders, below.renders, now.head, strict=True)
             if region.any()]
    return float(np.mean(views)) if views else None


def haze(now: HumanLayer, below: HumanLayer | None) -> float | None:
    """Share of the density mass outside the largest connected occupied component (floaters, fog)."""
    total = float(now.density.sum(dtype=np.float64))
    if total <= 0.0:
        return None
    inside = float(now.density[largest_component(now.occupied)].sum(dtype=np.float64))
    return 1.0 - inside / total


def _fd(gen: LayerSet, ref: LayerSet) -> float:
    return frechet_distance(gen.pca, ref.pca)


def _features(metric: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[LayerSet, LayerSet], float | None]:
    return lambda gen, ref: None if gen.features is None or ref.features is None else metric(gen.features,
                                                                                             ref.features)


@dataclass(frozen=True)
class GenerationMetric:
    """One row of ``GENERATION_METRICS``: per human (``human``) or per set (``pair``), and which way is better."""

    doc: str
    better: str
    """``lower`` or ``higher``."""
    human: Callable[[HumanLayer, HumanLayer | None], float | None] | None = None
    pair: Callable[[LayerSet, LayerSet], float | None] | None = None


GENERATION_METRICS: dict[str, GenerationMetric] = {
    "fd_pca": GenerationMetric("Fréchet distance of tri-planes in the reference PCA basis", "lower", pair=_fd),
    "precision": GenerationMetric("k-NN precision (k=3) of tri-planes in the PCA basis", "higher",
                                  pair=lambda g, r: knn_precision_recall(r.pca, g.pca)[0]),
    "recall": GenerationMetric("k-NN recall (k=3) of tri-planes in the PCA basis", "higher",
                               pair=lambda g, r: knn_precision_recall(r.pca, g.pca)[1]),
    "fid": GenerationMetric("FID of the renders (pt_inception-2015-12-05)", "lower",
                            pair=_features(frechet_distance)),
    "kid": GenerationMetric("KID of the renders (pt_inception-2015-12-05)", "lower",
                            pair=_features(kernel_distance)),
    "containment": GenerationMetric("share of layer k-1's occupied cells occupied in layer k", "higher",
                                    human=containment),
    "drift_psnr": GenerationMetric("PSNR (dB) of layer k against layer k-1 in the head band", "higher",
                                   human=drift_psnr),
    "haze": GenerationMetric("share of density mass outside the largest connected component", "lower",
                             human=haze),
}
"""The generation metrics by name; ``eval gen`` computes each per layer on the generation and the reference."""
