"""Samplers: pure functions over an epsilon-predicting denoiser ``eps_fn(x [B,C,H,W], t [B] int64) -> eps``.

``generator`` is one ``torch.Generator`` on ``x_T``'s device for the whole batch, or a sequence of them,
one per row: then row i's step noise is drawn from generator i alone (a per-row noise sampler, as
k-diffusion's ``BatchedBrownianTree``), so a row's sample does not depend on the other rows.

``t`` is always the original timestep (0..T-1), whatever the number of sampling steps, so an exported
engine trained on the original schedule can be driven by any sampler. Every sampler makes exactly
``steps`` model calls from t = T-1 down to t = 0: DDPM and DDIM over the original's respacing
(``space_timesteps(T, [steps])``), DPM-Solver++ (deterministic, and its SDE form) over timesteps evenly
spaced in log-SNR. The solver
state is float32 (coefficients from the float64 schedule); ``eps_fn`` receives ``x`` in ``x_T``'s dtype
and the result is returned in that dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from humanliff.runtime.errors import HumanLiffError, InputFileError
from humanliff.runtime.sampler_names import ETA_SAMPLERS, LOGSNR_SAMPLERS, SAMPLER_INFO, SAMPLER_NAMES, SCHEDULED
from humanliff.runtime.schedule import DistilledSchedule, logsnr_timesteps, space_timesteps

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the batch, one per row (on ``x``'s device), or None (torch's default)."""


def predict_x0(x: torch.Tensor, eps: torch.Tensor, abar: float, clip: bool) -> torch.Tensor:
    """x_0 from x_t and epsilon: ``sqrt(1/abar) x - sqrt(1/abar - 1) eps``, clamped to [-1, 1] if ``clip``."""
    x0 = math.sqrt(1.0 / abar) * x - math.sqrt(1.0 / abar - 1.0) * eps
    return x0.clamp(-1.0, 1.0) if clip else x0


def ddpm_step(x: torch.Tensor, eps: torch.Tensor, abar: float, abar_prev: float, noise: torch.Tensor | None,
              clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step with fixed-large variance (Ho et al. 2020, the original's ``p_sample``).

    ``abar`` / ``abar_prev``: cumulative alphas of this step and the next (1.0 after the last step);
    ``noise`` is None on the last step. Returns ``(x_prev, x0)``.
    """
    beta = 1.0 - abar / abar_prev
    x0 = predict_x0(x, eps, abar, clip)
    mean = (beta * math.sqrt(abar_prev) / (1.0 - abar)) * x0 \
        + ((1.0 - abar_prev) * math.sqrt(1.0 - beta) / (1.0 - abar)) * x
    if noise is None:
        return mean, x0
    return mean + math.sqrt(beta) * noise, x0


def ddim_step(x: torch.Tensor, eps: torch.Tensor, abar: float, abar_prev: float, eta: float,
              noise: torch.Tensor | None, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step (Song et al. 2021, the original's ``ddim_sample``; eps re-derived from the clamped x0).

    ``noise`` is needed only when ``eta > 0`` and this is not the last step. Returns ``(x_prev, x0)``.
    """
    x0 = predict_x0(x, eps, abar, clip)
    eps = (math.sqrt(1.0 / abar) * x - x0) / math.sqrt(1.0 / abar - 1.0)
    sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar)) * math.sqrt(1.0 - abar / abar_prev)
    x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps
    if noise is not None and sigma > 0.0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def sampler_timesteps(name: str, alphas_cumprod: torch.Tensor, steps: int,
                      schedule: DistilledSchedule | None = None) -> list[int]:
    """The ``steps`` timesteps sampler ``name`` calls the model at, from the first (near T-1) down to 0:
    the original's respacing (``ddpm``, ``ddim``), log-SNR spacing (``dpmpp``, ``dpmpp_sde``) or the
    student's ``schedule`` (``distilled``)."""
    total = alphas_cumprod.shape[0]
    if name in SCHEDULED:
        if schedule is None:
            raise HumanLiffError(f"sampler '{name}' needs a distilled schedule")
        return list(schedule.timesteps)
    if not 1 <= steps <= total:
        raise HumanLiffError(f"sampling steps must be between 1 and {total}, got {steps}")
    if name in LOGSNR_SAMPLERS:
        return list(logsnr_timesteps(alphas_cumprod, steps))
    return sorted(space_timesteps(total, [steps]), reverse=True)


def _check_skip(skip: int, count: int) -> None:
    if not 0 <= skip < count:
        raise HumanLiffError(f"cannot skip {skip} of {count} sampling steps (0 to {count - 1})")


def _steps(alphas_cumprod: torch.Tensor, steps: int, progress: bool, name: str, skip: int = 0
           ) -> Iterator[tuple[int, float, float]]:
    """Yield ``(t, abar_t, abar_next)`` over sampler ``name``'s timesteps (abar_next = 1 last), the first
    ``skip`` left out."""
    kept = sampler_timesteps(name, alphas_cumprod, steps)
    _check_skip(skip, len(kept))
    kept = kept[skip:]
    table = alphas_cumprod.detach().double().cpu().tolist()
    pairs = zip(kept, kept[1:] + [None], strict=True)
    for t, t_next in tqdm(pairs, total=len(kept), desc="sampling", unit="step", disable=not progress):
        yield t, table[t], 1.0 if t_next is None else table[t_next]


def _eps(eps_fn: EpsFn, x: torch.Tensor, t: int, dtype: torch.dtype) -> torch.Tensor:
    timesteps = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
    return eps_fn(x.to(dtype), timesteps).float()


def _noise(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped ``x`` ``[B, ...]`` float32: row i from generator i when given a sequence."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    if len(generator) != x.shape[0]:
        raise HumanLiffError(f"{len(generator)} noise generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=torch.float32)
                        for g in generator])


Known = tuple[torch.Tensor, torch.Tensor] | None
"""``(x0 [B, C, H, W], mask [B or 1, C, H, W] bool)``: where ``mask`` holds, x_t is replaced by a fresh
draw of q(x_t | x0) after every step (RePaint, Lugmayr et al. 2022, without resampling), and by x0 at
the end; None: nothing is known."""


def _paste(x: torch.Tensor, known: Known, abar: float, generator: Generators) -> torch.Tensor:
    """``x`` with the known region set to ``sqrt(abar) x0 + sqrt(1 - abar) z`` (``x0`` itself at abar 1)."""
    if known is None:
        return x
    x0, mask = known
    noisy = x0 if abar >= 1.0 else math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * _noise(x, generator)
    return torch.where(mask, noisy, x)


@torch.no_grad()
def sample_ddpm(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
                generator: Generators = None, eta: float = 0.0, clip_denoised: bool = True,
                progress: bool = False, known: Known = None, skip: int = 0) -> torch.Tensor:
    """Ancestral DDPM over the respaced process (the original samples with 250 steps); ``eta`` must be 0."""
    check_eta("ddpm", eta)
    x = x_T.float()
    for t, abar, abar_next in _steps(alphas_cumprod, steps, progress, "ddpm", skip):
        noise = _noise(x, generator) if t > 0 else None
        x, _ = ddpm_step(x, _eps(eps_fn, x, t, x_T.dtype), abar, abar_next, noise, clip_denoised)
        x = _paste(x, known, abar_next, generator)
    return x.to(x_T.dtype)


@torch.no_grad()
def sample_ddim(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
                generator: Generators = None, eta: float = 0.0, clip_denoised: bool = True,
                progress: bool = False, known: Known = None, skip: int = 0) -> torch.Tensor:
    """DDIM (Song et al. 2021); deterministic for ``eta = 0``, ancestral-like for ``eta = 1``."""
    x = x_T.float()
    for t, abar, abar_next in _steps(alphas_cumprod, steps, progress, "ddim", skip):
        noise = _noise(x, generator) if eta > 0.0 and t > 0 else None
        x, _ = ddim_step(x, _eps(eps_fn, x, t, x_T.dtype), abar, abar_next, eta, noise, clip_denoised)
        x = _paste(x, known, abar_next, generator)
    return x.to(x_T.dtype)


def _dpmpp(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, sde: bool,
           generator: Generators, eta: float, clip_denoised: bool, progress: bool, known: Known, skip: int
           ) -> torch.Tensor:
    """The DPM-Solver++(2M) loop of ``sample_dpmpp`` (``sde=False``) and ``sample_dpmpp_sde``."""
    name = "dpmpp_sde" if sde else "dpmpp"
    check_eta(name, eta)
    x = x_T.float()
    x0_old, h_old = None, None
    for t, abar, abar_next in _steps(alphas_cumprod, steps, progress, name, skip):
        x0 = predict_x0(x, _eps(eps_fn, x, t, x_T.dtype), abar, clip_denoised)
        if t == 0:
            x = _paste(x0, known, 1.0, generator)
            break
        sigma, sigma_next = math.sqrt(1.0 - abar), math.sqrt(1.0 - abar_next)
        alpha_next = math.sqrt(abar_next)
        h = 0.5 * (math.log(abar_next / (1.0 - abar_next)) - math.log(abar / (1.0 - abar)))
        # second-order multistep data prediction (the first step is first order): r = h_old / h
        denoised = x0 if x0_old is None else x0 + (0.5 * h / h_old) * (x0 - x0_old)
        if sde:
            decay = -math.expm1(-2.0 * h)
            x = (sigma_next / sigma * math.exp(-h)) * x + (alpha_next * decay) * denoised \
                + (sigma_next * math.sqrt(decay)) * _noise(x, generator)
        else:
            x = (sigma_next / sigma) * x - (alpha_next * math.expm1(-h)) * denoised
        x = _paste(x, known, abar_next, generator)
        x0_old, h_old = x0, h
    return x.to(x_T.dtype)


@torch.no_grad()
def sample_dpmpp(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
                 generator: Generators = None, eta: float = 0.0, clip_denoised: bool = True,
                 progress: bool = False, known: Known = None, skip: int = 0) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order in data prediction (Lu et al. 2022, Algorithm 2), over
    timesteps evenly spaced in log-SNR. Deterministic: ``generator`` is unused and ``eta`` must be 0.
    The result is the x0-prediction of the last call (at t = 0).
    """
    return _dpmpp(eps_fn, x_T, alphas_cumprod, steps, False, generator, eta, clip_denoised, progress, known, skip)


@torch.no_grad()
def sample_dpmpp_sde(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
                     generator: Generators = None, eta: float = 0.0, clip_denoised: bool = True,
                     progress: bool = False, known: Known = None, skip: int = 0) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022): the stochastic counterpart of ``sample_dpmpp``, same log-SNR
    timesteps. With ``h`` the step in half log-SNR and ``D`` the (second-order corrected) data prediction,
    ``x' = (sigma'/sigma) e^-h x + alpha' (1 - e^-2h) D + sigma' sqrt(1 - e^-2h) z``. Fresh noise every step
    keeps small models on track where the deterministic solvers drift (speckled planes); ``eta`` must be 0.
    """
    return _dpmpp(eps_fn, x_T, alphas_cumprod, steps, True, generator, eta, clip_denoised, progress, known, skip)


@torch.no_grad()
def sample_distilled(eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
                     schedule: DistilledSchedule, generator: Generators = None, eta: float = 0.0,
                     clip_denoised: bool = True, progress: bool = False, known: Known = None, skip: int = 0
                     ) -> torch.Tensor:
    """A distilled student (``humanliff distill``): one call at each of the schedule's timesteps, each
    giving x0; the next call's input is ``sqrt(abar') x0 + sqrt(1 - abar') e`` with ``e`` the call's own
    epsilon (rule ``ddim``: deterministic DDIM, as progressive distillation trains it, Salimans & Ho 2022)
    or fresh noise (rule ``consistency``: multistep consistency sampling, Song et al. 2023, Algorithm 1).
    ``steps`` must be the schedule's; ``eta`` must be 0. The result is the last call's x0."""
    check_sampler("distilled", schedule, steps)
    check_eta("distilled", eta)
    total = alphas_cumprod.shape[0]
    if schedule.timesteps[0] >= total:
        raise HumanLiffError(f"the distilled schedule starts at t = {schedule.timesteps[0]}, past the "
                             f"{total} training steps")
    table = alphas_cumprod.detach().double().cpu().tolist()
    kept = sampler_timesteps("distilled", alphas_cumprod, steps, schedule)
    _check_skip(skip, len(kept))
    kept = kept[skip:]
    x = x_T.float()
    for t, t_next in tqdm(zip(kept, kept[1:] + [None], strict=True), total=len(kept), desc="sampling",
                          unit="step", disable=not progress):
        abar, abar_next = table[t], 1.0 if t_next is None else table[t_next]
        eps = _eps(eps_fn, x, t, x_T.dtype)
        if schedule.rule == "ddim" or t_next is None:
            x, _ = ddim_step(x, eps, abar, abar_next, 0.0, None, clip_denoised)
        else:
            x0 = predict_x0(x, eps, abar, clip_denoised)
            x = math.sqrt(abar_next) * x0 + math.sqrt(1.0 - abar_next) * _noise(x, generator)
        x = _paste(x, known, abar_next, generator)
    return x.to(x_T.dtype)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp": sample_dpmpp,
    "dpmpp_sde": sample_dpmpp_sde,
    "distilled": sample_distilled,
}
"""Sampler name -> function (the names and knobs: ``runtime/sampler_names.py``, in its order), all with the
signature of ``sample`` minus ``name``; those of ``SCHEDULED`` take the student's ``schedule`` too."""


def check_eta(name: str, eta: float) -> None:
    """Refuse an ``eta`` other than 0 for a sampler that does not take it (``SamplerInfo.eta``)."""
    if eta != 0.0 and not SAMPLER_INFO[name].eta:
        raise HumanLiffError(f"eta={eta} applies to the {' / '.join(ETA_SAMPLERS)} sampler only, not {name}")


def check_sampler(name: str, schedule: DistilledSchedule | None, steps: int, source: str | Path | None = None
                  ) -> None:
    """Refuse a sampler that does not fit the model: a distilled student (``schedule`` given) runs only
    with ``distilled`` and its own number of steps, a teacher (no schedule) never with ``distilled``.
    The one-line error names ``source`` (the model's file) when given."""
    if name not in SAMPLERS:
        raise HumanLiffError(f"unknown sampler '{name}' (valid: {', '.join(SAMPLER_NAMES)})")
    problem = None
    if name in SCHEDULED and schedule is None:
        problem = (f"sampler '{name}' needs a distilled student (from humanliff distill); this model has no "
                   f"distilled schedule, use one of {', '.join(n for n in SAMPLER_NAMES if n not in SCHEDULED)}")
    elif name not in SCHEDULED and schedule is not None:
        problem = (f"is a distilled student ({schedule.method}, {schedule.steps} calls a layer): sample it with "
                   f"the sampler 'distilled', not '{name}'")
    elif schedule is not None and steps != schedule.steps:
        problem = (f"the distilled student samples in {schedule.steps} calls a layer, not {steps} "
                   f"(sample.steps / --steps)")
    if problem is not None:
        raise HumanLiffError(problem) if source is None else InputFileError(source, problem)


def sample(name: str, eps_fn: EpsFn, x_T: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, *,
           generator: Generators = None, eta: float = 0.0, clip_denoised: bool = True,
           progress: bool = False, known: Known = None, schedule: DistilledSchedule | None = None,
           skip: int = 0) -> torch.Tensor:
    """Run sampler ``name`` from noise ``x_T [B, C, H, W]`` to x_0 in ``steps`` model calls.

    ``alphas_cumprod``: ``[T]`` training schedule (float64 fine); ``generator`` drives the noise of the
    stochastic samplers: one for the batch or one per row, on ``x_T``'s device. ``known`` fixes a region
    of x_0 (see ``Known``). ``schedule``: a distilled student's (``distilled`` only; ``check_sampler``).
    ``skip``: leave out the first ``skip`` of the sampler's timesteps (``sampler_timesteps``), so ``x_T`` is
    the noisy sample at the first one left and ``steps - skip`` calls are made (SDEdit, Meng et al. 2022).
    """
    check_sampler(name, schedule, steps)
    extra = {"schedule": schedule} if name in SCHEDULED else {}
    return SAMPLERS[name](eps_fn, x_T, alphas_cumprod, steps, generator=generator, eta=eta,
                          clip_denoised=clip_denoised, progress=progress, known=known, skip=skip, **extra)
