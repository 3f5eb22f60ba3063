"""Stage B of the fit: every subject's planes with the stage-A decoder frozen, in groups, layer after layer.

Layout of ``out_dir`` and the stage overview: ``humanliff.training.fit``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from humanliff.config import Config, DecoderConfig
from humanliff.errors import InputFileError
from humanliff.io import atomic_path, fault_point, read_torch_file, replace_folder, require_finite
from humanliff.runtime.compute import default_device
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.store import PLANES, TriplaneStore, create_store, open_store
from humanliff.training import fit as common
from humanliff.training.checkpoint import check_resume_config
from humanliff.training.finite import LossWatch
from humanliff.training.fit_step import PlaneTargets, RenderLoss, draw_rays, plane_targets
from humanliff.training.schedules import planes_lr_b

log = logging.getLogger(__name__)


class StageBFitter:
    """Fits U tri-planes of one layer at once against their targets with a frozen decoder.

    The loss is the sum of the planes' own losses, so each plane follows exactly the path it would follow
    if fitted alone; Adam over the ``[U, 27, R, R]`` tensor touches only these planes. ``step()`` does one
    iteration with no host sync (time it for benchmarks).
    """

    def __init__(self, cfg: Config, decoder: torch.nn.Module, targets: PlaneTargets, init: torch.Tensor,
                 generator: torch.Generator | None = None) -> None:
        self.cfg, self.targets = cfg, targets
        self.loss_module = RenderLoss(decoder.requires_grad_(False), cfg)
        self.planes = torch.nn.Parameter(init.detach().float().clone().to(targets.images.device))
        fused = self.planes.device.type == "cuda"
        self.optimizer = torch.optim.Adam([self.planes], lr=cfg.fit.lr_planes, fused=fused)
        self.rows = torch.arange(len(targets), device=self.planes.device)
        self.generator = generator or common.seeded_generator(self.planes.device, cfg.fit.seed)
        self.step_count = 0

    def step(self) -> dict[str, torch.Tensor]:
        """One iteration over every plane; returns detached per-plane loss terms ``[U]``."""
        cfg = self.cfg
        rays = draw_rays(self.targets, self.rows, cfg.fit.batch_images, cfg.fit.rays_per_image,
                         cfg.fit.foreground_fraction, self.generator)
        parts = self.loss_module(self.planes, rays, self.targets.bounds, self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = planes_lr_b(cfg.fit, self.step_count)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].sum().backward()
        self.optimizer.step()
        if cfg.fit.clamp:
            with torch.no_grad():
                self.planes.clamp_(-1.0, 1.0)
        self.step_count += 1
        return {k: v.detach() for k, v in parts.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"planes": self.planes.detach().cpu(), "optimizer": self.optimizer.state_dict(),
                "step": self.step_count, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.planes.copy_(state["planes"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator"])


def _stage_b_store(path: Path, names: list[str], store_a: TriplaneStore, cfg: Config) -> TriplaneStore:
    """Open the partial stage-B store, or create it (zero planes and bounds, filled group by group)."""
    if path.is_dir():
        store = open_store(path, mode="r+")
        if store.subjects == names and store.resolution == store_a.resolution:
            return store
    with atomic_path(path) as tmp:
        create_store(tmp, names, np.zeros((len(names), 2, 3), np.float32), store_a.resolution, store_a.channels,
                     store_a.decoder_state(), store_a.decoder_config, cfg.to_dict()).planes.flush()
    return open_store(path, mode="r+")


def fit_stage_b(cfg: Config, store_in: str | Path, out_dir: str | Path, device: str | None = None, *,
                resume_anyway: bool = False) -> Path:
    """Stage B: fit every subject of ``cfg.data`` with the frozen decoder of the stage-A store ``store_in``.

    Subjects go in groups of ``cfg.fit.subjects_per_batch_b``, each group's 4 layers in order for
    ``cfg.fit.iterations_b`` steps each. Resumes from ``out_dir/checkpoint_b.pt``; writes the store
    ``out_dir/store_b`` (planes of every subject, the stage-A decoder) and returns its path.
    """
    dev = default_device(device)
    store_a = open_store(store_in)
    decoder = store_a.load_decoder(dev)
    cfg = dataclasses.replace(cfg, decoder=DecoderConfig(**store_a.decoder_config))
    require_finite(store_a.planes, "the tri-planes", store_a.path / PLANES)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean0 = torch.from_numpy(np.asarray(store_a.planes[:, 0], np.float32).mean(axis=0))
    names = common.subject_names(cfg)
    partial, final, ckpt_path = out_dir / "store_b.partial", out_dir / "store_b", out_dir / "checkpoint_b.pt"
    ckpt: dict[str, Any] = {"group": 0, "layer": 0, "fitter": None, "planes": None}
    if ckpt_path.is_file():
        ckpt = read_torch_file(ckpt_path)
        if not isinstance(ckpt, dict) or any(k not in ckpt for k in ("group", "layer", "fitter", "planes")):
            raise InputFileError(ckpt_path, "not a stage-B checkpoint (expected keys group, layer, fitter, "
                                            "planes)")
        if "config" in ckpt:
            check_resume_config(ckpt_path, ckpt["config"], cfg, ("triplane",), "fit", resume_anyway)
        if ckpt.get("names") != names:
            raise InputFileError(ckpt_path, "was written for other subjects than data.root lists now")
        complete = ckpt["group"] * max(1, cfg.fit.subjects_per_batch_b) >= len(names)
        if complete and final.is_dir() and not partial.is_dir():
            log.info("stage B already complete: %s", final)
            common.write_fit_config(cfg, out_dir)
            return final
        log.info("resuming stage B at group %d, layer %d", ckpt["group"], ckpt["layer"])
    store = _stage_b_store(partial, names, store_a, cfg)
    per_group = max(1, cfg.fit.subjects_per_batch_b)
    groups = [list(range(i, min(i + per_group, len(names)))) for i in range(0, len(names), per_group)]
    generator = common.seeded_generator(dev, cfg.fit.seed)
    if ckpt.get("generator") is not None:  # the draws continue where the saved run stopped
        generator.set_state(ckpt["generator"])
    for g in range(ckpt["group"], len(groups)):
        members = groups[g]
        subjects = common.load_subjects(cfg, [names[i] for i in members])
        store.bounds[members] = np.stack([s.bounds for s in subjects])
        views = common.train_views(subjects, cfg)
        first_layer = ckpt["layer"] if g == ckpt["group"] else 0
        fitted = (ckpt["planes"] if g == ckpt["group"] and ckpt["planes"] is not None
                  else torch.zeros(len(members), NUM_LAYERS, *mean0.shape))
        for layer in range(first_layer, NUM_LAYERS):
            init = mean0.expand(len(members), *mean0.shape) if layer == 0 else fitted[:, layer - 1]
            targets = plane_targets(subjects, [layer] * len(members), views, dev, cfg.data)
            fitter = StageBFitter(cfg, decoder, targets, init, generator)
            if g == ckpt["group"] and layer == ckpt["layer"] and ckpt["fitter"] is not None:
                fitter.load_state_dict(ckpt["fitter"])
            save = functools.partial(_save_b, ckpt_path, names, g, layer, fitted, cfg=cfg, generator=generator)
            fitted[:, layer] = _run_layer(fitter, f"fit B {g + 1}/{len(groups)} layer {layer}", save)
            store.planes[members, layer] = fitted[:, layer].numpy().astype(np.float16)
            store.planes.flush()
            fault_point("store")
            store.write_manifest()
            done = (g, layer + 1) if layer + 1 < NUM_LAYERS else (g + 1, 0)
            _save_b(ckpt_path, names, *done, fitted, None, cfg=cfg, generator=generator)
    store.write_manifest()
    del store
    replace_folder(partial, final)
    common.write_fit_config(cfg, out_dir)
    log.info("stage B: %d subjects x %d layers -> %s", len(names), NUM_LAYERS, final)
    return final


def _run_layer(fitter: StageBFitter, desc: str, save: Callable[[dict[str, Any]], None]) -> torch.Tensor:
    """Step ``fitter`` to ``fit.iterations_b`` (logging, checkpointing mid-layer); its planes on the CPU."""
    fit_cfg = fitter.cfg.fit
    bar = tqdm(range(fitter.step_count, fit_cfg.iterations_b), desc=desc, unit="step",
               initial=fitter.step_count, total=fit_cfg.iterations_b)
    watch = LossWatch(fitter.planes.device)
    for step in bar:
        parts = fitter.step()
        watch.update(parts["loss"], fitter.step_count)
        save_now = fit_cfg.checkpoint_every > 0 and fitter.step_count % fit_cfg.checkpoint_every == 0 \
            and fitter.step_count < fit_cfg.iterations_b
        if save_now or step % fit_cfg.log_every == 0:
            watch.check(desc, "the last stage-B checkpoint is kept")
        if step % fit_cfg.log_every == 0 or step == fit_cfg.iterations_b - 1:
            common.log_step(bar, "B", step, parts)
        if save_now:
            save(fitter.state_dict())
    watch.check(desc, "the last stage-B checkpoint is kept")
    return fitter.planes.detach().cpu()


def _save_b(path: Path, names: list[str], group: int, layer: int, fitted: torch.Tensor,
            fitter: dict[str, Any] | None, *, cfg: Config, generator: torch.Generator) -> None:
    """Stage-B position: next (group, layer) to fit, the group's fitted planes, the fitter mid-layer and
    the draws' generator (so that a resume at a layer boundary draws what the uninterrupted run draws)."""
    with atomic_path(path, "checkpoint") as tmp:
        torch.save({"names": names, "group": group, "layer": layer, "planes": fitted if layer > 0 else None,
                    "fitter": fitter, "config": cfg.to_dict(), "generator": generator.get_state()}, tmp)
