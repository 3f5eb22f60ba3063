"""The sampler registry's names and knobs, without torch: the config's ``sample.sampler`` choices, the CLI's
``--sampler`` and the checks of ``runtime/sampling.py`` (whose ``SAMPLERS`` maps each name to its function)
all read this table, so ``humanliff --help`` needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplerInfo:
    """What the CLI and the checks know about one sampler."""

    summary: str
    """One line for help texts."""
    eta: bool = False
    """Takes ``sample.eta`` (DDIM's stochasticity); the others refuse an eta other than 0."""
    scheduled: bool = False
    """Runs a distilled student with the schedule recorded in its ``ema.pt`` (and its own steps)."""
    logsnr: bool = False
    """Its timesteps are evenly spaced in log-SNR (else the original's respacing, or the student's)."""


SAMPLER_INFO: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo("ancestral DDPM, fixed-large variance (the original, at 250 steps)"),
    "ddim": SamplerInfo("DDIM (sample.eta: 0 deterministic, 1 ancestral-like)", eta=True),
    "dpmpp": SamplerInfo("DPM-Solver++(2M), deterministic", logsnr=True),
    "dpmpp_sde": SamplerInfo("SDE-DPM-Solver++(2M), stochastic", logsnr=True),
    "distilled": SamplerInfo("a student of humanliff distill, in its own steps", scheduled=True),
}
"""Sampler name -> its knobs, in the order the CLI lists them."""

SAMPLER_NAMES = tuple(SAMPLER_INFO)
SCHEDULED = tuple(name for name, info in SAMPLER_INFO.items() if info.scheduled)
"""Samplers that run a distilled student with its recorded schedule."""
LOGSNR_SAMPLERS = tuple(name for name, info in SAMPLER_INFO.items() if info.logsnr)
"""Samplers over timesteps evenly spaced in log-SNR."""
ETA_SAMPLERS = tuple(name for name, info in SAMPLER_INFO.items() if info.eta)
"""Samplers that take ``sample.eta``."""
