"""The diffusion noise schedule as data: linear betas, the original's respacing, q(x_t | x_0), and a
distilled student's few-step schedule (``DistilledSchedule``).

Tables are float64 tensors on the CPU (the original builds them in float64 numpy); samplers read
coefficients from them as Python floats, so nothing here forces a host-device sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.errors import InputFileError


def linear_betas(steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """Linear beta schedule (Ho et al. 2020) scaled to ``steps`` as the original: float64 ``[steps]``."""
    scale = 1000.0 / steps
    return torch.linspace(scale * start, scale * end, steps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """Cumulative product of ``1 - betas``: float64 ``[T]``."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def linear_schedule(steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """The diffusion process's ``alphas_cumprod`` for linear betas ``start..end`` over ``steps``: float64
    ``[steps]`` (the one build of the schedule that training, generation and the runtime use)."""
    return alphas_cumprod(linear_betas(steps, start, end))


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """The original's ``space_timesteps``: which of ``num_timesteps`` steps a respaced process keeps.

    ``section_counts`` is a list of step counts, one per equal section of the process (``[250]`` or
    ``"250"``; ``"10,15"``), or ``"ddimN"`` for a strided set of exactly N steps. Within a section the
    positions are accumulated (``position += stride``) and rounded, exactly as the original does: at 278
    of the counts 1..1000 (21, 23, 31, ...) that picks other steps than rounding ``stride * j``.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, steps = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):  # a running float sum, as the original: ``stride * j`` rounds differently
            steps.append(start + round(position))
            position += stride
        start += size
    return set(steps)


def respaced_schedule(alphas_cumprod: torch.Tensor, use_timesteps: Iterable[int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's ``SpacedDiffusion`` tables: ``(timestep_map [N] int64, betas [N] float64)``.

    ``timestep_map[i]`` is the original timestep the model sees at respaced index i; the betas are
    recomputed so that the respaced cumulative alphas equal ``alphas_cumprod[timestep_map]``.
    """
    timestep_map = torch.tensor(sorted(set(use_timesteps)), dtype=torch.int64)
    kept = alphas_cumprod.double()[timestep_map]
    previous = torch.cat([kept.new_ones(1), kept[:-1]])
    return timestep_map, 1.0 - kept / previous


def logsnr_timesteps(alphas_cumprod: torch.Tensor, steps: int) -> list[int]:
    """``steps`` distinct timesteps from T-1 down to 0, evenly spaced in log-SNR (Lu et al. 2022, the
    spacing DPM-Solver recommends); each is the nearest step, nudged where rounding would repeat one."""
    abar = alphas_cumprod.detach().double().cpu()
    total = abar.shape[0]
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be between 1 and {total}, got {steps}")
    logsnr = torch.log(abar / (1.0 - abar))
    targets = torch.linspace(float(logsnr[-1]), float(logsnr[0]), steps, dtype=torch.float64)
    nearest = (logsnr[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()
    chosen = [total - 1]
    for i, t in enumerate(nearest[1:], start=1):
        chosen.append(min(max(t, steps - 1 - i), chosen[-1] - 1))
    return chosen if steps > 1 else [0]


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor
             ) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; x0, noise ``[B, ...]``, t [B].

    ``alphas_cumprod`` ``[T]`` should live on x0's device; the coefficients are gathered on the device.
    """
    abar = alphas_cumprod[t].to(torch.float32).view(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0.float() + (1.0 - abar).sqrt() * noise.float()


def trailing_timesteps(total: int, steps: int) -> list[int]:
    """``steps`` timesteps ``round(total - j total / steps) - 1``, j = 0..steps-1, from T-1 down (the
    "trailing" spacing of few-step samplers: the last call is at ``total / steps - 1``, not at 0, and a
    grid of ``k * steps`` points holds the grid of ``steps`` as every k-th point)."""
    if not 1 <= steps <= total:
        raise ValueError(f"steps must be between 1 and {total}, got {steps}")
    return [int(round(total - j * total / steps)) - 1 for j in range(steps)]


DISTILLED_RULES = ("ddim", "consistency")
"""How a distilled student's sampler goes from one call's x0 to the next call's input: ``ddim``
(deterministic, progressive distillation) or ``consistency`` (fresh noise, consistency models)."""


@dataclass(frozen=True)
class DistilledSchedule:
    """A distilled student's sampling schedule, recorded as ``distilled`` in its ``ema.pt`` and in the
    artifacts manifest: ``{"method": str, "rule": "ddim" | "consistency", "timesteps": [t_0 > ... > t_N-1],
    "teacher": str, "teacher_steps": int}`` (the teacher's path and the distillation's grid, for the record)."""

    method: str
    rule: str
    timesteps: tuple[int, ...]
    teacher: str = ""
    teacher_steps: int = 0

    @property
    def steps(self) -> int:
        """UNet calls per layer."""
        return len(self.timesteps)

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready record."""
        return {"method": self.method, "rule": self.rule, "timesteps": list(self.timesteps),
                "teacher": self.teacher, "teacher_steps": self.teacher_steps}


def read_distilled(record: Any, source: str | Path, total: int) -> DistilledSchedule | None:
    """The schedule of a ``distilled`` record (None when there is none); ``total`` is the number of training
    timesteps. One-line ``InputFileError`` naming ``source`` when the record is malformed."""
    if record is None:
        return None
    try:
        schedule = DistilledSchedule(str(record["method"]), str(record["rule"]),
                                     tuple(int(t) for t in record["timesteps"]), str(record.get("teacher", "")),
                                     int(record.get("teacher_steps", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(source, f"bad 'distilled' record ({exc.__class__.__name__}: {exc})") from None
    ts = schedule.timesteps
    if schedule.rule not in DISTILLED_RULES:
        raise InputFileError(source, f"distilled rule '{schedule.rule}' is not one of {', '.join(DISTILLED_RULES)}")
    if not ts or any(not 0 <= t < total for t in ts) or any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
        raise InputFileError(source, f"distilled timesteps {list(ts)} are not descending within 0..{total - 1}")
    return schedule
