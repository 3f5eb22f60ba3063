"""The built-in synthetic dataset: random layered humans written in the SynBody layout.

``<out>/human_list.txt``; per subject ``seq_%06d/``: ``cameras.json`` (OpenCV world-to-camera K, R, T per
view), ``bounds.json`` (world box padded as the original pads SynBody's), and for each layer folder
``img/camera%04d/0000.jpg`` and ``mask/camera%04d/0000.png`` on a black background; ``synth.json`` records the
settings. Both image formats are written with their encoder's smallest lossless coding (JPEG's optimized Huffman
tables, PNG's optimized deflate): the same pixels as the plain encoders, 13 % and 18 % fewer bytes on anny data.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from humanliff.config import SYNTH_BODIES, SynthConfig
from humanliff.data.bounds import BOUNDS_FILE, SYNBODY_Y_PAD, pad_box, write_bounds
from humanliff.data.figures import figure_bounds, random_figure
from humanliff.data.raycast import render_layers
from humanliff.data.synth_record import write_synth_record
from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path
from humanliff.runtime.cameras import sphere_cameras
from humanliff.runtime.layers import LAYER_NAMES, NUM_LAYERS

log = logging.getLogger(__name__)
JPEG_QUALITY = 95
FOV_DEG = 40.0


def subject_name(index: int) -> str:
    """Folder name of subject ``index`` (SynBody's ``seq_%06d``)."""
    return f"seq_{index:06d}"


def write_subject(subject_dir: Path, seed: int, index: int, views: int, resolution: int,
                  bodies: str = "primitives") -> None:
    """Generate subject ``index`` of the dataset with ``seed`` and write its files into ``subject_dir``."""
    rng = np.random.default_rng([seed, index])
    if bodies == "anny":
        from humanliff.data.anny_body import random_body
        from humanliff.data.garments import dressed_body, mesh_bounds
        from humanliff.data.meshcast import LayeredScene

        parts = dressed_body(random_body(rng), rng)
        lo, hi = mesh_bounds(parts)
        render = LayeredScene(parts).render
    else:
        figure = random_figure(rng)
        lo, hi = figure_bounds(figure)
        render = functools.partial(render_layers, figure)
    bounds = pad_box(np.stack([lo, hi]), y_pad=SYNBODY_Y_PAD)
    K, R, T = (a.numpy() for a in sphere_cameras(torch.from_numpy(bounds), views, resolution, fov_deg=FOV_DEG,
                                                 azimuth_offset_deg=float(rng.uniform(0.0, 360.0))))
    subject_dir.mkdir(parents=True)
    write_bounds(subject_dir / BOUNDS_FILE, bounds)
    cameras = {f"camera{v:04d}": {"K": K[v].tolist(), "R": R[v].tolist(), "T": T[v].tolist()}
               for v in range(views)}
    (subject_dir / "cameras.json").write_text(json.dumps(cameras, indent=1) + "\n")
    for v in range(views):
        images, masks = render(K[v], R[v], T[v], resolution)
        for layer, folder in enumerate(LAYER_NAMES):
            img_dir = subject_dir / folder / "img" / f"camera{v:04d}"
            mask_dir = subject_dir / folder / "mask" / f"camera{v:04d}"
            img_dir.mkdir(parents=True)
            mask_dir.mkdir(parents=True)
            Image.fromarray(images[layer]).save(img_dir / "0000.jpg", quality=JPEG_QUALITY,
                                                  optimize=True)
            Image.fromarray(masks[layer].astype(np.uint8) * 255).save(mask_dir / "0000.png", optimize=True)


def synthesize_dataset(out_dir: str | Path, subjects: int, views: int, resolution: int, seed: int,
                       workers: int = 0, bodies: str = "primitives") -> Path:
    """Write a synthetic layered dataset (SynBody layout); the folder appears only when complete.

    Args:
        out_dir: dataset folder (replaced if it exists); subjects, views: counts; resolution: image side in
            pixels; seed: the same seed gives the same files; workers: processes (0: one per CPU, at most 8);
            bodies: ``"primitives"`` (capsules and ellipsoids) or ``"anny"`` (anny bodies with mesh garments).

    Returns:
        ``out_dir`` as a path.
    """
    if subjects < 1 or views < 1 or resolution < 8:
        raise HumanLiffError(f"synth: need subjects >= 1, views >= 1 and resolution >= 8 "
                             f"(got {subjects}, {views}, {resolution})")
    if bodies not in SYNTH_BODIES:
        raise HumanLiffError(f"synth: bodies must be one of {', '.join(SYNTH_BODIES)} (got '{bodies}')")
    if bodies == "anny":
        from humanliff.data.anny_body import require_anny

        require_anny()
    out_dir = Path(out_dir)
    names = [subject_name(i) for i in range(subjects)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = workers or min(8, cpus, subjects)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "human_list.txt").write_text("\n".join(names) + "\n")
        write_synth_record(tmp, SynthConfig(subjects, views, resolution, seed, bodies))
        jobs = [(tmp / name, seed, i, views, resolution, bodies) for i, name in enumerate(names)]
        bar = tqdm(total=subjects, desc="synth", unit="subject", leave=False)
        if workers <= 1:
            threads = torch.get_num_threads()
            _single_thread()
            try:
                for job in jobs:
                    write_subject(*job)
                    bar.update()
            finally:
                torch.set_num_threads(threads)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_thread) as pool:
                for future in [pool.submit(write_subject, *job) for job in jobs]:
                    future.result()
                    bar.update()
        bar.close()
    log.info("wrote %d subjects x %d layers x %d views at %d px to %s", subjects, NUM_LAYERS, views,
             resolution, out_dir)
    return out_dir


def _single_thread() -> None:
    """Small per-view tensors run fastest on one thread; parallelism comes from one process per subject."""
    torch.set_num_threads(1)


def synthesize_from_config(cfg: SynthConfig, out_dir: str | Path) -> Path:
    """``synthesize_dataset`` with the counts of a ``SynthConfig``."""
    return synthesize_dataset(out_dir, cfg.subjects, cfg.views, cfg.resolution, cfg.seed, bodies=cfg.bodies)

