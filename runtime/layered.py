"""Layered sampling: layer 0 from noise, layer k conditioned on the generated layer k-1 (as the original).

Shared by ``humanliff generate`` (torch UNet) and the ``run`` pipeline (exported engines): the UNet is any
``unet_fn(x [B,27,R,R], t [B] int64, x_cond [B,27,R,R], y [B] int64) -> eps [B,27,R,R]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.runtime.sampling import check_sampler, sample, sampler_timesteps
from humanliff.runtime.schedule import DistilledSchedule

UNetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def parse_layers(spec: str) -> list[int]:
    """``"0-3"`` -> ``[0, 1, 2, 3]``, ``"2"`` -> ``[2]``: a contiguous ascending range of layer ids."""
    first, sep, last = spec.strip().partition("-")
    try:
        lo = int(first)
        hi = int(last) if sep else lo
    except ValueError:
        raise HumanLiffError(f"'{spec}' is not a layer range like 0-3 or 2") from None
    if not 0 <= lo <= hi < NUM_LAYERS:
        raise HumanLiffError(f"'{spec}' is not a layer range within 0-{NUM_LAYERS - 1} (low-high)")
    return list(range(lo, hi + 1))


def human_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per human, seeded ``seed + i``: human i is the same whatever the batch size."""
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]


def _starting_noise(shape: tuple[int, ...], generators: Sequence[torch.Generator], device: torch.device
                    ) -> torch.Tensor:
    """Standard normal ``shape``: from one generator (on ``device``), or row i from CPU generator i."""
    if len(generators) == 1:
        return torch.randn(shape, generator=generators[0], device=generators[0].device).to(device)
    return torch.stack([torch.randn(shape[1:], generator=g) for g in generators]).to(device)


def _step_generators(generators: Sequence[torch.Generator], device: torch.device) -> list[torch.Generator]:
    """The generators of the stochastic samplers' step noise on ``device``, one per given generator.

    A generator already on ``device`` is used as is (its stream continues after the starting noise);
    otherwise a ``device`` generator is seeded from it, so human i's step noise comes from its own seed.
    """
    return [g if g.device == device else
            torch.Generator(device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
            for g in generators]


def calls_per_layer(steps: int, strength: float, layer: int) -> int:
    """UNet calls ``sample_layers`` makes for ``layer`` with ``steps`` sampler steps: all of them for layer
    0, the last ``round(strength * steps)`` (at least one) for a layer above it."""
    return steps if layer == 0 else max(1, round(strength * steps))


def top_rows_mask(shape: Sequence[int], keep_top: float) -> torch.Tensor:
    """Which texels of a tri-plane ``[B, 27, R, R]`` only ever shape the top ``keep_top`` of the box: ``[1, 27,
    R, R]`` bool, true on the XY and ZY planes' rows (their row axis is height) whose bilinear footprint,
    the half-texel shift of group 2 included, lies at normalized y >= 1 - 2 ``keep_top``; the XZ plane
    has no height axis and is never kept."""
    channels, res = int(shape[1]), int(shape[-1])
    centres = -1.0 + (2.0 * torch.arange(res) + 1.0) / res
    rows = centres - 3.0 / res >= 1.0 - 2.0 * keep_top
    planes = (torch.arange(channels) // (channels // 3)) != 1
    return (planes[:, None, None] & rows[None, :, None]).expand(channels, res, res)[None]


@torch.no_grad()
def sample_layers(
    unet_fn: UNetFn,
    x_shape: Sequence[int],
    alphas_cumprod: torch.Tensor,
    layers: Sequence[int],
    sampler: str,
    steps: int,
    *,
    generator: torch.Generator | Sequence[torch.Generator],
    start: torch.Tensor | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    keep_top: float = 0.0,
    strength: float = 1.0,
    progress: bool = False,
    schedule: DistilledSchedule | None = None,
) -> torch.Tensor:
    """Generate ``layers`` (contiguous, ascending) for a batch of humans: ``[L, B, 27, R, R]`` float32.

    ``x_shape`` is ``[B, 27, R, R]``. Layer 0 is sampled with ``x_cond = 0`` and ``y = 0``; layer k with
    ``y = k`` and ``x_cond`` = the generated layer k-1, from fresh noise, x0 clipped to [-1, 1]. To start
    above layer 0, pass ``start`` ``[B, 27, R, R]``: the planes of layer ``layers[0] - 1``, taken as fixed.
    ``generator``: one generator for the batch (on the device), or one CPU generator per human
    (``human_generators``): then human i's starting and step noise come from generator i alone, so a
    human does not depend on the batch it is sampled in, with every sampler. Its starting noise does not
    depend on the device either (nor, with the deterministic ``dpmpp`` and ``ddim`` eta 0, the human);
    on CUDA the step noise is drawn on the device from a generator seeded by the human's. The device is
    ``alphas_cumprod``'s. ``keep_top`` > 0: while layer k is sampled, the texels that shape only the top
    ``keep_top`` of the box (``top_rows_mask``; the head, which no garment reaches) are replaced at every
    step from layer k-1 (RePaint), so the head of layer k is layer k-1's. ``strength`` < 1: a layer with
    a layer below starts from that layer's planes noised to the level of its sampler's timestep
    ``steps - round(strength * steps)`` (the same starting noise, scaled) and runs only the last
    ``round(strength * steps)`` calls (at least one; SDEdit, Meng et al. 2022), so it keeps the coarse
    shape of the layer below; layer 0 always starts from noise. ``schedule``: a distilled student's, for
    the sampler ``distilled``.
    """
    layers = list(layers)
    if not layers or layers != list(range(layers[0], layers[0] + len(layers))):
        raise HumanLiffError(f"layers must be a contiguous ascending range, got {layers}")
    if not 0 <= layers[0] <= layers[-1] < NUM_LAYERS:
        raise HumanLiffError(f"layers must lie in 0..{NUM_LAYERS - 1}, got {layers}")
    if (start is None) != (layers[0] == 0):
        raise HumanLiffError(
            f"layer {layers[0]} needs the planes of layer {layers[0] - 1} as start"
            if start is None else "start is given but layer 0 takes no condition"
        )
    device = alphas_cumprod.device
    batch = int(x_shape[0])
    generators = [generator] if isinstance(generator, torch.Generator) else list(generator)
    if len(generators) not in (1, batch):
        raise HumanLiffError(f"{len(generators)} generators for a batch of {batch} (one, or one per human)")
    shape = tuple(int(n) for n in x_shape)
    if start is not None and tuple(start.shape) != shape:
        raise HumanLiffError(f"start must be {list(shape)}, got {list(start.shape)}")
    x_cond = torch.zeros(shape, device=device) if start is None else start.to(device, torch.float32)
    keep = top_rows_mask(shape, keep_top).to(device) if keep_top > 0 else None
    if not 0.0 < strength <= 1.0:
        raise HumanLiffError(f"strength must be in (0, 1], got {strength}")
    check_sampler(sampler, schedule, steps)
    timesteps = sampler_timesteps(sampler, alphas_cumprod, steps, schedule)
    skip = len(timesteps) - calls_per_layer(len(timesteps), strength, 1)
    abar_start = float(alphas_cumprod[timesteps[skip]])
    outputs = []
    for layer in tqdm(layers, desc="layers", unit="layer", disable=not progress):
        y = torch.full((batch,), layer, dtype=torch.int64, device=device)
        x_T = _starting_noise(shape, generators, device)
        steps_noise = _step_generators(generators, device)

        def eps_fn(x: torch.Tensor, t: torch.Tensor, x_cond: torch.Tensor = x_cond, y: torch.Tensor = y
                   ) -> torch.Tensor:
            return unet_fn(x, t, x_cond, y)

        below = layer > 0 and skip > 0
        if below:
            x_T = math.sqrt(abar_start) * x_cond + math.sqrt(1.0 - abar_start) * x_T
        x_cond = sample(sampler, eps_fn, x_T, alphas_cumprod, steps,
                        generator=steps_noise[0] if len(steps_noise) == 1 else steps_noise, eta=eta,
                        clip_denoised=clip_denoised, progress=progress,
                        known=None if keep is None or layer == 0 else (x_cond, keep), schedule=schedule,
                        skip=skip if below else 0).float()
        outputs.append(x_cond)
    return torch.stack(outputs)
