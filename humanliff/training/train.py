"""Layered diffusion training (``humanliff train``): epsilon-prediction MSE on (subject, layer) tri-planes.

Each item is one layer of one subject: x0 = that layer, condition = the ground-truth previous layer
(zeros for layer 0), class y = the layer id (the original's teacher forcing). Per rank: ``batch_size``
items per optimizer step, split into micro-batches (gradients averaged, not summed as the original).
AdamW (fused on CUDA) with the original's linear LR anneal, EMA (one multi-tensor lerp), bf16 autocast
without a GradScaler (the original's scaler misuse, D1, is not reproduced), gradient-norm clipping,
optional torch.compile (the whole UNet or block by block), on one CUDA device the whole step replayed as
a CUDA graph, DDP under torchrun. The loop has no host sync between log steps. The randomness of an item
(timestep, noise, condition noise) is a function of (seed, step, global position), so results do not
depend on the number of ranks, the micro-batch size or a resume.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from humanliff.config import Config, TrainConfig, dump_config
from humanliff.ema_file import EMA_FILE, write_ema
from humanliff.errors import HumanLiffError
from humanliff.io import atomic_path, require_finite
from humanliff.models.unet import AttentionBlock, ResBlock, UNet, build_unet
from humanliff.run_folder import ensure_space
from humanliff.runtime.compute import PRECISIONS
from humanliff.runtime.files import read_json
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.runtime.schedule import linear_schedule, q_sample
from humanliff.store import MANIFEST, PLANES, TriplaneStore, check_layout, open_store
from humanliff.training import distributed
from humanliff.training.checkpoint import (
    CHECKPOINT,
    CONFIG_FILE,
    MODEL_SECTIONS,
    load_checkpoint,
    save_checkpoint,
)
from humanliff.training.distributed import DistInfo
from humanliff.training.ema import EMA
from humanliff.training.finite import LossWatch
from humanliff.training.step_graph import GraphedUpdate, Update, tensor_lr

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"


def compile_blocks(model: nn.Module) -> None:
    """Compile each ``ResBlock`` and ``AttentionBlock`` of ``model`` on its own, for static shapes.

    Blocks of the same widths and size share one compiled graph (the two encoders' blocks, the repeated
    blocks of a level), so the first step compiles a fraction of the whole-UNet graph; the glue between
    blocks (skip adds, concatenations, down/upsampling convs) stays eager.
    """
    dynamo = torch._dynamo.config
    # every block variant (widths x size x batch) is one cache entry of the same code object
    dynamo.recompile_limit = max(dynamo.recompile_limit, 256)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4096)
    for module in model.modules():
        if isinstance(module, (ResBlock, AttentionBlock)):
            module.compile(dynamic=False)


def annealed_lr(cfg: TrainConfig, step: int) -> float:
    """The original's LR: linear from ``lr`` to ``lr_final`` over ``lr_anneal_steps``, then held
    (``lr_anneal_steps`` 0: constant ``lr``)."""
    if cfg.lr_anneal_steps <= 0:
        return cfg.lr
    return cfg.lr + (cfg.lr_final - cfg.lr) * min(step / cfg.lr_anneal_steps, 1.0)


def item_positions(step: int, per_rank: int, rank: int, world_size: int) -> np.ndarray:
    """Global positions in the endless item stream of this rank's items at ``step``: int64 ``[per_rank]``."""
    start = (step * world_size + rank) * per_rank
    return np.arange(start, start + per_rank, dtype=np.int64)


def items_at(positions: np.ndarray, n_items: int, seed: int) -> np.ndarray:
    """Item ids at stream positions: each epoch of ``n_items`` positions is a fresh seeded permutation."""
    epochs = positions // n_items
    items = np.empty_like(positions)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_items)
        chosen = epochs == epoch
        items[chosen] = perm[positions[chosen] % n_items]
    return items


class LayerPairs:
    """The (subject, layer) items of a store as training batches; planes kept on the GPU when they fit."""

    def __init__(self, planes: np.ndarray, device: torch.device, on_device: bool | None = None) -> None:
        self.device = device
        self.subjects = int(planes.shape[0])
        if on_device is None:
            on_device = device.type == "cuda" and planes.nbytes < 0.4 * torch.cuda.mem_get_info(device)[0]
        self.planes: np.ndarray | torch.Tensor = (
            torch.from_numpy(np.array(planes)).to(device) if on_device else planes)

    def __len__(self) -> int:
        return self.subjects * NUM_LAYERS

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x0, x_cond, y)`` on the device: float32 channels_last ``[B, C, R, R]`` twice, int64 ``[B]``."""
        subject, layer = items // NUM_LAYERS, items % NUM_LAYERS
        previous = np.maximum(layer - 1, 0)
        if isinstance(self.planes, torch.Tensor):
            s, l, p = (self._to_device(a) for a in (subject, layer, previous))
            x0, x_cond = self.planes[s, l], self.planes[s, p]
        else:
            x0 = self._to_device(self.planes[subject, layer])
            x_cond = self._to_device(self.planes[subject, previous])
        y = self._to_device(layer)
        x_cond = x_cond * (y > 0).to(x_cond.dtype)[:, None, None, None]
        fmt = torch.channels_last
        return (x0.to(torch.float32, memory_format=fmt), x_cond.to(torch.float32, memory_format=fmt), y)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device; on CUDA through pinned memory without waiting (no host sync)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)


class DiffusionTrainer:
    """The model, EMA and optimizer of one rank, and ``train_step``: one optimizer step over one batch.

    For benchmarks: ``DiffusionTrainer(cfg, info).train_step(x0, x_cond, y)`` with float32 ``[B, C, R, R]``
    tensors on ``info.device``; ``cfg.train.microbatch``, ``precision``, ``compile``, ``compile_scope`` and
    ``cuda_graph`` apply. With the CUDA graph (``self.graphed``) the step's shapes stay fixed, and the
    optimizer's state may be loaded only before the second step (the capture keeps its tensors). A
    subclass's ``_update`` does device work only; one that swaps its EMA or optimizer state makes a new
    graph (``_graphed_update``).
    """

    def __init__(self, cfg: Config, info: DistInfo) -> None:
        tc = cfg.train
        if tc.precision not in PRECISIONS:
            raise HumanLiffError(f"train.precision '{tc.precision}' is not one of {', '.join(PRECISIONS)}")
        if tc.microbatch < 0 or (tc.microbatch and tc.batch_size % tc.microbatch):
            raise HumanLiffError(f"train.batch_size {tc.batch_size} is not a multiple of train.microbatch "
                                 f"{tc.microbatch}")
        self.cfg, self.info, self.step = cfg, info, 0
        self.device = info.device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            model = build_unet(cfg.unet, cfg.triplane.resolution, cfg.triplane.channels)
        self.model: UNet = model.to(self.device, memory_format=torch.channels_last)
        self.ema = EMA(self.model, tc.ema_rate)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda"
                                            else None) if info.distributed else None)
        module = self.ddp if self.ddp is not None else self.model
        if tc.compile and tc.compile_scope == "blocks":
            compile_blocks(self.model)
        self.forward = torch.compile(module) if tc.compile and tc.compile_scope == "model" else module
        cuda = self.device.type == "cuda"
        self.graphed = tc.cuda_graph and cuda and not info.distributed
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=annealed_lr(tc, 0),
                                           weight_decay=tc.weight_decay, fused=cuda, foreach=not cuda)
        self.alphas_cumprod = linear_schedule(cfg.diffusion.steps, cfg.diffusion.beta_start,
                                               cfg.diffusion.beta_end).float().to(self.device)
        self.generator = torch.Generator(self.device)
        if self.graphed:
            self.lr = torch.tensor(annealed_lr(tc, 0), dtype=torch.float32, device=self.device)
            self.graph = self._graphed_update(self._update)

    def _graphed_update(self, update: Update) -> GraphedUpdate:
        """``update`` replayed as a CUDA graph (captured at its second call) in which the fused AdamW reads
        its learning rate from ``self.lr`` (refilled before every replay)."""
        return GraphedUpdate(update, self.device, functools.partial(tensor_lr, self.optimizer, self.lr))

    def parameter_count(self) -> int:
        """Parameters of the trained model."""
        return sum(p.numel() for p in self.model.parameters())

    def ema_contents(self) -> tuple[Config, dict[str, Any]]:
        """The config written into ``ema.pt`` and any extra keys of it (none for a diffusion run)."""
        return self.cfg, {}

    def save_ema(self, path: Path, store_manifest: dict[str, Any],
                 weights: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the EMA weights (``weights`` when the caller already holds ``self.ema.state_dict``) as an
        ``ema.pt`` at ``path`` (with ``ema_contents()``); returns ``path``."""
        cfg, extra = self.ema_contents()
        weights = self.ema.state_dict(self.model) if weights is None else weights
        return write_ema(path, weights, cfg.to_dict(), store_manifest, extra)

    def extra_state(self) -> dict[str, Any]:
        """State of a subclass to checkpoint beyond model, EMA, optimizer and RNG (none here)."""
        return {}

    def restore(self, extra: dict[str, Any]) -> None:
        """Take back what ``extra_state`` returned, from a checkpoint being resumed (nothing here)."""

    draws = 1
    """Timesteps and noises drawn per item: with ``k`` > 1, ``_draws`` gives ``t [B, k]`` and noise
    ``[B, k C, R, R]`` (a subclass's loss splits them)."""

    def _draws(self, keys: np.ndarray, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-item timesteps ``[B]``, noise and condition noise ``[B, C, R, R]`` from per-item seeds
        (``draws`` of the first two per item)."""
        b, k = len(keys), self.draws
        t = torch.empty((b, k), dtype=torch.int64, device=self.device)
        noise = torch.empty((b, k * shape[1], *shape[2:]), device=self.device, memory_format=torch.channels_last)
        cond_noise = torch.zeros(shape, device=self.device).contiguous(memory_format=torch.channels_last)
        base = (self.cfg.train.seed * 1_000_003 + self.step) * 2**20
        for i, key in enumerate(keys.tolist()):
            self.generator.manual_seed((base + key) % 2**63)
            t[i].random_(0, self.alphas_cumprod.shape[0], generator=self.generator)
            noise[i].normal_(generator=self.generator)
            if self.cfg.train.cond_noise > 0:
                cond_noise[i].normal_(generator=self.generator)
        return (t[:, 0], noise, cond_noise) if k == 1 else (t, noise, cond_noise)

    def _noisy_condition(self, x_cond: torch.Tensor, y: torch.Tensor, cond_noise: torch.Tensor) -> torch.Tensor:
        """The condition with ``train.cond_noise`` times ``cond_noise`` added above layer 0."""
        std = self.cfg.train.cond_noise
        if std > 0:
            x_cond = x_cond + std * cond_noise * (y > 0).to(x_cond.dtype)[:, None, None, None]
        return x_cond

    def _loss(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor, cond_noise: torch.Tensor) -> torch.Tensor:
        """MSE between predicted and true noise, mean over the batch and C, H, W (float32 scalar)."""
        x_t = q_sample(x0, t, noise, self.alphas_cumprod)
        x_cond = self._noisy_condition(x_cond, y, cond_noise)
        bf16 = self.cfg.train.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = self.forward(x_t, t, x_cond, y)
        return F.mse_loss(eps.float(), noise)

    def train_step(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor,
                   keys: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on ``x0, x_cond [B, C, R, R]`` and ``y [B]``; ``keys`` (int64 ``[B]``, the
        items' global stream positions) seed their noise. Returns device scalars ``(loss, grad_norm)``."""
        keys = np.arange(x0.shape[0], dtype=np.int64) if keys is None else keys
        t, noise, cond_noise = self._draws(keys, x0.shape)
        lr = annealed_lr(self.cfg.train, self.step)
        for group in self.optimizer.param_groups:  # a float in the state dict; the graph reads self.lr
            group["lr"] = lr
        if self.graphed:
            self.lr.fill_(lr)
            total, grad_norm = self.graph(x0, x_cond, y, t, noise, cond_noise)
        else:
            total, grad_norm = self._update(x0, x_cond, y, t, noise, cond_noise)
        self.step += 1
        return total, grad_norm

    def _update(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, cond_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over the micro-batches, clipping, AdamW and EMA: device work only."""
        tc = self.cfg.train
        b = x0.shape[0]
        micro = tc.microbatch or b
        total = torch.zeros((), device=self.device)
        for start in range(0, b, micro):
            part = slice(start, start + micro)
            last = start + micro >= b
            sync = contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync()
            with sync:
                loss = self._loss(x0[part], x_cond[part], y[part], t[part], noise[part], cond_noise[part])
                (loss * (min(micro, b - start) / b)).backward()
            total += loss.detach() * (min(micro, b - start) / b)
        params = list(self.model.parameters())
        if tc.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        return total, grad_norm


def _trim_log(out: Path, step: int) -> None:
    """Keep the log's records up to the checkpoint's ``step`` (a killed run may have logged past it, or
    left a half-written last line), so that a resumed run logs each step once."""
    path = out / LOG_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def _log(out: Path, record: dict[str, Any]) -> None:
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: Config, store_path: str | Path, out: str | Path, device: str | None = None, *,
          resume_anyway: bool = False) -> Path:
    """Train (or resume, when ``out`` holds a checkpoint) up to ``cfg.train.steps``; returns ``out/ema.pt``.

    Launch under torchrun for several devices (one process each; gloo on CPU, nccl on CUDA). A resume
    with other training settings is refused unless ``resume_anyway``; a non-finite loss stops the run
    (the last checkpoint is kept).
    """
    info = distributed.init_distributed(device)
    try:
        return _train(cfg, Path(store_path), Path(out), info, resume_anyway)
    finally:
        distributed.cleanup()


def _train(cfg: Config, store_path: Path, out: Path, info: DistInfo, resume_anyway: bool) -> Path:
    store, store_manifest = open_training_store(cfg, store_path, info)
    trainer = DiffusionTrainer(cfg, info)
    start_run(trainer, out, resume_anyway)
    data = LayerPairs(store.planes, info.device)
    if info.rank == 0:
        logger.info("training %.1fM parameters on %d items, %d rank(s) x batch %d, %s%s",
                    trainer.parameter_count() / 1e6, len(data), info.world_size, cfg.train.batch_size,
                    cfg.train.precision, ", compiled" if cfg.train.compile else "")
    return run_steps(trainer, data, out, store_manifest)


def open_training_store(cfg: Config, store_path: Path, info: DistInfo) -> tuple[TriplaneStore, dict[str, Any]]:
    """The store a run trains on (checked against ``cfg``, finite) and its manifest; sets CUDA's matmul
    precision and cuDNN's benchmark mode on CUDA."""
    store = open_store(store_path)
    check_layout(cfg.triplane, store, "the model's config (use the config the store was fitted with)")
    require_finite(store.planes, "the tri-planes", store.path / PLANES)
    store_manifest = read_json(store.path / MANIFEST)
    if info.device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    return store, store_manifest


def start_run(trainer: DiffusionTrainer, out: Path, resume_anyway: bool, *,
              sections: tuple[str, ...] = MODEL_SECTIONS) -> None:
    """Resume ``trainer`` from ``out``'s checkpoint (its ``sections`` of the config must match), or start
    the run folder (``config.yaml``); rank 0 checks the disk space first."""
    cfg, main = trainer.cfg, trainer.info.rank == 0
    if main:  # checkpoint.pt (model, EMA, two Adam moments) and ema.pt, each briefly twice while replaced
        ensure_space(out, 2 * 5 * 4 * trainer.parameter_count())
    if (out / CHECKPOINT).is_file():
        trainer.step = load_checkpoint(out / CHECKPOINT, trainer.model, trainer.ema, trainer.optimizer, cfg,
                                       resume_anyway, sections=sections, restore=trainer.restore)
        if main:
            logger.info("resuming %s at step %d", out, trainer.step)
            _trim_log(out, trainer.step)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / CONFIG_FILE) as tmp:
            dump_config(cfg, tmp)


SNAPSHOTS = "snapshots"
"""The folder of a run's ``train.snapshot_every`` EMA snapshots."""


def snapshot_path(out: Path, step: int) -> Path:
    """The ``ema.pt`` snapshot of a run at ``out`` after ``step`` steps (``train.snapshot_every``)."""
    return out / SNAPSHOTS / f"ema_{step:07d}.pt"


def snapshots(out: Path) -> list[tuple[int, Path]]:
    """The ``(step, path)`` of each EMA snapshot of the run at ``out``, in step order."""
    return sorted((int(p.stem.removeprefix("ema_")), p) for p in (out / SNAPSHOTS).glob("ema_*.pt"))


def run_steps(trainer: DiffusionTrainer, data: LayerPairs, out: Path, store_manifest: dict[str, Any], *,
              desc: str = "train", deadline: float | None = None) -> Path:
    """Step ``trainer`` on ``data`` up to ``train.steps`` with a progress bar, logging to
    ``train_log.jsonl`` and writing ``ema.pt`` and ``checkpoint.pt`` every ``checkpoint_every`` steps and
    at the end (and an EMA snapshot every ``snapshot_every`` steps); ``deadline`` (``time.monotonic()``
    seconds) ends the run early, at a log step, with both written. Returns ``out/ema.pt``."""
    cfg, info = trainer.cfg, trainer.info
    tc, main = cfg.train, info.rank == 0
    loss_sum = torch.zeros((), device=info.device)
    watch, saved = LossWatch(info.device), trainer.step
    since, tick = 0, time.perf_counter()
    bar = tqdm(total=tc.steps, initial=trainer.step, desc=desc, unit="step", disable=not main)
    done = trainer.step >= tc.steps
    while not done:
        keys = item_positions(trainer.step, tc.batch_size, info.rank, info.world_size)
        x0, x_cond, y = data.batch(items_at(keys, len(data), tc.seed))
        loss, grad_norm = trainer.train_step(x0, x_cond, y, keys)
        watch.update(loss, trainer.step)
        loss_sum += loss
        since += 1
        bar.update(1)
        logged = trainer.step % tc.log_every == 0
        late = deadline is not None and logged and distributed.all_reduce_sum(
            torch.tensor(float(time.monotonic() > deadline), device=info.device)).item() > 0
        if late and main:
            logger.info("%s: out of time at step %d of %d; stopping with a checkpoint", out, trainer.step,
                        tc.steps)
        done = trainer.step >= tc.steps or late
        save = trainer.step % tc.checkpoint_every == 0 or done
        if save or logged:
            kept = f"{out / CHECKPOINT} (step {saved}) is kept" if saved else "no checkpoint was written"
            watch.check(f"{desc} {out}", kept)
        if logged or done:
            mean_loss = distributed.all_reduce_sum(loss_sum.clone()).item() / (since * info.world_size)
            elapsed = time.perf_counter() - tick
            record = {"step": trainer.step, "loss": mean_loss, "lr": annealed_lr(tc, trainer.step - 1),
                      "grad_norm": grad_norm.item(), "steps_per_s": since / elapsed,
                      "items_per_s": since * tc.batch_size * info.world_size / elapsed}
            if main:
                _log(out, record)
                bar.set_postfix(loss=f"{mean_loss:.4f}", items_s=f"{record['items_per_s']:.1f}")
                logger.debug("%s", record)
            loss_sum.zero_()
            since, tick = 0, time.perf_counter()
        snapshot = main and tc.snapshot_every and trainer.step % tc.snapshot_every == 0
        weights = trainer.ema.state_dict(trainer.model) if snapshot or (main and save) else None
        if snapshot:
            trainer.save_ema(snapshot_path(out, trainer.step), store_manifest, weights)
        if main and save:  # ema.pt first: a run killed between the two redoes the step and writes both
            trainer.save_ema(out / EMA_FILE, store_manifest, weights)
            save_checkpoint(out / CHECKPOINT, trainer.model, trainer.ema, trainer.optimizer, trainer.step,
                            cfg, trainer.extra_state())
            saved = trainer.step
    bar.close()
    distributed.barrier()
    return out / EMA_FILE
