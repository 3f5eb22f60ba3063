"""Noise schedule and respacing against the original (tests/data/diffusion.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from humanliff.runtime.schedule import (
    alphas_cumprod,
    linear_betas,
    q_sample,
    respaced_schedule,
    space_timesteps,
)

GOLDEN = np.load(Path(__file__).parent / "data" / "diffusion.npz")


def test_linear_betas_match_the_original():
    betas = linear_betas()
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    np.testing.assert_allclose(betas.numpy(), GOLDEN["betas_1000"], rtol=1e-12, atol=0)


def test_respacing_250_matches_the_original():
    kept = space_timesteps(1000, "250")
    assert sorted(kept) == GOLDEN["use_timesteps"].tolist()
    assert space_timesteps(1000, [250]) == kept
    timestep_map, betas = respaced_schedule(alphas_cumprod(linear_betas()), kept)
    assert timestep_map.tolist() == GOLDEN["timestep_map"].tolist()
    np.testing.assert_allclose(betas.numpy(), GOLDEN["betas_250"], rtol=1e-10, atol=0)


def test_respaced_alphas_equal_the_kept_ones():
    abar = alphas_cumprod(linear_betas())
    timestep_map, betas = respaced_schedule(abar, space_timesteps(1000, [7]))
    assert timestep_map.tolist() == [0, 166, 333, 500, 666, 832, 999]  # Python round: half to even
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), abar[timestep_map], rtol=1e-12, atol=0)


def test_space_timesteps_sections_and_ddim():
    assert space_timesteps(100, "ddim10") == set(range(0, 100, 10))
    assert sorted(space_timesteps(100, "2,3")) == [0, 49, 50, 74, 99]
    assert space_timesteps(1000, [1]) == {0}
    with pytest.raises(ValueError, match="cannot divide a section of 50 steps into 60"):
        space_timesteps(100, [60, 1])
    with pytest.raises(ValueError, match="exactly 33 steps"):
        space_timesteps(100, "ddim33")


def _original_space_timesteps(num_timesteps, section_counts):
    """The original's ``space_timesteps`` (improved-diffusion ``respace.py``) restated for the list form: in
    each section a float position starts at 0, is rounded into a step, then grows by the fractional stride."""
    size_per, extra = num_timesteps // len(section_counts), num_timesteps % len(section_counts)
    start, taken = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            taken.append(start + round(position))
            position += stride
        start += size
    return set(taken)


def test_space_timesteps_is_the_original_for_every_count():
    differs_from_products = []
    for count in range(1, 1001):
        expected = _original_space_timesteps(1000, [count])
        assert space_timesteps(1000, str(count)) == expected, count
        assert len(expected) == count
        stride = 1.0 if count <= 1 else 999 / (count - 1)
        if expected != {round(stride * j) for j in range(count)}:
            differs_from_products.append(count)
    assert len(differs_from_products) == 278 and differs_from_products[:4] == [21, 23, 31, 35]
    for sections in ([10, 15, 20], [1, 500], [334, 333, 333]):
        assert space_timesteps(1000, sections) == _original_space_timesteps(1000, sections), sections


def test_q_sample_formula():
    abar = alphas_cumprod(linear_betas())
    x0, noise = torch.rand(2, 27, 4, 4) * 2 - 1, torch.randn(2, 27, 4, 4)
    t = torch.tensor([0, 999])
    x_t = q_sample(x0, t, noise, abar)
    a = abar[t].float().view(2, 1, 1, 1)
    torch.testing.assert_close(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert abs(x_t[1].std().item() - 1.0) < 0.1
