"""The ``train`` section: diffusion training samples/s of the trainer as on main against the new step, the
original step, where a step's time goes, and the two trainers' loss curves over the same steps.

On CUDA, in one process (the order is the order of importance; rows after the first loss curve are skipped
once ``budget_s`` is spent):
- the original step (fp16 + GradScaler, microbatch 2) at batch 8;
- "current trainer": ``DiffusionTrainer`` as main runs it (the whole UNet compiled, no CUDA graph:
  ``train.cuda_graph=false``), batch 8 in one microbatch, and the split of its step into draws, forward +
  backward, clipping + AdamW and EMA;
- "new step": the same with the step replayed as a CUDA graph (``train.cuda_graph=true``, the default);
- the loss curves of both over ``curve_steps`` steps of a small UNet (same data, same seed);
- the new step compiled block by block (``train.compile_scope=blocks``, a fraction of the compile time) at
  microbatch 8, 16, 2 (batch 8) and 32 (``train_microbatches``; the batch: the larger of 8 and the microbatch).
With ``--train-rows microbatch`` only the original step and the block-compiled rows run (their ratios then
against the original step). Memory is the caching allocator's peak reservation from the trainer's
construction on (a CUDA graph's pool counts). On the CPU everything runs small and eager (the CUDA graph
does not apply there).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmarks.original import OriginalTrainStep
from benchmarks.report import Report
from benchmarks.timing import time_fn
from humanliff.config import Config, UNetConfig
from humanliff.runtime.schedule import linear_schedule
from humanliff.training.distributed import DistInfo
from humanliff.training.train import DiffusionTrainer, LayerPairs, item_positions, items_at

if TYPE_CHECKING:
    from benchmarks.run import Setup

CURVE_WINDOW = 100
"""Steps per point of the compared loss curves (fewer when the curve is short)."""
CURVE_UNET = UNetConfig(model_channels=32, num_res_blocks=1, attention_resolutions=[2], channel_mult=[1, 2, 2],
                        num_heads=2)
"""The small UNet of the loss-curve comparison (R = 32 and batch 8 on CUDA, the CPU setup's R and batch 2
on the CPU): the step's math is the one of the full size."""


def _fresh(device: torch.device) -> None:
    """Drop the previous trainer's compiled code, graphs and cached blocks before the next one."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else 0.0


def _trainer_cfg(cfg: Config, device: torch.device, batch: int, micro: int, **train: object) -> Config:
    cuda = device.type == "cuda"
    tc = dataclasses.replace(cfg.train, batch_size=batch, microbatch=micro, compile=cuda,
                             precision="bf16" if cuda else "fp32", **train)
    return dataclasses.replace(cfg, train=tc)


def _inputs(cfg: Config, device: torch.device, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device).manual_seed(batch)
    shape = (batch, cfg.triplane.channels, cfg.triplane.resolution, cfg.triplane.resolution)
    x0 = torch.randn(shape, device=device, generator=g).clamp(-1, 1).contiguous(memory_format=torch.channels_last)
    x_cond = torch.randn(shape, device=device, generator=g).clamp(-1, 1).contiguous(
        memory_format=torch.channels_last)
    return x0, x_cond, torch.randint(0, 4, (batch,), device=device, generator=g)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()`` up to the end of its device work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _throughput(rep: Report, cfg: Config, device: torch.device, label: str, baseline: float | None,
                repeats: int, phases: bool = False) -> float:
    """Samples/s of ``DiffusionTrainer(cfg)`` as one row: ``repeats`` steps back to back (no sync between
    them, as in ``humanliff train``) after the compiling first step, the capturing second and one more."""
    _fresh(device)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    tc = cfg.train
    x0, x_cond, y = _inputs(cfg, device, tc.batch_size)
    trainer = DiffusionTrainer(cfg, info)

    def step() -> None:
        trainer.train_step(x0, x_cond, y)

    firsts = [_seconds(step, device) for _ in range(3)]
    ms = _seconds(lambda: [step() for _ in range(repeats)], device) * 1e3 / repeats
    rate = tc.batch_size / ms * 1e3
    allocated = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    rep.add("train", label, rate, "samples/s", baseline,
            note=f"batch {tc.batch_size}, microbatch {tc.microbatch or tc.batch_size}, {tc.precision}; "
                 f"{ms:.1f} ms/step over {repeats} steps; first step {firsts[0]:.0f} s, second {firsts[1]:.1f} s; "
                 f"peak since built: reserved {_peak_mb(device):.0f} MB, allocated {allocated:.0f} MB")
    if phases:
        _phases(rep, trainer, x0, x_cond, y, repeats)
    return rate


def _phases(rep: Report, trainer: DiffusionTrainer, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor,
            repeats: int) -> None:
    """Where an eager-structured step goes: each phase timed on its own (ms per optimizer step)."""
    dev, tc = trainer.device, trainer.cfg.train
    b = x0.shape[0]
    micro = tc.microbatch or b
    keys = np.arange(b, dtype=np.int64)
    t, noise, cond_noise = trainer._draws(keys, x0.shape)

    def forward_backward() -> None:
        for start in range(0, b, micro):
            part = slice(start, start + micro)
            loss = trainer._loss(x0[part], x_cond[part], y[part], t[part], noise[part], cond_noise[part])
            (loss * (micro / b)).backward()

    def optimizer() -> None:
        params = list(trainer.model.parameters())
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
        trainer.optimizer.step()

    phases: dict[str, Callable[[], object]] = {
        "noise and timestep draws": lambda: trainer._draws(keys, x0.shape),
        "forward + backward": forward_backward,
        "gradient clipping + AdamW (fused on CUDA)": optimizer,
        "EMA (multi-tensor lerp)": lambda: trainer.ema.update(trainer.model),
    }
    for name, fn in phases.items():
        ms = time_fn(fn, warmup=1, repeats=repeats, device=dev).median_ms
        rep.add("train", f"current trainer's step, {name}", ms, "ms", note=f"batch {b}, microbatch {micro}")
    trainer.optimizer.zero_grad(set_to_none=True)


def curve_data(cfg: Config, subjects: int = 4) -> np.ndarray:
    """Smooth random layered planes ``[S, 4, C, R, R]`` (fp16, as a store holds), each layer the previous
    plus a smooth change, so that a small UNet has something to learn."""
    g = torch.Generator().manual_seed(0)
    res, ch = cfg.triplane.resolution, cfg.triplane.channels
    low = torch.randn(subjects, 4, ch, max(res // 4, 1), max(res // 4, 1), generator=g).cumsum(dim=1) * 0.3
    planes = torch.nn.functional.interpolate(low.flatten(0, 1), size=(res, res), mode="bilinear",
                                             align_corners=False).view(subjects, 4, ch, res, res)
    return planes.clamp(-1, 1).half().numpy()


def loss_curve(cfg: Config, planes: np.ndarray, device: torch.device) -> tuple[np.ndarray, float]:
    """Per-step losses of ``cfg.train.steps`` steps from a fresh trainer on ``planes``, fed as ``humanliff
    train`` feeds them (same item order and draws for the same seed), and the seconds they took."""
    _fresh(device)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    tc = cfg.train
    trainer = DiffusionTrainer(cfg, info)
    data = LayerPairs(planes, device)
    losses = torch.zeros(tc.steps, device=device)
    start = time.perf_counter()
    for step in range(tc.steps):
        keys = item_positions(step, tc.batch_size, 0, 1)
        x0, x_cond, y = data.batch(items_at(keys, len(data), tc.seed))
        loss, _ = trainer.train_step(x0, x_cond, y, keys)
        losses[step] = loss
    curve = losses.cpu().numpy()
    return curve, time.perf_counter() - start


def compare_curves(a: np.ndarray, b: np.ndarray, window: int = CURVE_WINDOW) -> dict:
    """Window means of two loss curves and their largest difference in standard errors of a window mean
    (the spread of the losses inside each window; the noise the step-to-step draws give)."""
    window = max(1, min(window, len(a) // 4 or 1))
    n = len(a) // window
    wa, wb = a[: n * window].reshape(n, window), b[: n * window].reshape(n, window)
    se = np.sqrt((wa.var(axis=1) + wb.var(axis=1)) / window) + 1e-12
    z = np.abs(wa.mean(axis=1) - wb.mean(axis=1)) / se
    return {"window": window, "before": wa.mean(axis=1).tolist(), "after": wb.mean(axis=1).tolist(),
            "standard_error": se.tolist(), "max_z": float(z.max()), "max_abs_diff": float(np.abs(a - b).max())}


def _curves(rep: Report, s: Setup, label: str, **after: object) -> None:
    """Loss curves of the current trainer and the new step (``after``: its train settings) on the same data."""
    dev = s.device
    res, batch = (32, 8) if dev.type == "cuda" else (s.resolution, 2)
    small = dataclasses.replace(s.cfg, unet=CURVE_UNET,
                                triplane=dataclasses.replace(s.cfg.triplane, resolution=res))
    base = _trainer_cfg(small, dev, batch, batch, steps=s.curve_steps, lr=2e-4, lr_final=2e-5,
                        lr_anneal_steps=s.curve_steps, ema_rate=0.999)
    planes = curve_data(base)
    before, before_s = loss_curve(dataclasses.replace(base, train=dataclasses.replace(
        base.train, cuda_graph=False)), planes, dev)
    new, new_s = loss_curve(dataclasses.replace(base, train=dataclasses.replace(base.train, **after)), planes, dev)
    stats = compare_curves(before, new)
    tail = max(1, len(before) // 20)
    note = f"small UNet (32 channels, R {res}), batch {batch}, {s.curve_steps} steps, same data and seed; " \
           f"{stats['window']}-step windows"
    rep.add("train", f"loss curve, current trainer, mean of the last {tail} steps", float(before[-tail:].mean()),
            "loss", note=f"{note}; {before_s:.0f} s for the run including compile")
    rep.add("train", f"loss curve, {label}, mean of the last {tail} steps", float(new[-tail:].mean()), "loss",
            note=f"{note}; {new_s:.0f} s for the run including compile")
    rep.add("train", f"loss curves, {label} vs current trainer: largest window difference", stats["max_z"],
            "standard errors", note=f"within noise below 3; largest per-step difference "
                                    f"{stats['max_abs_diff']:.3g}")
    payload = {"label": label, "steps": s.curve_steps, **stats, "per_step_before": before.tolist(),
               "per_step_after": new.tolist()}
    slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
    for out in rep.out_dirs:
        (out / f"{rep.stem}-train-curve-{slug}.json").write_text(json.dumps(payload))


def bench_train(rep: Report, s: Setup, original_unet: Callable[[], torch.nn.Module]) -> None:
    """The ``train`` section (see the module docstring); ``original_unet()`` gives the original step's
    UNet (random weights)."""
    dev, cuda = s.device, s.device.type == "cuda"
    start = time.perf_counter()
    repeats = 20 if cuda else 1
    batch = 8 if cuda else 2
    if cuda:
        torch.backends.cudnn.benchmark = True  # as ``humanliff train`` sets it
        torch.set_float32_matmul_precision("high")
        _fresh(dev)
        x0, x_cond, y = _inputs(s.cfg, dev, batch)
        acp = linear_schedule().float().to(dev)
        original = OriginalTrainStep(original_unet().train(), acp)
        t = time_fn(lambda: original.step(x0, x_cond, y), warmup=2, repeats=5, device=dev)
        original_rate = batch / t.median_ms * 1e3
        rep.add("train", f"original step, batch {batch}, fp16 autocast, microbatch 2", original_rate,
                "samples/s", note=f"peak allocated {t.peak_mb:.0f} MB")
        del original, x0, x_cond, y
    if s.train_rows == "microbatch" and cuda:
        before, versus = original_rate, "the original step"
    else:
        before = _throughput(rep, _trainer_cfg(s.cfg, dev, batch, batch, cuda_graph=False), dev,
                             f"current trainer (train.cuda_graph=false), whole UNet compiled, microbatch {batch}",
                             None, repeats, phases=True)
        versus = "the current trainer"
        _throughput(rep, _trainer_cfg(s.cfg, dev, batch, batch), dev,
                    f"new step (CUDA graph), whole UNet compiled, microbatch {batch} (ratio: vs {versus})",
                    before, repeats)
        _curves(rep, s, "new step (CUDA graph)")
    micros = [int(m) for m in s.train_microbatches.split(",")]
    blocks = [(max(batch, m), m) for m in micros] if cuda else [(batch, 1)]
    skipped, last = [], 0.0
    for b, micro in blocks:
        label = f"new step (CUDA graph), compiled block by block, batch {b}, microbatch {micro} (ratio: vs {versus})"
        if time.perf_counter() - start + last > s.train_budget_s:  # the previous row's time as the estimate
            skipped.append(label)
            continue
        row_start = time.perf_counter()
        try:
            _throughput(rep, _trainer_cfg(s.cfg, dev, b, micro, compile_scope="blocks"), dev, label, before,
                        repeats)
        except torch.OutOfMemoryError:
            rep.add("train", label, 0.0, "samples/s", note="out of memory")
        last = time.perf_counter() - row_start
    rep.meta["train_skipped"] = "; ".join(skipped) or "none"
    rep.meta["train_seconds"] = f"{time.perf_counter() - start:.0f}"
    rep.write()
    _fresh(dev)
