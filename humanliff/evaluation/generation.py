"""Generation evaluation (``humanliff eval gen``): how good generated humans are, beside the data's ceiling.

A generation folder (``generate`` or ``run``: its ``planes.npz``) and the reference tri-plane store (the
training data) are rendered the same way (``views`` orbit cameras around each box at ``size`` pixels,
the store's decoder) and sampled on the mesh code's density grid (64^3); every metric of
``GENERATION_METRICS`` is computed per layer on the generation and, as the ceiling, on the store's own
fitted planes (the set metrics compare the reference with itself there). The head band is the top of the
box, normalized y >= ``HEAD_BAND``: no garment of the synthetic data reaches above y = 0.68 (the highest
garment point of 500 random figures), so the band holds only head and hair.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from humanliff.config import RenderConfig
from humanliff.errors import InputFileError
from humanliff.evaluation.inception import default_weights, inception_features, load_inception, missing_weights_hint
from humanliff.evaluation.metrics import GENERATION_METRICS, HumanLayer, LayerSet
from humanliff.evaluation.recon import box_region
from humanliff.io import atomic_path
from humanliff.outputs.images import contact_sheet, save_png
from humanliff.outputs.writer import render_occupancy
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.compute import default_device
from humanliff.runtime.field import make_field
from humanliff.runtime.layers import LAYER_TITLES
from humanliff.runtime.mesh import DEFAULT_LEVEL, density_grid
from humanliff.runtime.occupancy import lookup
from humanliff.runtime.render import render_image
from humanliff.store import TriplaneStore, open_store

log = logging.getLogger(__name__)

HEAD_BAND = 0.75
"""Normalized box height (-1 bottom, 1 top) above which the head band lies (garments end below 0.68)."""
GRID = 64
"""Density grid points per side (the mesh code's grid)."""
PCA_COMPONENTS = 64
"""At most this many principal components per layer (at most the reference's subjects - 1)."""
PICTURE_ROWS = 4
GENERATION_FILES = ("metrics.json", "renders.png")
"""What ``evaluate_generation`` writes into its folder (the picture first: ``metrics.json`` marks a finished run)."""


@dataclass
class PlaneSet:
    """Tri-planes to evaluate: ``planes [L, N, C, R, R]`` float32 of ``layers``, each human's box ``[N, 2, 3]``."""

    planes: np.ndarray
    layers: list[int]
    bounds: np.ndarray


def read_generation(folder: str | Path) -> PlaneSet:
    """The planes of a generation folder (``planes.npz``: planes, layers, bounds); one-line errors."""
    path = Path(folder) / "planes.npz"
    if not path.is_file():
        raise InputFileError(path, "no planes (not a folder written by generate or run)")
    try:
        with np.load(path) as data:
            planes, layers, bounds = data["planes"], data["layers"], data["bounds"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputFileError(path, f"not a generation's planes.npz ({exc.__class__.__name__}: {exc})") from None
    if planes.ndim != 5 or len(layers) != planes.shape[0] or bounds.shape != (2, 3):
        raise InputFileError(path, f"planes {list(planes.shape)}, layers {list(layers)}, bounds "
                                   f"{list(bounds.shape)} do not agree ([L, N, C, R, R], [L], [2, 3])")
    n = planes.shape[1]
    return PlaneSet(planes.astype(np.float32), [int(k) for k in layers], np.broadcast_to(bounds, (n, 2, 3)))


def reference_set(store: TriplaneStore, layers: list[int]) -> PlaneSet:
    """The store's fitted planes of ``layers`` as a ``PlaneSet`` (each subject in its own box)."""
    planes = np.stack([np.asarray(store.planes[:, k], np.float32) for k in layers])
    return PlaneSet(planes, layers, store.bounds)


def check_compatible(gen: PlaneSet, store: TriplaneStore, gen_path: Path) -> None:
    """The generation's planes must have the store's channels and resolution, and two humans at least."""
    channels, resolution = gen.planes.shape[2], gen.planes.shape[-1]
    if (channels, resolution) != (store.channels, store.resolution):
        raise InputFileError(store.path, f"tri-planes are {store.channels}x{store.resolution}^2 but the "
                                         f"generation {gen_path} has {channels}x{resolution}^2")
    if gen.planes.shape[1] < 2 or len(store.subjects) < 2:
        raise InputFileError(gen_path, "the set metrics need two humans and two reference subjects at least")


def pca_basis(reference: np.ndarray, components: int = PCA_COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and orthonormal basis ``[P, D]`` of flattened planes ``[N, D]`` (SVD; P <= N - 1)."""
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[:max(1, min(components, len(reference) - 1))]


class _Renderer:
    """Renders and samples one tri-plane the same way for both sets."""

    def __init__(self, decoder: torch.nn.Module, render_cfg: RenderConfig, views: int, size: int,
                 device: torch.device) -> None:
        self.decoder, self.cfg, self.views, self.size, self.device = decoder, render_cfg, views, size, device

    @torch.no_grad()
    def human(self, planes: np.ndarray, bounds: np.ndarray) -> HumanLayer:
        """One tri-plane ``[C, R, R]`` in box ``bounds [2, 3]``: density grid, renders, head band."""
        p = torch.from_numpy(planes)[None].to(self.device)
        field = make_field(p, self.decoder, precision="fp32", fused=self.cfg.fused_kernel)
        cfg = self.cfg
        occupancy = render_occupancy(field, cfg, self.device)

        def rendered_density(points: torch.Tensor) -> torch.Tensor:
            sigma = torch.nn.functional.softplus(field(points[None], None)[1][0, :, 0])
            return sigma if occupancy is None else sigma * lookup(occupancy, points[None])[0]

        density = density_grid(rendered_density, GRID, device=self.device)
        box = torch.tensor(np.array(bounds), dtype=torch.float32)
        K, R, T = orbit_cameras(box, self.views, self.size)
        renders = np.stack([render_image(field, K[v].to(self.device), R[v].to(self.device), T[v].to(self.device),
                                         self.size, self.size, box.to(self.device), cfg,
                                         occupancy=occupancy)["rgb"].float().cpu().numpy()
                            for v in range(self.views)])
        head_box = box.clone()
        head_box[0, 1] = box[0, 1] + (HEAD_BAND + 1.0) / 2.0 * (box[1, 1] - box[0, 1])
        head = np.stack([box_region(K[v], R[v], T[v], self.size, self.size, head_box.numpy())
                         for v in range(self.views)])
        return HumanLayer(density, density > DEFAULT_LEVEL, renders, head)


def _score(plane_set: PlaneSet, renderer: _Renderer, label: str, progress: bool
           ) -> Iterator[tuple[int, dict[str, list[float | None]], np.ndarray]]:
    """Per layer: ``(layer, per-human metric values [N] (None where one does not apply), renders [N, V, S, S,
    3])``, layers in order."""
    below: list[HumanLayer | None] = [None] * plane_set.planes.shape[1]
    for li, layer in enumerate(plane_set.layers):
        values: dict[str, list[float | None]] = {name: [] for name, m in GENERATION_METRICS.items() if m.human}
        renders = []
        for i in tqdm(range(plane_set.planes.shape[1]), desc=f"{label} layer {layer}", disable=not progress,
                      leave=False):
            now = renderer.human(plane_set.planes[li, i], plane_set.bounds[i])
            for name, metric in GENERATION_METRICS.items():
                if metric.human:
                    values[name].append(metric.human(now, below[i]))
            below[i] = now if li + 1 < len(plane_set.layers) and plane_set.layers[li + 1] == layer + 1 else None
            renders.append(now.renders)
        yield layer, values, np.stack(renders)


def evaluate_generation(gen_dir: str | Path, store_path: str | Path, out_dir: str | Path, *,
                        render_cfg: RenderConfig, inception: str | Path | None = None, views: int = 4,
                        size: int = 64, device: torch.device | str | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Score a generation folder against a tri-plane store; writes ``metrics.json`` and ``renders.png``.

    Returns ``{"layers": {k: {"generated": {metric: value}, "ceiling": {...}}}, "per_human": {k: {metric:
    [N values, None where it does not apply]}}, "humans", "subjects", "views", "size", "head_band", "fid":
    "computed" | reason}``; a metric is absent where it does not apply (containment and drift at the first
    layer, FID / KID without the Inception weights). ``per_human`` holds the generated humans' values of the
    per-human metrics, so two generations of the same seeds can be compared human by human.
    """
    device = default_device(device)
    gen_path = Path(gen_dir)
    gen = read_generation(gen_path)
    store = open_store(store_path)
    check_compatible(gen, store, gen_path)
    ref = reference_set(store, gen.layers)
    weights = Path(inception) if inception else default_weights()
    net = None
    if inception or weights.is_file():
        net = load_inception(weights, device)
    else:
        log.warning(missing_weights_hint(weights))
    renderer = _Renderer(store.load_decoder(device), render_cfg, views, size, device)
    scored = {name: {layer: (values, renders) for layer, values, renders in _score(s, renderer, name, progress)}
              for name, s in (("generated", gen), ("ceiling", ref))}
    result: dict[str, Any] = {"layers": {}, "humans": int(gen.planes.shape[1]), "subjects": len(store.subjects),
                              "views": views, "size": size, "head_band": HEAD_BAND,
                              "fid": "computed" if net else missing_weights_hint(weights), "per_human": {}}
    for li, layer in enumerate(gen.layers):
        flat = {name: s.planes[li].reshape(s.planes.shape[1], -1).astype(np.float64)
                for name, s in (("generated", gen), ("ceiling", ref))}
        mean, basis = pca_basis(flat["ceiling"])
        sets = {name: LayerSet((x - mean) @ basis.T, None if net is None else inception_features(
                    net, scored[name][layer][1].reshape(-1, size, size, 3))) for name, x in flat.items()}
        entry = result["layers"][str(layer)] = {}
        result["per_human"][str(layer)] = {m: v for m, v in scored["generated"][layer][0].items()
                                           if any(x is not None for x in v)}
        for name in ("generated", "ceiling"):
            row = {m: float(np.mean(found)) for m, v in scored[name][layer][0].items()
                   if (found := [x for x in v if x is not None])}
            for metric_name, metric in GENERATION_METRICS.items():
                value = metric.pair(sets[name], sets["ceiling"]) if metric.pair else None
                if value is not None:
                    row[metric_name] = value
            entry[name] = {m: row[m] for m in GENERATION_METRICS if m in row}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_picture(out / GENERATION_FILES[1], scored, gen.layers)
    with atomic_path(out / GENERATION_FILES[0]) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def _write_picture(path: Path, scored: dict[str, dict[int, tuple[Any, np.ndarray]]], layers: list[int]) -> Path:
    """Front views: the first generated humans, then the first reference subjects (rows) by layer."""
    rows, titles = [], []
    for name, label in (("generated", "gen"), ("ceiling", "ref")):
        count = min(PICTURE_ROWS, len(scored[name][layers[0]][1]))
        rows += [[scored[name][k][1][i, 0] for k in layers] for i in range(count)]
        titles += [f"{label} {i}" for i in range(count)]
    return save_png(path, contact_sheet(np.asarray(rows), [LAYER_TITLES[k] for k in layers], titles))


def format_table(result: dict[str, Any]) -> list[str]:
    """Lines ``layer k generated|ceiling: metric value, ...`` of an ``evaluate_generation`` result."""
    return [f"layer {layer} {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items())
            for layer, entry in result["layers"].items() for name, row in entry.items()]
