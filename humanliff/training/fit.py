"""Tri-plane fitting: stage A (shared decoder + a tri-plane per subject and layer), stage B (frozen decoder).

Stage A (``fit_stage_a``) runs under torchrun with subjects sharded across ranks (subject s on rank
s % world): the decoder is wrapped in DDP (its gradients are all-reduced), the planes stay rank-local in a
``RowAdam`` table that updates only the rows a step touched. Stage B (``fit_stage_b``) fits many subjects
at once with the decoder frozen, layer after layer: layer 0 starts from the mean stage-A layer-0 plane,
layer k from the subject's fitted layer k-1. Both write a tri-plane store and resume from their last
checkpoint in ``out_dir``:

```
out_dir/config.yaml
out_dir/checkpoint_a/   state.pt + planes/exp_avg/exp_avg_sq.npy fp32 [S,4,27,R,R] + row_steps.npy [S,4]
out_dir/store_a/        stage-A store
out_dir/checkpoint_b.pt stage-B position (group, layer, step), the group's planes and optimizer
out_dir/store_b.partial -> out_dir/store_b
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from humanliff.config import Config, DecoderConfig, dump_config
from humanliff.data.files import read_subject_list
from humanliff.data.loader import load_subject, split_views, subject_list_path
from humanliff.data.types import LAYERS, SubjectData
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.io import atomic_path, fault_point, read_torch_file, replace_folder, require_finite
from humanliff.models.decoder import build_decoder
from humanliff.training import distributed as dist
from humanliff.training.checkpoint import check_resume_config
from humanliff.training.finite import LossWatch
from humanliff.training.fit_step import PlaneTargets, RenderLoss, draw_rays, plane_targets
from humanliff.training.schedules import decoder_lr_a, planes_lr_a, planes_lr_b
from humanliff.training.sparse_adam import RowAdam
from humanliff.training.store import PLANES, TriplaneStore, create_store, open_store

log = logging.getLogger(__name__)
N_LAYERS = len(LAYERS)
_ROW_ARRAYS = ("planes", "exp_avg", "exp_avg_sq")


def _subject_names(cfg: Config) -> list[str]:
    return read_subject_list(subject_list_path(cfg.data.root, cfg.data.layout), cfg.data.max_subjects)


def _load(cfg: Config, names: Sequence[str]) -> list[SubjectData]:
    return [load_subject(cfg.data, n) for n in tqdm(names, desc="load", unit="subject", leave=False)]


def _train_views(subjects: Sequence[SubjectData], cfg: Config) -> np.ndarray:
    train, _ = split_views(len(subjects[0].view_ids), cfg.data.holdout_every)
    return train


def _log_step(bar: tqdm, stage: str, step: int, parts: dict[str, torch.Tensor]) -> None:
    """Log the mean of each loss term (one device sync)."""
    means = torch.stack([p.float().mean() for p in parts.values()]).tolist()
    values = dict(zip(parts, means, strict=True))
    values["psnr"] = -10.0 * float(np.log10(max(values["mse"], 1e-10)))
    bar.set_postfix(loss=f"{values['loss']:.4f}", psnr=f"{values['psnr']:.2f}")
    log.debug("%s step %d: %s", stage, step, ", ".join(f"{k} {v:.5f}" for k, v in values.items()))


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# --- stage A --------------------------------------------------------------------------------


@dataclasses.dataclass
class StageAState:
    """A stage-A rank's share: its subjects' planes (rows subject-major, layer-minor) and the optimizers."""

    names: list[str]
    owned: list[int]
    """Global indices of this rank's subjects."""
    table: RowAdam
    decoder: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    """Draws of this rank (planes, views, rays, jitter); saved per rank, restored for the same world size."""
    step: int = 0


def _rows_of(owned: Sequence[int]) -> list[tuple[int, int]]:
    """``(subject, layer)`` of each table row."""
    return [(s, layer) for s in owned for layer in range(N_LAYERS)]


def _save_stage_a(path: Path, state: StageAState, cfg: Config) -> None:
    """Write ``checkpoint_a`` atomically: rank 0 creates it, every rank fills its subjects' rows."""
    res = state.table.table.shape[-1]
    shape = (len(state.names), N_LAYERS, state.table.table.shape[1], res, res)
    arrays = dict(zip(_ROW_ARRAYS, (state.table.table, state.table.exp_avg, state.table.exp_avg_sq),
                      strict=True))
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(path, "checkpoint")) if dist.is_main() else None
        if tmp is not None:
            tmp.mkdir()
            for name in _ROW_ARRAYS:
                open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape).flush()
            open_memmap(tmp / "row_steps.npy", mode="w+", dtype=np.float32, shape=shape[:2]).flush()
        tmp = dist.broadcast_object(tmp)
        dist.barrier()
        rows = _rows_of(state.owned)
        idx = (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64))
        for name, tensor in arrays.items():
            out = np.load(tmp / f"{name}.npy", mmap_mode="r+")
            out[idx] = tensor.detach().cpu().numpy()
            out.flush()
        steps = np.load(tmp / "row_steps.npy", mmap_mode="r+")
        steps[idx] = state.table.steps.cpu().numpy()
        steps.flush()
        generators = dist.all_gather_object(state.generator.get_state())
        if dist.is_main():
            torch.save({"step": state.step, "names": state.names, "decoder": state.decoder.state_dict(),
                        "optimizer": state.optimizer.state_dict(), "generators": generators,
                        "config": cfg.to_dict()}, tmp / "state.pt")
        dist.barrier()
    dist.barrier()


def _read_rows(path: Path) -> np.ndarray:
    """One array of ``checkpoint_a``, memory-mapped; one line naming it when missing or unreadable."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise InputFileError(path, f"missing or unreadable ({exc.__class__.__name__}); delete {path.parent} "
                                   "to restart stage A") from exc


def _resume_stage_a(path: Path, state: StageAState, cfg: Config, resume_anyway: bool) -> None:
    """Load ``checkpoint_a`` into this rank's state (any world size: rows are read per subject)."""
    blob = read_torch_file(path / "state.pt")
    needed = ("step", "names", "decoder", "optimizer", "generators", "config")
    if not isinstance(blob, dict) or any(k not in blob for k in needed):
        raise InputFileError(path / "state.pt", f"not a stage-A checkpoint (expected keys {', '.join(needed)})")
    check_resume_config(path / "state.pt", blob["config"], cfg, ("triplane", "decoder"), "fit", resume_anyway)
    require_finite(blob["decoder"], "the decoder weights", path / "state.pt")
    if blob["names"] != state.names:
        raise InputFileError(path / "state.pt", "was written for other subjects than data.root lists now")
    try:
        state.decoder.load_state_dict(blob["decoder"])
    except RuntimeError as exc:
        raise InputFileError(path / "state.pt", "decoder weights do not fit the configured decoder") from exc
    state.optimizer.load_state_dict(blob["optimizer"])
    state.step = int(blob["step"])
    if len(blob["generators"]) == dist.world_size():
        state.generator.set_state(blob["generators"][dist.rank()])
    else:
        state.generator.manual_seed(state.generator.initial_seed() + state.step)
    rows = _rows_of(state.owned)
    idx = (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64))
    device = state.table.table.device
    for name, tensor in zip(_ROW_ARRAYS, (state.table.table, state.table.exp_avg, state.table.exp_avg_sq),
                            strict=True):
        source = _read_rows(path / f"{name}.npy")
        if source.shape[:2] != (len(state.names), N_LAYERS) or source.shape[2:] != tuple(tensor.shape[1:]):
            raise InputFileError(path / f"{name}.npy", f"rows are {list(source.shape[2:])}, the configured "
                                                       f"tri-planes {list(tensor.shape[1:])}")
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(source[idx])).to(device))
    state.table.steps.copy_(torch.from_numpy(np.array(_read_rows(path / "row_steps.npy")[idx])).to(device))
    log.info("resumed stage A from %s at step %d", path, state.step)


def _write_store_a(path: Path, state: StageAState, bounds: np.ndarray, cfg: Config) -> None:
    """Write the stage-A store (rank 0 creates it; every rank writes its subjects' planes as fp16)."""
    res = state.table.table.shape[-1]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(path, "store")) if dist.is_main() else None
        if tmp is not None:
            created = create_store(tmp, state.names, bounds, res, state.table.table.shape[1],
                                   state.decoder.state_dict(), dataclasses.asdict(cfg.decoder), cfg.to_dict())
            created.planes.flush()
            fault_point("store")
        tmp = dist.broadcast_object(tmp)
        dist.barrier()
        store = open_store(tmp, mode="r+")
        planes = state.table.table.detach().reshape(len(state.owned), N_LAYERS, *state.table.table.shape[1:])
        for i, s in enumerate(state.owned):
            store.planes[s] = planes[i].cpu().numpy().astype(np.float16)
        store.planes.flush()
        del store
        dist.barrier()
    dist.barrier()


def _init_planes(owned: Sequence[int], cfg: Config, device: torch.device) -> torch.Tensor:
    """N(0, init_std) planes ``[len(owned)*4, 27, R, R]``, seeded per subject (alike for any world size)."""
    res, ch = cfg.triplane.resolution, cfg.triplane.channels
    cpu = torch.device("cpu")
    planes = [torch.randn(N_LAYERS, ch, res, res, generator=_generator(cpu, cfg.fit.seed + 1 + s))
              for s in owned]
    return (torch.cat(planes) * cfg.fit.init_std).to(device)


def _write_config(cfg: Config, out_dir: Path) -> None:
    """``out_dir/config.yaml``, written once the fit has succeeded."""
    with atomic_path(out_dir / "config.yaml") as tmp:
        dump_config(cfg, tmp)


def fit_stage_a(cfg: Config, out_dir: str | Path, device: str | None = None, *,
                resume_anyway: bool = False) -> Path:
    """Stage A: fit the shared decoder and one tri-plane per (subject, layer) of ``cfg.data``.

    Launch with ``torchrun --nproc_per_node N`` for N ranks (or plain ``python`` for one). Resumes from
    ``out_dir/checkpoint_a`` (refused when written with other fit settings, unless ``resume_anyway``);
    stops at the first non-finite loss; writes the store ``out_dir/store_a`` and returns its path.
    """
    info = dist.init_distributed(device)
    out_dir = Path(out_dir)
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    names = _subject_names(cfg)
    owned = list(range(info.rank, len(names), info.world_size))
    if not owned:
        raise HumanLiffError(f"{cfg.data.root}: {len(names)} subjects for {info.world_size} ranks; "
                             "use at most one rank per subject")
    subjects = _load(cfg, [names[s] for s in owned])
    views = _train_views(subjects, cfg)
    slices = [s for s in subjects for _ in range(N_LAYERS)]
    targets = plane_targets(slices, list(range(N_LAYERS)) * len(owned), views, info.device, cfg.data)
    bounds = np.concatenate(dist.all_gather_object(np.stack([s.bounds for s in subjects])))
    order = np.concatenate(dist.all_gather_object(np.array(owned)))
    bounds = bounds[np.argsort(order)]

    torch.manual_seed(cfg.fit.seed)
    decoder = build_decoder(cfg.decoder).to(info.device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=cfg.fit.lr_decoder, betas=(0.9, 0.999), eps=1e-8)
    table = RowAdam(_init_planes(owned, cfg, info.device), clamp=1.0 if cfg.fit.clamp else 0.0)
    generator = _generator(info.device, cfg.fit.seed * 1000003 + info.rank)
    state = StageAState(names, owned, table, decoder, optimizer, generator)
    ckpt = out_dir / "checkpoint_a"
    if ckpt.is_dir():
        _resume_stage_a(ckpt, state, cfg, resume_anyway)
    loss_module: torch.nn.Module = RenderLoss(decoder, cfg)
    if info.distributed:
        device_ids = [info.device] if info.device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=device_ids)
    fitter = StageAFitter(state, loss_module, targets, cfg)
    bar = tqdm(range(state.step, cfg.fit.iterations_a), desc="fit A", unit="step", initial=state.step,
               total=cfg.fit.iterations_a, disable=not dist.is_main())
    watch, saved = LossWatch(info.device), state.step
    for step in bar:
        parts = fitter.step()
        watch.update(parts["loss"], state.step)
        save = cfg.fit.checkpoint_every > 0 and state.step % cfg.fit.checkpoint_every == 0 \
            and state.step < cfg.fit.iterations_a
        if save or step % cfg.fit.log_every == 0:
            watch.check(f"fit A {out_dir}", _kept(ckpt, saved))
        if dist.is_main() and (step % cfg.fit.log_every == 0 or step == cfg.fit.iterations_a - 1):
            _log_step(bar, "A", step, parts)
        if save:
            _save_stage_a(ckpt, state, cfg)
            saved = state.step
    watch.check(f"fit A {out_dir}", _kept(ckpt, saved))
    _save_stage_a(ckpt, state, cfg)
    store = out_dir / "store_a"
    _write_store_a(store, state, bounds, cfg)
    if dist.is_main():
        _write_config(cfg, out_dir)
        log.info("stage A: %d steps, %d subjects -> %s", state.step, len(names), store)
    return store


def _kept(ckpt: Path, saved: int) -> str:
    return f"{ckpt} (step {saved}) is kept" if saved else "no checkpoint was written"


class StageAFitter:
    """One stage-A step at a time: draw planes and rays, render, step the decoder (DDP) and the drawn rows."""

    def __init__(self, state: StageAState, loss_module: torch.nn.Module, targets: PlaneTargets,
                 cfg: Config) -> None:
        self.state, self.loss_module, self.targets, self.cfg = state, loss_module, targets, cfg
        self.planes_per_step = min(cfg.fit.batch_images, len(targets))
        self.views_per_plane = max(1, cfg.fit.batch_images // self.planes_per_step)
        self.generator = state.generator

    def step(self) -> dict[str, torch.Tensor]:
        """One step; returns the detached per-plane loss terms (no host sync)."""
        state, cfg = self.state, self.cfg
        rows = torch.randperm(len(self.targets), generator=self.generator,
                              device=self.generator.device)[: self.planes_per_step]
        planes = state.table.gather(rows)
        rays = draw_rays(self.targets, rows, self.views_per_plane, cfg.fit.rays_per_image,
                         cfg.fit.foreground_fraction, self.generator)
        parts = self.loss_module(planes, rays, self.targets.bounds[rows], self.generator)
        for group in state.optimizer.param_groups:
            group["lr"] = decoder_lr_a(cfg.fit, state.step)
        state.optimizer.zero_grad(set_to_none=True)
        parts["loss"].mean().backward()
        state.optimizer.step()
        state.table.step(rows, planes.grad, planes_lr_a(cfg.fit, state.step))
        state.step += 1
        return {k: v.detach() for k, v in parts.items()}


# --- stage B --------------------------------------------------------------------------------


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
        self.generator = generator or _generator(self.planes.device, cfg.fit.seed)
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
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    store_a = open_store(store_in)
    decoder = store_a.load_decoder(dev)
    cfg = dataclasses.replace(cfg, decoder=DecoderConfig(**store_a.decoder_config))
    require_finite(store_a.planes, "the tri-planes", store_a.path / PLANES)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean0 = torch.from_numpy(np.asarray(store_a.planes[:, 0], np.float32).mean(axis=0))
    names = _subject_names(cfg)
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
            _write_config(cfg, out_dir)
            return final
        log.info("resuming stage B at group %d, layer %d", ckpt["group"], ckpt["layer"])
    store = _stage_b_store(partial, names, store_a, cfg)
    per_group = max(1, cfg.fit.subjects_per_batch_b)
    groups = [list(range(i, min(i + per_group, len(names)))) for i in range(0, len(names), per_group)]
    generator = _generator(dev, cfg.fit.seed)
    if ckpt.get("generator") is not None:  # the draws continue where the saved run stopped
        generator.set_state(ckpt["generator"])
    for g in range(ckpt["group"], len(groups)):
        members = groups[g]
        subjects = _load(cfg, [names[i] for i in members])
        store.bounds[members] = np.stack([s.bounds for s in subjects])
        views = _train_views(subjects, cfg)
        first_layer = ckpt["layer"] if g == ckpt["group"] else 0
        fitted = (ckpt["planes"] if g == ckpt["group"] and ckpt["planes"] is not None
                  else torch.zeros(len(members), N_LAYERS, *mean0.shape))
        for layer in range(first_layer, N_LAYERS):
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
            done = (g, layer + 1) if layer + 1 < N_LAYERS else (g + 1, 0)
            _save_b(ckpt_path, names, *done, fitted, None, cfg=cfg, generator=generator)
    store.write_manifest()
    del store
    replace_folder(partial, final)
    _write_config(cfg, out_dir)
    log.info("stage B: %d subjects x %d layers -> %s", len(names), N_LAYERS, final)
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
            _log_step(bar, "B", step, parts)
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
