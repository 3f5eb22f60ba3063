"""Training ray sampler and evaluation ray bundles (humanliff.data.raysampler)."""

import numpy as np
import pytest
import torch

from humanliff.data.raysampler import full_image_rays, sample_rays
from humanliff.runtime.cameras import orbit_cameras, project_points

BOUNDS = torch.tensor([[-0.3, -0.9, -0.2], [0.3, 0.9, 0.2]])


def scene(n=2, size=24):
    K, R, T = orbit_cameras(BOUNDS, n, size, elevation_deg=10.0)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, 6:18, 9:15] = True
    images = torch.randint(
        0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    return images, masks, K, R, T, BOUNDS.expand(n, 2, 3)


def test_sample_rays_draws_fg_and_box_pixels():
    images, masks, K, R, T, bounds = scene()
    batch = sample_rays(
        images,
        masks,
        K,
        R,
        T,
        bounds,
        n_rays=500,
        fg_fraction=0.8,
        generator=torch.Generator().manual_seed(1),
    )
    assert batch.origins.shape == batch.dirs.shape == batch.rgb.shape == (2, 500, 3)
    assert batch.fg.shape == batch.near.shape == (2, 500)
    assert batch.fg[:, :400].eq(1).all() and batch.fg[:, 400:].eq(0).all()
    assert (batch.far > batch.near).all() and (batch.near > 0).all()
    # each ray's pixel: recover it by projecting a point on the ray, then compare colours
    pixel, _ = project_points(K, R, T, batch.origins + 2.0 * batch.dirs)
    cols, rows = pixel.round().long().unbind(-1)
    expected = images[torch.arange(2)[:, None], rows, cols].float() / 255
    torch.testing.assert_close(batch.rgb, expected)
    # background rays lie inside the box's image but outside the mask
    box = full_image_rays(K, R, T, 24, 24, bounds).hit
    assert box[torch.arange(2)[:, None], rows, cols].all()
    assert not masks[torch.arange(2)[:, None], rows[:, 400:], cols[:, 400:]].any()


def test_sampler_is_deterministic_for_a_generator_and_handles_empty_masks():
    images, masks, K, R, T, bounds = scene()
    a = sample_rays(images, masks, K, R, T, bounds, 64, generator=torch.Generator().manual_seed(5))
    b = sample_rays(images, masks, K, R, T, bounds, 64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.dirs, b.dirs)
    masks[1] = False  # no foreground: every ray comes from the box
    c = sample_rays(images, masks, K, R, T, bounds, 64, generator=torch.Generator().manual_seed(5))
    assert c.fg[1].eq(0).all() and (c.far > c.near).all()


def test_full_image_rays_mark_the_projected_box():
    _, _, K, R, T, _ = scene(1, 32)
    bundle = full_image_rays(K, R, T, 32, 32, BOUNDS)
    assert bundle.origins.shape == (1, 32, 32, 3) and bundle.hit.shape == (1, 32, 32)
    corners = torch.cartesian_prod(*BOUNDS.T)
    pixel, _ = project_points(K[0], R[0], T[0], corners)
    lo, hi = pixel.min(0).values, pixel.max(0).values
    rows, cols = np.nonzero(bundle.hit[0].numpy())
    assert (
        cols.min() >= lo[0] - 1
        and cols.max() <= hi[0] + 1
        and rows.min() >= lo[1] - 1
        and rows.max() <= hi[1] + 1
    )
    assert bundle.hit[0, 16, 16] and not bundle.hit[0, 0, 0]
    assert (bundle.near[~bundle.hit] == 0).all() and (bundle.far[~bundle.hit] == 1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampler_runs_on_the_gpu():
    tensors = [t.cuda() for t in scene()]
    batch = sample_rays(*tensors, n_rays=128, generator=torch.Generator("cuda").manual_seed(0))
    assert batch.rgb.is_cuda and batch.near.is_cuda
