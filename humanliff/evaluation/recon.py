"""Reconstruction evaluation and tri-plane pictures: render stored tri-planes and compare with held-out views.

``evaluate_recon`` renders each subject's held-out views (``data.holdout_every``: views never used by
``fit``) for every layer and reports PSNR and SSIM per layer (LPIPS when available) over the pixels whose
rays cross the subject box (the original's ``mask_at_box``), plus a side-by-side PNG.
``render_triplane`` renders one stored tri-plane from given or orbiting cameras.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from humanliff.config import Config
from humanliff.data.files import cameras_for, read_cameras
from humanliff.data.loader import load_dataset, split_views
from humanliff.errors import HumanLiffError
from humanliff.evaluation.metrics import RECON_METRICS
from humanliff.io import atomic_path
from humanliff.outputs.images import contact_sheet, save_png, view_grid
from humanliff.outputs.video import write_video
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.compute import default_device
from humanliff.runtime.field import Field, make_field
from humanliff.runtime.layers import LAYER_NAMES, NUM_LAYERS
from humanliff.runtime.occupancy import build_occupancy
from humanliff.runtime.rays import box_near_far, camera_rays
from humanliff.runtime.render import render_views
from humanliff.store import TriplaneStore, open_store, parse_triplane_ref

log = logging.getLogger(__name__)
RECON_FILES = ("metrics.json", "side_by_side.png")
"""What ``evaluate_recon`` writes into its folder (the picture first: ``metrics.json`` marks a finished run)."""


def triplane_field(store: TriplaneStore, decoder: torch.nn.Module, subject: str | int, layer: int,
                   cfg: Config, device: torch.device) -> tuple[Field, torch.Tensor, torch.Tensor | None]:
    """Field of one stored tri-plane, its world box ``[2, 3]``, an occupancy grid ``[1, G, G, G]`` or None."""
    planes = store.layer(subject, layer, device)[None]
    field = make_field(planes, decoder, precision=cfg.sample.precision if device.type == "cuda" else "fp32",
                       fused=cfg.render.fused_kernel)
    occupancy = None
    if cfg.render.occupancy_resolution > 0:
        occupancy = build_occupancy(field, cfg.render.occupancy_resolution, cfg.render.occupancy_threshold,
                                    largest=cfg.render.occupancy_largest, device=device)
    return field, store.subject_bounds(subject).to(device), occupancy


def box_region(K: np.ndarray, R: np.ndarray, T: np.ndarray, height: int, width: int,
               bounds: np.ndarray) -> np.ndarray:
    """Pixels whose rays cross the box ``[2, 3]`` (the original's ``mask_at_box``): bool ``[H, W]``."""
    origins, dirs = camera_rays(*(torch.from_numpy(np.asarray(x)) for x in (K, R, T)), height, width)
    return box_near_far(origins, dirs, torch.from_numpy(np.asarray(bounds)))[2].numpy()


def evaluate_recon(cfg: Config, store_path: str | Path, out_dir: str | Path, subjects: Sequence[str] = (),
                   max_views: int = 0, device: torch.device | None = None) -> dict:
    """Held-out view metrics of a store's tri-planes against ``cfg.data``; writes ``metrics.json`` and PNGs.

    Args:
        store_path: tri-plane store (``fit`` output). Its subjects found in the dataset are evaluated
            (or only ``subjects``).
        out_dir: receives ``metrics.json`` and ``side_by_side.png`` (rows: layers; columns: ground truth,
            reconstruction, of the first subject's first held-out view).
        max_views: held-out views per subject and layer (0: all).

    Returns:
        ``{"layers": {"0": {"psnr", "ssim"[, "lpips"]}, ...}, "subjects": {name: {layer: {...}}},
        "views": n}``.
    """
    device = default_device(device)
    store = open_store(store_path)
    decoder = store.load_decoder(device)
    dataset = {s.name: s for s in load_dataset(cfg.data)}
    names = list(subjects) or [n for n in store.subjects if n in dataset]
    missing = [n for n in names if n not in dataset or n not in store.subjects]
    if not names or missing:
        raise HumanLiffError(f"{store.path}: no subjects to evaluate in common with {cfg.data.root}"
                             + (f" (missing: {', '.join(missing[:5])})" if missing else ""))
    metrics = {key: fn for key, row in RECON_METRICS.items() if (fn := row.load()) is not None}
    scores: dict[str, dict[int, dict[str, list[float]]]] = {}
    picture: list[list[np.ndarray]] = []
    n_views = 0
    for name in tqdm(names, desc="eval", unit="subject"):
        subject = dataset[name]
        _, held = split_views(len(subject.view_ids), cfg.data.holdout_every)
        if len(held) == 0:
            raise HumanLiffError(f"{cfg.data.root}: no held-out views (data.holdout_every="
                                 f"{cfg.data.holdout_every} with {len(subject.view_ids)} views)")
        held = held[:max_views] if max_views > 0 else held
        n_views = len(held)
        h, w = subject.image_size
        K, R, T = (torch.from_numpy(x[held]) for x in (subject.K, subject.R, subject.T))
        bounds = store.bounds[store.index(name)]
        regions = [box_region(subject.K[v], subject.R[v], subject.T[v], h, w, bounds) for v in held]
        scores[name] = {}
        for layer in range(NUM_LAYERS):
            field, box, occupancy = triplane_field(store, decoder, name, layer, cfg, device)
            preds = render_views(field, K, R, T, h, w, box, cfg.render, occupancy=occupancy).numpy()
            gts = subject.images[layer, held].astype(np.float32) / 255.0
            entry = scores[name][layer] = {key: [] for key in metrics}
            for pred, gt, region in zip(preds, gts, regions, strict=True):
                for key, metric in metrics.items():
                    entry[key].append(metric(pred, gt, region))
            if name == names[0]:
                picture.append([gts[0], preds[0]])
    result = _summarize(scores, n_views)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(out_dir / RECON_FILES[1],
             contact_sheet(np.asarray(picture), ["ground truth", "reconstruction"], list(LAYER_NAMES)))
    with atomic_path(out_dir / RECON_FILES[0]) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    for layer, values in result["layers"].items():
        log.info("layer %s: %s", layer, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return result


def _summarize(scores: dict[str, dict[int, dict[str, list[float]]]], n_views: int) -> dict:
    """Means per subject and layer, and per layer over all subjects' views."""
    layers: dict[str, dict[str, float]] = {}
    for layer in range(NUM_LAYERS):
        keys = next(iter(scores.values()))[layer].keys()
        layers[str(layer)] = {k: float(np.mean([v for s in scores.values() for v in s[layer][k]]))
                              for k in keys}
    subjects = {name: {str(layer): {k: float(np.mean(v)) for k, v in entry.items()}
                       for layer, entry in per.items()} for name, per in scores.items()}
    return {"layers": layers, "subjects": subjects, "views": n_views}


def read_camera_file(path: str | Path, ids: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K [V,3,3], R [V,3,3], T [V,3]`` of a ``cameras.json``; ``ids`` e.g. ``"0,8,16"`` (None: all)."""
    cameras = read_cameras(path)
    try:
        chosen = sorted(cameras) if not ids else [int(v) for v in ids.split(",") if v.strip()]
    except ValueError as exc:
        raise HumanLiffError(f"camera ids '{ids}' are not comma-separated integers") from exc
    return cameras_for(Path(path), cameras, chosen)


def render_triplane(cfg: Config, ref: str, out: str | Path, cameras: tuple[np.ndarray, ...] | None = None,
                    views: int = 0, size: int = 0, fps: float = 20.0,
                    device: torch.device | None = None) -> Path:
    """Render ``STORE:SUBJECT:LAYER`` to a PNG (views tiled) or a GIF / MP4 (one frame a view).

    Args:
        cameras: ``(K [V,3,3], R [V,3,3], T [V,3])`` and the image ``size`` in pixels; None: an orbit of
            ``views`` cameras (default ``cfg.sample.turntable_frames``) at ``size`` (default
            ``cfg.sample.image_size``) around the subject box.
    """
    device = default_device(device)
    target = parse_triplane_ref(ref)
    store = open_store(target.store)
    decoder = store.load_decoder(device)
    field, bounds, occupancy = triplane_field(store, decoder, target.subject, target.layer, cfg, device)
    size = size or cfg.sample.image_size
    if cameras is None:
        cameras = orbit_cameras(bounds.cpu(), views or cfg.sample.turntable_frames, size)
    K, R, T = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in cameras)
    frames = render_views(field, K, R, T, size, size, bounds, cfg.render, occupancy=occupancy,
                          progress=True).numpy()
    out = Path(out)
    if out.suffix.lower() == ".png":
        return save_png(out, view_grid(frames))
    return write_video(out, frames, fps)
