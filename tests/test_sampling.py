"""Samplers: the original's DDPM and DDIM steps (golden), exactness on known data, dtypes and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from humanliff.errors import HumanLiffError
from humanliff.runtime.sampling import SAMPLERS, SCHEDULED, ddim_step, ddpm_step, sample
from humanliff.runtime.schedule import (
    linear_schedule,
    logsnr_timesteps,
    respaced_schedule,
    space_timesteps,
)

GOLDEN = np.load(Path(__file__).parent / "data" / "diffusion.npz")
ABAR = linear_schedule()


def _rel(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a - torch.from_numpy(b)).abs().max() / np.abs(b).max())


@pytest.mark.parametrize("i", [0, 1])
def test_one_step_matches_the_original(i):
    timestep_map, _ = respaced_schedule(ABAR, space_timesteps(1000, "250"))
    index = int(GOLDEN["t_index"][i])
    assert timestep_map[index] == GOLDEN["t_model"][i]
    abar = ABAR[timestep_map].tolist()
    abar_prev = abar[index - 1] if index > 0 else 1.0
    x, eps = torch.from_numpy(GOLDEN["x_t"][i]), torch.from_numpy(GOLDEN["eps"][i])
    noise = torch.from_numpy(GOLDEN["noise"][i]) if index > 0 else None
    prev, x0 = ddpm_step(x, eps, abar[index], abar_prev, noise)
    assert _rel(prev, GOLDEN["ddpm_prev"][i]) < 1e-5
    assert _rel(x0, GOLDEN["ddpm_pred_xstart"][i]) < 1e-5
    prev, _ = ddim_step(x, eps, abar[index], abar_prev, 0.0, None)
    assert _rel(prev, GOLDEN["ddim_prev"][i]) < 1e-5


class PointData:
    """The exact eps of a data distribution concentrated at one point ``x0``; records its calls."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x0, self.calls = x0, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.dtype, t.clone()))
        a = ABAR[t].float().view(-1, 1, 1, 1)
        return (x.float() - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.mark.parametrize("name", sorted(set(SAMPLERS) - set(SCHEDULED)))
def test_point_data_is_recovered_exactly(name):
    target = torch.linspace(-0.9, 0.9, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    eps_fn = PointData(target)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sample(name, eps_fn, x_T, ABAR, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, target, atol=5e-4, rtol=0)  # fp32 round-off amplified at t = 999
    steps = [int(t[0]) for _, t in eps_fn.calls]
    assert steps == (logsnr_timesteps(ABAR, 7) if name.startswith("dpmpp") else [999, 832, 666, 500, 333, 166, 0])
    assert all(t.dtype == torch.int64 and t.shape == (2,) for _, t in eps_fn.calls)


def _gaussian_eps(std: float):
    """Exact eps for data ~ N(0, std^2): E[x0 | x_t] = sqrt(a) std^2 / (a std^2 + 1 - a) x_t."""

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ABAR[t].float().view(-1, 1, 1, 1)
        x0 = a.sqrt() * std**2 / (a * std**2 + 1 - a) * x
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_fn


@pytest.mark.parametrize(("name", "steps", "tol"), [("dpmpp", 20, 0.015), ("dpmpp_sde", 20, 0.03),
                                                   ("ddim", 100, 0.02), ("ddpm", 100, 0.03)])
def test_gaussian_data_gets_the_right_spread(name, steps, tol):
    """Data ~ N(0, 0.5^2) with its exact eps: the samples' spread must come out near 0.5."""
    x_T = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = sample(name, _gaussian_eps(0.5), x_T, ABAR, steps, generator=torch.Generator().manual_seed(1),
                 clip_denoised=False)
    assert abs(out.std().item() - 0.5) < tol


def _dummy(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * torch.cos(t.float() / 1000).view(-1, 1, 1, 1) + 0.1


@pytest.mark.parametrize(("name", "eta", "pinned"), [("ddpm", 0.0, 0.61522), ("ddim", 0.0, 0.88764),
                                                     ("ddim", 1.0, 0.59611), ("dpmpp", 0.0, 0.86944),
                                                     ("dpmpp_sde", 0.0, 0.61418)])
def test_pinned_dummy_runs(name, eta, pinned):
    x_T = torch.randn(2, 27, 8, 8, generator=torch.Generator().manual_seed(0))
    out = sample(name, _dummy, x_T, ABAR, 10, generator=torch.Generator().manual_seed(1), eta=eta)
    assert out.abs().mean().item() == pytest.approx(pinned, abs=1e-4)
    again = sample(name, _dummy, x_T, ABAR, 10, generator=torch.Generator().manual_seed(1), eta=eta)
    assert torch.equal(out, again)


@pytest.mark.parametrize(("name", "eta"), [("ddpm", 0.0), ("ddim", 1.0), ("dpmpp_sde", 0.0)])
def test_per_row_generators_make_each_row_its_own(name, eta):
    """Row i of a batch run with one generator per row equals a batch-1 run with generator i alone."""
    x_T = torch.randn(3, 27, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = sample(name, _dummy, x_T, ABAR, 6, eta=eta,
                  generator=[torch.Generator().manual_seed(10 + i) for i in range(3)])
    for i in range(3):
        alone = sample(name, _dummy, x_T[i:i + 1], ABAR, 6, eta=eta, generator=torch.Generator().manual_seed(10 + i))
        torch.testing.assert_close(rows[i:i + 1], alone, rtol=1e-6, atol=1e-6)
    shared = sample(name, _dummy, x_T, ABAR, 6, eta=eta, generator=torch.Generator().manual_seed(10))
    assert not torch.allclose(shared, rows)
    with pytest.raises(HumanLiffError, match="2 noise generators for a batch of 3"):
        sample(name, _dummy, x_T, ABAR, 6, eta=eta, generator=[torch.Generator(), torch.Generator()])


def test_network_dtype_is_kept_and_solver_runs_in_fp32():
    eps_fn = PointData(torch.zeros(1, 3, 4, 4))
    x_T = torch.randn(1, 3, 4, 4).to(torch.bfloat16)
    out = sample("dpmpp", eps_fn, x_T, ABAR.float(), 4)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert {dtype for dtype, _ in eps_fn.calls} == {torch.bfloat16}


def test_ddpm_250_steps_is_the_original_respacing():
    eps_fn = PointData(torch.zeros(1, 1, 2, 2))
    sample("ddpm", eps_fn, torch.randn(1, 1, 2, 2), ABAR, 250, generator=torch.Generator().manual_seed(0))
    assert [int(t[0]) for _, t in eps_fn.calls] == GOLDEN["timestep_map"][::-1].tolist()


def test_dpmpp_first_step_is_ddim():
    """With two calls (t = 999, 0), DPM-Solver++ takes one first-order step, which is DDIM's (eta 0)."""
    x_T = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    a, b = sample("dpmpp", _dummy, x_T, ABAR, 2), sample("ddim", _dummy, x_T, ABAR, 2)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_errors():
    x_T = torch.zeros(1, 3, 4, 4)
    with pytest.raises(HumanLiffError,
                       match=r"unknown sampler 'euler' \(valid: ddpm, ddim, dpmpp, dpmpp_sde, distilled\)"):
        sample("euler", _dummy, x_T, ABAR, 4)
    with pytest.raises(HumanLiffError, match="between 1 and 1000, got 0"):
        sample("ddim", _dummy, x_T, ABAR, 0)
    with pytest.raises(HumanLiffError, match="applies to the ddim sampler only, not dpmpp"):
        sample("dpmpp", _dummy, x_T, ABAR, 4, eta=0.5)


def test_cli_and_config_offer_the_registry_samplers():
    from humanliff.cli import SAMPLER_NAMES as CLI_NAMES
    from humanliff.cli.generation_commands import generate_command, run_command
    from humanliff.config import LIMITS
    from humanliff.runtime.sampler_names import SAMPLER_NAMES

    assert tuple(SAMPLERS) == SAMPLER_NAMES == CLI_NAMES == LIMITS["sample"]["sampler"].choices
    for command in (generate_command, run_command):
        option = next(p for p in command.params if p.name == "sampler")
        assert tuple(option.type.choices) == SAMPLER_NAMES, command.name


def test_eta_is_refused_by_the_samplers_without_it():
    from humanliff.runtime.sampler_names import ETA_SAMPLERS

    assert ETA_SAMPLERS == ("ddim",)
    x_T = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for name in set(SAMPLERS) - set(SCHEDULED):
        if name in ETA_SAMPLERS:
            assert sample(name, _dummy, x_T, ABAR, 3, eta=0.5).isfinite().all()
        else:
            with pytest.raises(HumanLiffError, match=f"applies to the ddim sampler only, not {name}"):
                sample(name, _dummy, x_T, ABAR, 3, eta=0.5)
