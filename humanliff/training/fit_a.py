"""Stage A of the fit: the shared decoder (DDP) and one tri-plane per (subject, layer), sharded across ranks.

Layout of ``out_dir`` and the stage overview: ``humanliff.training.fit``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from humanliff.config import Config
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.io import atomic_path, fault_point, read_torch_file, require_finite
from humanliff.models.decoder import build_decoder
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.store import create_store, open_store
from humanliff.training import distributed as dist
from humanliff.training.checkpoint import check_resume_config
from humanliff.training.finite import LossWatch
from humanliff.training.fit import (
    load_subjects,
    log_step,
    seeded_generator,
    subject_names,
    train_views,
    write_fit_config,
)
from humanliff.training.fit_losses import LOSS_TERMS
from humanliff.training.fit_step import PlaneTargets, RenderLoss, draw_rays, plane_targets
from humanliff.training.schedules import decoder_lr_a, planes_lr_a
from humanliff.training.sparse_adam import RowAdam
from humanliff.training.step_graph import GraphedUpdate, tensor_lr

log = logging.getLogger(__name__)
_ROW_ARRAYS = ("planes", "exp_avg", "exp_avg_sq")


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


def _row_index(subjects: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(subject, layer)`` int64 arrays ``[len(subjects) * 4]`` of the table rows: subject-major, layer-minor
    (the one place the row order is written: the checkpoint arrays, the resume and the fit targets use it)."""
    return np.repeat(np.asarray(subjects, np.int64), NUM_LAYERS), np.tile(np.arange(NUM_LAYERS), len(subjects))


def _save_stage_a(path: Path, state: StageAState, cfg: Config) -> None:
    """Write ``checkpoint_a`` atomically: rank 0 creates it, every rank fills its subjects' rows."""
    res = state.table.table.shape[-1]
    shape = (len(state.names), NUM_LAYERS, state.table.table.shape[1], res, res)
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
        idx = _row_index(state.owned)
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
    idx = _row_index(state.owned)
    device = state.table.table.device
    for name, tensor in zip(_ROW_ARRAYS, (state.table.table, state.table.exp_avg, state.table.exp_avg_sq),
                            strict=True):
        source = _read_rows(path / f"{name}.npy")
        if source.shape[:2] != (len(state.names), NUM_LAYERS) or source.shape[2:] != tuple(tensor.shape[1:]):
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
        planes = state.table.table.detach().reshape(len(state.owned), NUM_LAYERS, *state.table.table.shape[1:])
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
    planes = [torch.randn(NUM_LAYERS, ch, res, res, generator=seeded_generator(cpu, cfg.fit.seed + 1 + s))
              for s in owned]
    return (torch.cat(planes) * cfg.fit.init_std).to(device)


def decoder_optimizer(decoder: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam over the decoder's parameters at ``fit.lr_decoder`` (the original's betas and eps); fused on
    CUDA, which a captured step needs (its step counts live on the device)."""
    cuda = next(decoder.parameters()).device.type == "cuda"
    return torch.optim.Adam(decoder.parameters(), lr=cfg.fit.lr_decoder, betas=(0.9, 0.999), eps=1e-8,
                            fused=cuda, foreach=not cuda)


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
    names = subject_names(cfg)
    owned = list(range(info.rank, len(names), info.world_size))
    if not owned:
        raise HumanLiffError(f"{cfg.data.root}: {len(names)} subjects for {info.world_size} ranks; "
                             "use at most one rank per subject")
    subjects = load_subjects(cfg, [names[s] for s in owned])
    views = train_views(subjects, cfg)
    local, layers = _row_index(range(len(owned)))
    targets = plane_targets([subjects[i] for i in local], layers.tolist(), views, info.device, cfg.data)
    bounds = np.concatenate(dist.all_gather_object(np.stack([s.bounds for s in subjects])))
    order = np.concatenate(dist.all_gather_object(np.array(owned)))
    bounds = bounds[np.argsort(order)]

    torch.manual_seed(cfg.fit.seed)
    decoder = build_decoder(cfg.decoder).to(info.device)
    optimizer = decoder_optimizer(decoder, cfg)
    table = RowAdam(_init_planes(owned, cfg, info.device), clamp=1.0 if cfg.fit.clamp else 0.0)
    generator = seeded_generator(info.device, cfg.fit.seed * 1000003 + info.rank)
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
            log_step(bar, "A", step, parts)
        if save:
            _save_stage_a(ckpt, state, cfg)
            saved = state.step
    watch.check(f"fit A {out_dir}", _kept(ckpt, saved))
    _save_stage_a(ckpt, state, cfg)
    store = out_dir / "store_a"
    _write_store_a(store, state, bounds, cfg)
    if dist.is_main():
        write_fit_config(cfg, out_dir)
        log.info("stage A: %d steps, %d subjects -> %s", state.step, len(names), store)
    return store


def _kept(ckpt: Path, saved: int) -> str:
    return f"{ckpt} (step {saved}) is kept" if saved else "no checkpoint was written"


class StageAFitter:
    """One stage-A step at a time: draw planes and rays, render, step the decoder (DDP) and the drawn rows.

    With ``fit.cuda_graph`` on one CUDA device without DDP (``self.graphed``), the whole step (draws from
    the state's generator, render, backward, Adam on the decoder, RowAdam on the rows) is captured as a
    CUDA graph at the second step and replayed after; the learning rates reach it as device scalars.
    """

    def __init__(self, state: StageAState, loss_module: torch.nn.Module, targets: PlaneTargets,
                 cfg: Config) -> None:
        self.state, self.loss_module, self.targets, self.cfg = state, loss_module, targets, cfg
        self.planes_per_step = min(cfg.fit.batch_images, len(targets))
        self.views_per_plane = max(1, cfg.fit.batch_images // self.planes_per_step)
        self.generator = state.generator
        device = state.table.table.device
        self.graphed = cfg.fit.cuda_graph and device.type == "cuda" \
            and not isinstance(loss_module, DistributedDataParallel)
        self.lr = torch.zeros(2, dtype=torch.float32, device=device)
        """Decoder and planes learning rates of the step being run (read by the graph)."""
        if self.graphed:
            lr_in_graph = functools.partial(tensor_lr, state.optimizer, self.lr[0])
            self.graph = GraphedUpdate(self._update, device, lr_in_graph, generators=[self.generator])

    def step(self) -> dict[str, torch.Tensor]:
        """One step; returns the detached per-plane loss terms ``[U]`` each (no host sync)."""
        state, cfg = self.state, self.cfg
        lr = (decoder_lr_a(cfg.fit, state.step), planes_lr_a(cfg.fit, state.step))
        for group in state.optimizer.param_groups:  # a float in the state dict; the graph reads self.lr
            group["lr"] = lr[0]
        for i, rate in enumerate(lr):
            self.lr[i].fill_(rate)
        parts = self.graph() if self.graphed else self._update()
        state.step += 1
        return dict(zip(LOSS_TERMS, parts, strict=True))

    def _update(self) -> tuple[torch.Tensor, ...]:
        """The step's device work: draws, render, backward, both optimizers; the loss terms in LOSS_TERMS
        order."""
        state, cfg = self.state, self.cfg
        rows = torch.randperm(len(self.targets), generator=self.generator,
                              device=self.generator.device)[: self.planes_per_step]
        planes = state.table.gather(rows)
        rays = draw_rays(self.targets, rows, self.views_per_plane, cfg.fit.rays_per_image,
                         cfg.fit.foreground_fraction, self.generator)
        parts = self.loss_module(planes, rays, self.targets.bounds[rows], self.generator)
        state.optimizer.zero_grad(set_to_none=True)
        parts["loss"].mean().backward()
        state.optimizer.step()
        state.table.step(rows, planes.grad, self.lr[1])
        return tuple(parts[k].detach() for k in LOSS_TERMS)
