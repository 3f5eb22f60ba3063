"""Few-step distillation (``humanliff distill``): a student that samples each layer in ``distill.steps`` calls.

The student has the teacher's architecture and state-dict layout and predicts epsilon as the teacher does
(so ``load_unet``, ``export`` and ``run`` take it unchanged); it starts as a copy of the teacher. Its
schedule (``runtime.schedule.DistilledSchedule``: the ``trailing_timesteps`` of its step count and the rule
between calls) is written as ``distilled`` into its ``ema.pt``, with ``sample.sampler: distilled``.
Methods (``METHODS``, ``distill.method``):

- ``progressive`` (Salimans & Ho 2022): rounds halve the teacher's DDIM grid of ``distill.teacher_steps``
  down to ``distill.steps``; in each round the student learns to take in one DDIM step the two steps of
  the round's teacher (the diffusion model, then the previous round's student, its EMA weights).
  Sampled deterministically (rule ``ddim``). Each finished round's student is kept beside the run's
  ``ema.pt`` as ``student_<calls>_calls.pt`` (e.g. 16 and 8 calls on the way to 4).
- ``consistency`` (consistency distillation, Song et al. 2023, Algorithm 2, with the stop-gradient student
  as its target network, mu = 0 as in Song & Dhariwal 2023): on the grid of ``teacher_steps`` trailing
  timesteps, the student's x0 at t_n is pulled towards its own x0 at t_n+1 after one teacher DDIM step
  (towards the teacher's x0 at the last grid point). Sampled with fresh noise between calls (rule
  ``consistency``).

- ``dmd`` (distribution matching distillation, Yin et al. 2024, DMD2's form): the student's samples move
  along the difference of the teacher's denoiser and a fake one fitted to them online (``DMDTrainer``);
  usually from a progressive student (``distill.init``). Sampled with fresh noise between calls.

The first two regress the student's epsilon on the target's (its x0 error weighted by the truncated SNR, capped at
``distill.weight_cap``). Data: the store's (subject, layer) pairs, or (``teacher_samples`` M) M humans the
teacher samples once with its own sampler (``teacher_planes.npy``), so the student learns the teacher's
distribution with the teacher's layers as conditions. Optimizer, EMA, bf16, torch.compile, the step as one
CUDA graph on one GPU (``train.cuda_graph``; a progressive round captures a new one), DDP, logging,
checkpoints and resume are the diffusion trainer's (``humanliff.training.train``, ``train.*``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanliff.config import Config
from humanliff.ema_file import read_ema, resolve_ema
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.io import atomic_path, require_finite
from humanliff.models.checkpoint import load_unet_weights
from humanliff.models.inference import inference_unet
from humanliff.models.unet import UNet, build_unet
from humanliff.runtime.layered import human_generators, sample_layers
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.runtime.schedule import DistilledSchedule, linear_schedule, q_sample, trailing_timesteps
from humanliff.training import distributed
from humanliff.training.checkpoint import CHECKPOINT, MODEL_SECTIONS
from humanliff.training.distributed import DistInfo
from humanliff.training.ema import EMA
from humanliff.training.train import DiffusionTrainer, LayerPairs, open_training_store, run_steps, start_run

logger = logging.getLogger(__name__)

TEACHER_PLANES = "teacher_planes.npy"
"""The teacher's samples a run distils on (``teacher_samples`` > 0): fp16 ``[M, 4, C, R, R]``."""
DISTILL_TRAIN = {"steps": 2000, "lr": 5e-5, "lr_final": 5e-5, "lr_anneal_steps": 0, "ema_rate": 0.99,
                 "weight_decay": 0.0, "cond_noise": 0.0, "checkpoint_every": 500, "log_every": 50}
"""``train`` settings of a distillation run over the teacher's (``--set train.*`` overrides them)."""


def x0_from_eps(x: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_0 from x_t and epsilon with per-row ``abar [B, 1, 1, 1]``: ``(x - sqrt(1 - abar) eps) / sqrt(abar)``."""
    return (x - (1.0 - abar).sqrt() * eps) / abar.sqrt()


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Epsilon from x_t and x_0 with per-row ``abar [B, 1, 1, 1]`` (< 1): ``(x - sqrt(abar) x0) / sqrt(1 - abar)``."""
    return (x - abar.sqrt() * x0) / (1.0 - abar).sqrt()


def load_teacher(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, Path]:
    """A diffusion run's ``ema.pt`` (or its folder) as ``(state_dict, config, path)``; one-line errors for a
    file that is not one (e.g. a bare state dict), one without a diffusion config or a student that is
    already distilled."""
    path = resolve_ema(path)
    blob = read_ema(path)
    if not isinstance(blob["config"], dict) or not isinstance(blob["config"].get("diffusion"), dict):
        raise InputFileError(path, "the teacher has no diffusion config (config.diffusion): its noise schedule "
                                   "is unknown")
    if blob.get("distilled") is not None:
        raise InputFileError(path, "is already a distilled student; distil from the diffusion run it came from")
    try:
        cfg = Config.from_dict(blob["config"], source=f"{path}: config")
    except HumanLiffError as exc:
        raise InputFileError(path, f"bad stored config ({exc})") from exc
    require_finite(blob["state_dict"], "the UNet weights", path)
    return blob["state_dict"], cfg, path


def check_plan(cfg: Config, teacher: Path) -> None:
    """Refuse a ``distill`` section the schedule cannot make (one line naming the teacher)."""
    d, total = cfg.distill, cfg.diffusion.steps
    ratio = d.teacher_steps / d.steps
    problem = None
    if d.teacher_steps > total:
        problem = f"distill.teacher_steps {d.teacher_steps} exceeds the teacher's {total} diffusion steps"
    elif d.steps >= d.teacher_steps:
        problem = f"--steps {d.steps} must be below distill.teacher_steps {d.teacher_steps} (the teacher's grid)"
    elif d.method == "progressive" and (ratio != int(ratio) or int(ratio) & (int(ratio) - 1)):
        problem = (f"--steps {d.steps}: progressive distillation halves distill.teacher_steps "
                   f"{d.teacher_steps} round by round, so it must be {d.teacher_steps} / 2^k")
    elif d.method == "consistency" and d.teacher_steps % d.steps:
        problem = (f"--steps {d.steps}: the student's timesteps must lie on the teacher's grid, so it must "
                   f"divide distill.teacher_steps {d.teacher_steps}")
    elif d.method == "progressive" and cfg.train.steps < round(math.log2(ratio)):
        problem = f"train.steps {cfg.train.steps} is fewer than the {round(math.log2(ratio))} rounds"
    if problem:
        raise InputFileError(teacher, f"cannot make a {d.steps}-step student: {problem}")


def load_start(path: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The weights a student starts from (``distill.init``: an ``ema.pt`` or its run folder, a student or not)
    as ``(state_dict, path)``; one-line errors for a file that is not one or holds non-finite weights."""
    path = resolve_ema(path)
    state = read_ema(path)["state_dict"]
    require_finite(state, "the UNet weights", path)
    return state, path


def distill_config(teacher_cfg: Config, teacher: Path, device: torch.device, overrides: tuple[str, ...] = (),
                   method: str | None = None, steps: int | None = None, init: str | Path | None = None) -> Config:
    """The run's config: the teacher's, ``DISTILL_TRAIN`` (bf16 and compiled on CUDA, fp32 eager on the
    CPU), ``overrides``, then ``method`` / ``steps`` / ``init`` when given; the sampler becomes
    ``distilled``."""
    cuda = device.type == "cuda"
    train = {**DISTILL_TRAIN, "precision": "bf16" if cuda else "fp32", "compile": cuda}
    cfg = Config.from_dict({**teacher_cfg.to_dict(), "train": {**teacher_cfg.to_dict()["train"], **train}},
                           source=f"{teacher}: config").with_overrides(overrides)
    given = {k: v for k, v in (("method", method), ("steps", steps), ("init", init and str(init))) if v is not None}
    if steps is not None and steps < 1:
        raise InputFileError(teacher, f"cannot make a {steps}-step student: --steps must be at least 1")
    cfg = Config.from_dict({**cfg.to_dict(), "distill": {**cfg.to_dict()["distill"], **given,
                                                          "teacher": str(teacher.resolve())}})
    check_plan(cfg, teacher)
    sample = dataclasses.replace(cfg.sample, sampler="distilled", steps=cfg.distill.steps)
    return dataclasses.replace(cfg, sample=sample)


class DistillTrainer(DiffusionTrainer):
    """The student (``model``, from the teacher's weights or ``start``'s: ``(state_dict, its file)``), its EMA
    and optimizer, and the frozen teacher.

    Subclasses set ``rule`` and ``_pair``: the noisy input, its timestep and the target x0 of a batch.
    """

    rule = ""

    def __init__(self, cfg: Config, info: DistInfo, teacher_state: dict[str, torch.Tensor], teacher: Path,
                 run: Path, store_manifest: dict[str, Any],
                 start: tuple[dict[str, torch.Tensor], Path] | None = None) -> None:
        super().__init__(cfg, info)
        load_unet_weights(self.model, *(start or (teacher_state, teacher)))
        self.ema = EMA(self.model, cfg.train.ema_rate)
        self.run, self.store_manifest = run, store_manifest
        self.checkpoint_path = run / CHECKPOINT
        self.teacher = self._frozen(teacher_state, teacher)
        self.teacher_fn = torch.compile(self.teacher) if cfg.train.compile else self.teacher
        self.target_fn = torch.compile(self.model) if cfg.train.compile else self.model
        total = self.alphas_cumprod.shape[0]
        self.table = torch.cat([self.alphas_cumprod, self.alphas_cumprod.new_ones(1)])
        """Cumulative alphas with a last entry 1.0 at index T: "clean", after the last call."""
        self.total = total
        self.grids: dict[int, torch.Tensor] = {}
        """``grid(steps)`` by ``steps``, made on the device once (before a CUDA graph's capture reads them)."""

    def _frozen(self, state: dict[str, torch.Tensor], source: Path) -> UNet:
        unet = build_unet(self.cfg.unet, self.cfg.triplane.resolution, self.cfg.triplane.channels)
        load_unet_weights(unet, state, source)
        return unet.to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)

    def grid(self, steps: int) -> torch.Tensor:
        """``trailing_timesteps(T, steps)`` and T ("clean") on the device: int64 ``[steps + 1]``."""
        if steps not in self.grids:
            self.grids[steps] = torch.tensor(trailing_timesteps(self.total, steps) + [self.total], device=self.device)
        return self.grids[steps]

    def student_steps(self) -> int:
        """UNet calls per layer of the student as it is now."""
        return self.cfg.distill.steps

    def schedule(self) -> DistilledSchedule:
        """The student's sampling schedule (written into ``ema.pt``)."""
        d = self.cfg.distill
        return DistilledSchedule(d.method, self.rule, tuple(trailing_timesteps(self.total, self.student_steps())),
                                 d.teacher, d.teacher_steps)

    def ema_contents(self) -> tuple[Config, dict[str, Any]]:
        sample = dataclasses.replace(self.cfg.sample, sampler="distilled", steps=self.student_steps())
        return dataclasses.replace(self.cfg, sample=sample), {"distilled": self.schedule().to_record()}

    def _call(self, net: Any, x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor
              ) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.precision == "bf16"):
            return net(x.contiguous(memory_format=torch.channels_last), t, x_cond, y).float()

    def _abar(self, t: torch.Tensor) -> torch.Tensor:
        return self.table[t].view(-1, 1, 1, 1)

    def teacher_step(self, net: Any, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                     x_cond: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One DDIM step (eta 0, x0 clipped to [-1, 1], as ``runtime.sampling.ddim_step``) of ``net`` from
        ``t`` to ``t_next`` (T: to x0), per row."""
        abar = self._abar(t)
        x0 = x0_from_eps(x, self._call(net, x, t, x_cond, y), abar).clamp(-1.0, 1.0)
        nxt = self._abar(t_next)
        return nxt.sqrt() * x0 + (1.0 - nxt).sqrt() * eps_from_x0(x, x0, abar)

    def _pair(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t_raw: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _loss(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor, cond_noise: torch.Tensor) -> torch.Tensor:
        """Weighted MSE between the student's epsilon at ``(x_t, t)`` and the target x0's (float32 scalar)."""
        x_cond = self._noisy_condition(x_cond, y, cond_noise)
        with torch.no_grad():
            t_in, x_t, target = self._pair(x0, x_cond, y, t, noise)
            abar = self._abar(t_in)
            eps_target = eps_from_x0(x_t, target, abar)
            weight = ((1.0 - abar) / abar).clamp(1.0, self.cfg.distill.weight_cap)
        eps = self._call(self.forward, x_t, t_in, x_cond, y)
        return (weight * (eps - eps_target) ** 2).mean()


def round_student(run: Path, calls: int) -> Path:
    """Where a progressive run keeps the student of the round that samples in ``calls`` calls a layer (an
    ``ema.pt`` of its own; the last round's is ``ema.pt``)."""
    return run / f"student_{calls}_calls.pt"


class ProgressiveTrainer(DistillTrainer):
    """Progressive distillation: ``log2(teacher_steps / steps)`` rounds of ``train.steps / rounds`` steps."""

    rule = "ddim"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        d = self.cfg.distill
        self.rounds = round(math.log2(d.teacher_steps / d.steps))
        self.per_round = self.cfg.train.steps // self.rounds
        self.round = 0

    def student_steps(self) -> int:
        return self.cfg.distill.teacher_steps >> (self.round + 1)

    def _round_at(self, step: int) -> int:
        return min(step // self.per_round, self.rounds - 1)

    def _enter_round(self, target: int) -> None:
        """Keep the finished round's student (``round_student``), make its EMA weights the teacher and the new
        student; fresh EMA and Adam moments, and (``graphed``) a fresh step graph: the round's grids, EMA and
        moments are other tensors."""
        while self.round < target:
            weights = self.ema.state_dict(self.model)
            if self.info.rank == 0:
                self.save_ema(round_student(self.run, self.student_steps()), self.store_manifest, weights)
            self.teacher.load_state_dict(weights)
            self.model.load_state_dict(weights)
            self.ema = EMA(self.model, self.cfg.train.ema_rate)
            self.optimizer.state.clear()
            self.round += 1
            if self.graphed:
                self.graph = self._graphed_update(self._update)
            if self.info.rank == 0:
                logger.info("progressive round %d of %d: %d -> %d steps", self.round + 1, self.rounds,
                            2 * self.student_steps(), self.student_steps())

    def train_step(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor,
                   keys: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._enter_round(self._round_at(self.step))
        return super().train_step(x0, x_cond, y, keys)

    def extra_state(self) -> dict[str, Any]:
        teacher = {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()} if self.round else None
        return {"round": self.round, "per_round": self.per_round, "teacher": teacher}

    def restore(self, extra: dict[str, Any]) -> None:
        if extra.get("per_round") != self.per_round:
            raise InputFileError(self.checkpoint_path, f"progressive rounds were {extra.get('per_round')} steps "
                                                       f"long, now {self.per_round}; keep train.steps")
        self.round = int(extra["round"])
        if self.round:
            load_unet_weights(self.teacher, extra["teacher"], self.checkpoint_path)

    def _pair(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t_raw: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.student_steps()
        student, fine = self.grid(n), self.grid(2 * n)
        i = t_raw * n // self.total
        t, mid, nxt = student[i], fine[2 * i + 1], student[i + 1]
        x_t = q_sample(x0, t, noise, self.alphas_cumprod)
        x_mid = self.teacher_step(self.teacher_fn, x_t, t, mid, x_cond, y)
        x_next = self.teacher_step(self.teacher_fn, x_mid, mid, nxt, x_cond, y)
        a_t, a_n = self._abar(t), self._abar(nxt)
        ratio = ((1.0 - a_n) / (1.0 - a_t)).sqrt()
        return t, x_t, (x_next - ratio * x_t) / (a_n.sqrt() - ratio * a_t.sqrt())


class ConsistencyTrainer(DistillTrainer):
    """Consistency distillation on the grid of ``teacher_steps`` trailing timesteps."""

    rule = "consistency"

    def _pair(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t_raw: torch.Tensor,
              noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.cfg.distill.teacher_steps
        grid = self.grid(k)
        n = t_raw * k // self.total
        t, nxt = grid[n], grid[n + 1]
        x_t = q_sample(x0, t, noise, self.alphas_cumprod)
        x_hat = self.teacher_step(self.teacher_fn, x_t, t, nxt, x_cond, y)
        at_next = nxt.clamp(max=self.total - 1)
        own = x0_from_eps(x_hat, self._call(self.target_fn, x_hat, at_next, x_cond, y), self._abar(at_next))
        clean = (nxt == self.total).view(-1, 1, 1, 1)
        return t, x_t, torch.where(clean, x_hat, own.clamp(-1.0, 1.0))


DMD_T_RANGE = (0.02, 0.98)
"""The share of the T timesteps at which distribution matching noises the student's samples (DMD2's range)."""


class DMDTrainer(DistillTrainer):
    """Distribution matching distillation (DMD2, Yin et al. 2024): the student's x0 at one of its own
    timesteps (input: the data noised there) moves along the difference of two denoisers of its noised
    samples, the frozen teacher's ("real") and a trainable copy of it fitted to the student's outputs
    ("fake"), so the student's distribution moves towards the teacher's rather than to the mean of its
    targets; ``distill.fake_updates`` fake updates per student update, ``distill.regression`` weighs an x0
    regression onto the data beside it (DMD's first form). Usually started from a progressive student
    (``distill.init``). Sampled with fresh noise between calls (rule ``consistency``)."""

    rule = "consistency"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.draws = 2 + self.cfg.distill.fake_updates
        self.fake = self._frozen(self.teacher.state_dict(), Path(self.cfg.distill.teacher)).train()
        self.fake.requires_grad_(True)
        self.fake_fn = torch.compile(self.fake) if self.cfg.train.compile else self.fake
        cuda = self.device.type == "cuda"
        self.fake_optimizer = torch.optim.AdamW(self.fake.parameters(), lr=self.cfg.train.lr, weight_decay=0.0,
                                                fused=cuda, foreach=not cuda, capturable=self.graphed)
        self.samples: list[tuple[torch.Tensor, ...]] = []
        """Per micro-batch of the step: the student's x0 (detached), its condition, class and fake draws."""

    def _span(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw draws in [0, T) mapped into ``DMD_T_RANGE``."""
        low, high = (round(f * self.total) for f in DMD_T_RANGE)
        return low + raw * (high - low) // self.total

    def _loss(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor, cond_noise: torch.Tensor) -> torch.Tensor:
        """The distribution-matching loss (its gradient in x0 is the two denoisers' difference, normalised
        per item) plus the weighted regression; keeps the step's samples for the fake updates."""
        x_cond = self._noisy_condition(x_cond, y, cond_noise)
        noises = noise.chunk(self.draws, dim=1)
        grid = self.grid(self.student_steps())
        t_in = grid[t[:, 0] * self.student_steps() // self.total]
        abar = self._abar(t_in)
        x_in = q_sample(x0, t_in, noises[0], self.alphas_cumprod)
        eps = self._call(self.forward, x_in, t_in, x_cond, y)
        own = x0_from_eps(x_in, eps, abar).clamp(-1.0, 1.0)
        with torch.no_grad():
            t_d = self._span(t[:, 1])
            x_d = q_sample(own, t_d, noises[1], self.alphas_cumprod)
            a_d = self._abar(t_d)
            real = x0_from_eps(x_d, self._call(self.teacher_fn, x_d, t_d, x_cond, y), a_d).clamp(-1.0, 1.0)
            fake = x0_from_eps(x_d, self._call(self.fake_fn, x_d, t_d, x_cond, y), a_d).clamp(-1.0, 1.0)
            scale = (own - real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
            target = own - (fake - real) / scale
            self.samples.append((own.detach(), x_cond, y, t[:, 2:], torch.cat(noises[2:], dim=1)))
        loss = 0.5 * ((own - target) ** 2).mean()
        if self.cfg.distill.regression > 0:
            weight = ((1.0 - abar) / abar).clamp(1.0, self.cfg.distill.weight_cap)
            loss = loss + self.cfg.distill.regression * (weight * (eps - noises[0]) ** 2).mean()
        return loss

    def _update(self, x0: torch.Tensor, x_cond: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                noise: torch.Tensor, cond_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's step, then ``fake_updates`` steps of the fake denoiser on the student's samples
        (epsilon MSE at timesteps in ``DMD_T_RANGE``)."""
        self.samples = []
        result = super()._update(x0, x_cond, y, t, noise, cond_noise)
        b = x0.shape[0]
        for k in range(self.cfg.distill.fake_updates):
            for own, cond, labels, times, noises in self.samples:
                t_f = self._span(times[:, k])
                z = noises.chunk(self.cfg.distill.fake_updates, dim=1)[k]
                x_f = q_sample(own, t_f, z, self.alphas_cumprod)
                loss = ((self._call(self.fake_fn, x_f, t_f, cond, labels) - z) ** 2).mean()
                (loss * (own.shape[0] / b)).backward()
            self.fake_optimizer.step()
            self.fake_optimizer.zero_grad(set_to_none=True)
        self.samples = []
        return result

    def extra_state(self) -> dict[str, Any]:
        return {"fake": {k: v.detach().cpu() for k, v in self.fake.state_dict().items()},
                "fake_optimizer": self.fake_optimizer.state_dict()}

    def restore(self, extra: dict[str, Any]) -> None:
        load_unet_weights(self.fake, extra["fake"], self.checkpoint_path)
        self.fake_optimizer.load_state_dict(extra["fake_optimizer"])


METHODS: dict[str, type[DistillTrainer]] = {"progressive": ProgressiveTrainer, "consistency": ConsistencyTrainer,
                                            "dmd": DMDTrainer}
"""``distill.method`` -> trainer."""


def teacher_planes(trainer: DistillTrainer, teacher_cfg: Config, humans: int, out: Path) -> np.ndarray:
    """``humans`` humans sampled by the teacher as ``generate`` samples them (its ``sample`` section: sampler,
    steps, eta, ``keep_top``, ``strength``), fp16 ``[humans, 4, C, R, R]``: read
    from ``out/teacher_planes.npy`` when a run already wrote them, else sampled by rank 0 and written."""
    path = out / TEACHER_PLANES
    c, r = trainer.cfg.triplane.channels, trainer.cfg.triplane.resolution
    shape = (humans, NUM_LAYERS, c, r, r)
    if trainer.info.rank == 0 and not (path.is_file() and np.load(path, mmap_mode="r").shape == shape):
        s = teacher_cfg.sample
        unet_fn = inference_unet(trainer.teacher, precision=trainer.cfg.train.precision)
        group = min(humans, 64)
        d = teacher_cfg.diffusion
        abar = linear_schedule(d.steps, d.beta_start, d.beta_end).to(trainer.device)
        start = time.perf_counter()
        parts = []
        for first in range(0, humans, group):
            n = min(group, humans - first)
            planes = sample_layers(unet_fn, (n, c, r, r), abar, list(range(NUM_LAYERS)), s.sampler, s.steps,
                                   generator=human_generators(10**6 + first, n), eta=s.eta, keep_top=s.keep_top,
                                   strength=s.strength, progress=False)
            parts.append(planes.transpose(0, 1).cpu().half().numpy())
            logger.info("teacher samples: %d of %d humans (%s %d)", first + n, humans, s.sampler, s.steps)
        planes = np.concatenate(parts)
        require_finite(planes, "the teacher's samples", path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, planes)
        logger.info("teacher samples: %d humans in %.1f s", humans, time.perf_counter() - start)
    distributed.barrier()
    return np.load(path, mmap_mode="r")


def distill(teacher: str | Path, store_path: str | Path, out: str | Path, *, method: str | None = None,
            steps: int | None = None, overrides: tuple[str, ...] = (), device: str | None = None,
            teacher_samples: int = 0, resume_anyway: bool = False, max_seconds: float | None = None,
            init: str | Path | None = None) -> Path:
    """Distil ``teacher`` (a diffusion run's ``ema.pt``) into a ``steps``-call student in the run folder
    ``out`` (resumed when it holds a checkpoint); returns ``out/ema.pt``. ``init``: the ``ema.pt`` the student
    starts from (``distill.init``; default the teacher).

    ``store_path``: the teacher's tri-plane store (its pairs are the data unless ``teacher_samples`` > 0);
    ``overrides``: ``section.key=value`` over the teacher's config and ``DISTILL_TRAIN``; ``max_seconds``:
    stop early with a checkpoint after this much training time. Under torchrun one process per device.
    """
    if teacher_samples < 0:
        raise HumanLiffError(f"--teacher-samples must be 0 or more, got {teacher_samples}")
    state, teacher_cfg, teacher_path = load_teacher(teacher)
    info = distributed.init_distributed(device)
    try:
        cfg = distill_config(teacher_cfg, teacher_path, info.device, overrides, method, steps, init)
        start = load_start(cfg.distill.init) if cfg.distill.init else None
        if start is not None:
            cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, init=str(start[1].resolve())))
        store, store_manifest = open_training_store(cfg, Path(store_path), info)
        out = Path(out)
        trainer = METHODS[cfg.distill.method](cfg, info, state, teacher_path, out, store_manifest, start)
        start_run(trainer, out, resume_anyway, sections=(*MODEL_SECTIONS, "distill"))
        planes = teacher_planes(trainer, teacher_cfg, teacher_samples, out) if teacher_samples else store.planes
        data = LayerPairs(planes, info.device)
        if info.rank == 0:
            logger.info("distilling %s (%s) into a %d-step student, %s, on %d items, %d rank(s) x batch %d, "
                        "%s%s", teacher_path, cfg.distill.method, cfg.distill.steps,
                        f"{teacher_samples} teacher humans" if teacher_samples else "the store's pairs",
                        len(data), info.world_size, cfg.train.batch_size, cfg.train.precision,
                        ", compiled" if cfg.train.compile else "")
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        ema = run_steps(trainer, data, out, store_manifest, desc=f"distill {cfg.distill.method}",
                        deadline=deadline)
        if info.rank == 0 and trainer.step < cfg.train.steps:
            logger.warning("stopped early at step %d of %d: the student samples in %d calls a layer (asked: %d); "
                           "the same command resumes the run", trainer.step, cfg.train.steps,
                           trainer.student_steps(), cfg.distill.steps)
        return ema
    finally:
        distributed.cleanup()
