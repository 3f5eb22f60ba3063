"""Volume renderer: shapes, gradients, determinism, coarse-sample reuse, occupancy skipping, intervals."""

import dataclasses

import pytest
import torch

from humanliff.config import RenderConfig
from humanliff.models.decoder import FusedDecoder
from humanliff.runtime.cameras import look_at
from humanliff.runtime.field import make_field
from humanliff.runtime.occupancy import build_occupancy, cell_points, lookup
from humanliff.runtime.rays import box_near_far
from humanliff.runtime.render import (
    PositiveCumprod,
    alpha_weights,
    composite,
    importance_depths,
    merge_sorted,
    ray_reach,
    render_image,
    render_rays,
    sample_pdf,
    stratified_depths,
)
from humanliff.runtime.triplane import normalize_points

CFG = RenderConfig(n_samples=16, n_importance=16, chunk=256)
UNIT_BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def blob_planes(res: int = 32, width: float = 0.25) -> torch.Tensor:
    """A tri-plane whose channel 0 of every group is a centred Gaussian and channels 1, 2 are u, v ramps."""
    c = (torch.arange(res) + 0.5) / res * 2 - 1
    v, u = torch.meshgrid(c, c, indexing="ij")
    planes = torch.zeros(1, 27, res, res)
    for k in range(9):
        planes[0, 3 * k] = torch.exp(-(u**2 + v**2) / (2 * width**2))
        planes[0, 3 * k + 1] = 0.5 * u
        planes[0, 3 * k + 2] = 0.5 * v
    return planes


def blob_decoder(feats: torch.Tensor, viewdirs: torch.Tensor | None = None):
    """Density where two planes' Gaussians overlap (empty space far below zero); colour from ramps."""
    f = feats.reshape(-1, 3, 3, 3)
    sigma = 40.0 * (f[..., 0].mean(-1).sum(-1, keepdim=True) - 2.0)
    if viewdirs is None:
        return sigma
    rgb = 4.0 * torch.stack([f[:, 0, :, 1].mean(-1), f[:, 1, :, 2].mean(-1), f[:, 2, :, 1].mean(-1)], -1)
    return rgb + 0.1 * viewdirs, sigma


def camera(distance: float = 4.0, size: int = 24):
    K = torch.tensor([[size * 1.2, 0.0, size / 2], [0.0, size * 1.2, size / 2], [0.0, 0.0, 1.0]])
    R, T = look_at(torch.tensor([0.3, 0.2, -distance]), torch.zeros(3))
    return K, R, T


def random_rays(b: int = 2, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    origins = torch.randn(b, n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -3.0])
    dirs = torch.tensor([0.0, 0.0, 1.0]) + torch.randn(b, n, 3, generator=g) * 0.05
    near, far, _ = box_near_far(origins, dirs, UNIT_BOX)
    return origins, dirs, near, far, UNIT_BOX.expand(b, 2, 3)


def counting(field):
    """The field plus a list that records how many points each call evaluates."""
    calls = []

    def wrapped(points, viewdirs):
        calls.append(points.shape[1])
        return field(points, viewdirs)

    return wrapped, calls


@pytest.fixture
def decoder_field():
    torch.manual_seed(0)
    planes = (torch.randn(2, 27, 8, 8) * 0.5).requires_grad_(True)
    dec = FusedDecoder(hidden=16, geo_features=7, color_hidden=16)
    return planes, make_field(planes, dec)


def test_shapes_and_gradient_to_planes(decoder_field):
    planes, field = decoder_field
    out = render_rays(field, *random_rays(), CFG, training=True, generator=torch.Generator().manual_seed(1))
    assert out["rgb"].shape == (2, 6, 3) and out["acc"].shape == (2, 6) and out["depth"].shape == (2, 6)
    assert out["weights"].shape == (2, 6, 32) and out["z"].shape == (2, 6, 32)
    assert (out["z"].diff(dim=-1) >= 0).all()
    (out["rgb"].sum() + out["acc"].sum()).backward()
    assert torch.isfinite(planes.grad).all() and planes.grad.abs().sum() > 0


def test_eval_is_deterministic_and_training_is_seeded(decoder_field):
    _, field = decoder_field
    rays = random_rays()
    cfg = dataclasses.replace(CFG, density_noise_std=1.0)
    with torch.no_grad():
        a = render_rays(field, *rays, cfg, training=False)
        b = render_rays(field, *rays, cfg, training=False)
        clean = render_rays(field, *rays, CFG, training=False)
        t1 = render_rays(field, *rays, cfg, training=True, generator=torch.Generator().manual_seed(3))
        t2 = render_rays(field, *rays, cfg, training=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["z"], b["z"])
    torch.testing.assert_close(a["rgb"], clean["rgb"])  # density noise only while fitting
    assert torch.equal(t1["rgb"], t2["rgb"])
    assert not torch.equal(t1["z"], a["z"])


def test_coarse_outputs_reused_equals_naive_full_evaluation(decoder_field):
    _, field = decoder_field
    origins, dirs, near, far, bounds = random_rays()
    counting_field, calls = counting(field)
    with torch.no_grad():
        fast = render_rays(counting_field, origins, dirs, near, far, bounds, CFG, training=False)
        # naive: the original's fine pass evaluates all sorted coarse + fine samples again
        z_c = stratified_depths(near, far, CFG.n_samples, False)
        world = origins[..., None, :] + dirs[..., None, :] * z_c[..., None]
        _, sigma_c = field(normalize_points(world.reshape(2, -1, 3), bounds), None)
        z_f = importance_depths(sigma_c.reshape(2, 6, -1), z_c, dirs.norm(dim=-1), CFG.n_importance, det=True)
        z = torch.sort(torch.cat([z_c, z_f], -1), -1).values
        world = origins[..., None, :] + dirs[..., None, :] * z[..., None]
        viewdirs = torch.nn.functional.normalize(dirs, dim=-1)[..., None, :].expand(2, 6, 32, 3)
        rgb, sigma = field(normalize_points(world.reshape(2, -1, 3), bounds), viewdirs.reshape(2, -1, 3))
        naive = composite(rgb.reshape(2, 6, 32, 3), sigma.reshape(2, 6, 32), z, dirs.norm(dim=-1), CFG,
                          training=False)
    assert calls == [6 * CFG.n_samples, 6 * CFG.n_importance]  # each sample evaluated once
    for key in ("rgb", "acc", "depth"):
        torch.testing.assert_close(fast[key], naive[key], rtol=1e-5, atol=1e-6)


def test_metric_intervals_switch():
    """Metric alphas do not depend on how long dirs are; the original's (t-unit) alphas do (bug B3)."""
    field = make_field(blob_planes(), blob_decoder)
    origins = torch.tensor([[[0.05, 0.02, -3.0], [0.1, -0.1, -3.0]]])
    dirs = torch.tensor([[[0.0, 0.0, 1.0], [0.02, 0.0, 1.0]]])
    near, far, _ = box_near_far(origins, dirs, UNIT_BOX)
    box = UNIT_BOX[None]
    original = dataclasses.replace(CFG, metric_intervals=False)
    with torch.no_grad():
        unit = render_rays(field, origins, dirs, near, far, box, CFG, training=False)
        long = render_rays(field, origins, 3 * dirs, near / 3, far / 3, box, CFG, training=False)
        unit_o = render_rays(field, origins, dirs, near, far, box, original, training=False)
        long_o = render_rays(field, origins, 3 * dirs, near / 3, far / 3, box, original, training=False)
    torch.testing.assert_close(long["rgb"], unit["rgb"], rtol=1e-4, atol=1e-5)
    assert unit["acc"].min() > 0.5
    torch.testing.assert_close(unit_o["rgb"], unit["rgb"], rtol=1e-4, atol=1e-5)  # |d| = 1: same
    assert (long_o["acc"] - unit["acc"]).abs().max() > 1e-3


def test_sample_pdf_deterministic_and_in_bins():
    bins = torch.linspace(0.0, 1.0, 5).expand(3, 5)
    uniform = sample_pdf(bins, torch.ones(3, 4), 9, det=True)
    torch.testing.assert_close(uniform, torch.linspace(0.0, 1.0, 9).expand(3, 9))
    peaked = sample_pdf(bins, torch.tensor([[1e-5, 1.0, 1e-5, 1e-5]]).expand(3, 4), 50, det=False,
                        generator=torch.Generator().manual_seed(0))
    assert ((peaked >= 0.25 - 1e-3) & (peaked <= 0.5 + 1e-3)).float().mean() > 0.99


def test_alpha_weights_compositing_rule():
    density = torch.tensor([[0.0, 1.0, 2.0]])
    z = torch.tensor([[0.0, 0.5, 1.5]])
    w = alpha_weights(density, z, None)
    a1 = 1 - torch.exp(torch.tensor(-1.0))
    torch.testing.assert_close(w, torch.tensor([[0.0, a1, (1 - a1 + 1e-7)]]), rtol=1e-6, atol=1e-7)


def test_positive_cumprod_gradient_is_torchs():
    """The compositing transmittance's backward (no host sync) against torch.cumprod's, in float64, with
    nearly opaque samples (``1 - alpha + eps`` down to eps), and it passes gradcheck."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 12, dtype=torch.float64, generator=g) + 1e-3
    x[0, 0, 4], x[1, 2, 0] = 1e-10, 1e-7
    grad = torch.randn(x.shape, dtype=torch.float64, generator=g)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    PositiveCumprod.apply(ours).backward(grad)
    theirs.cumprod(-1).backward(grad)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=0)
    torch.autograd.gradcheck(PositiveCumprod.apply, (x[:, :, :6].clone().add_(0.5).requires_grad_(True),))


def _original_up_sample_weights(density, z, dir_norm):
    """The original ``up_sample``'s coarse weights, restated: metric intervals (the last 1e10) and the
    exclusive transmittance ``cumprod(1 - alpha + 1e-10)``."""
    dists = torch.cat([z[..., 1:] - z[..., :-1], torch.full_like(z[..., :1], 1e10)], dim=-1) * dir_norm[..., None]
    alpha = 1.0 - torch.exp(-density * dists)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], dim=-1), dim=-1)
    return alpha * trans[..., :-1]


def test_importance_weights_use_the_original_up_sample_epsilon():
    """In float64, where 1e-10 and 1e-7 are apart: the fine depths are the original's to 1e-12, and the
    composite's 1e-7 would move the samples behind the opaque one (in float32 the move is ~1e-7)."""
    z = torch.linspace(0.0, 2.0, 16, dtype=torch.float64).expand(1, 3, 16).contiguous()
    sigma_raw = torch.full((1, 3, 16), -20.0, dtype=torch.float64)
    sigma_raw[..., 4] = 17.0  # nearly opaque: the samples behind it get a transmittance of about eps
    sigma_raw[..., 9] = 3.0
    dir_norm = torch.tensor([[1.0, 1.5, 0.7]], dtype=torch.float64)
    density, mids = torch.nn.functional.softplus(sigma_raw), 0.5 * (z[..., 1:] + z[..., :-1])
    fine = importance_depths(sigma_raw, z, dir_norm, 24, det=True)
    w = _original_up_sample_weights(density, z, dir_norm)
    torch.testing.assert_close(fine, sample_pdf(mids, w[..., 1:-1] + 1e-5, 24, det=True), rtol=0, atol=1e-12)
    w_composite_eps = alpha_weights(density, z, dir_norm)
    moved = sample_pdf(mids, w_composite_eps[..., 1:-1] + 1e-5, 24, det=True)
    assert (moved - fine).abs().max() > 1e-8


def test_occupancy_skipping_gives_the_same_image_with_fewer_evaluations():
    field = make_field(blob_planes(), blob_decoder)
    occ = build_occupancy(field, 16, 0.01)
    assert occ.shape == (1, 16, 16, 16) and 0.01 < occ.float().mean() < 0.3
    K, R, T = camera()
    full_field, full_calls = counting(field)
    skip_field, skip_calls = counting(field)
    full = render_image(full_field, K, R, T, 24, 24, UNIT_BOX, CFG)
    skip = render_image(skip_field, K, R, T, 24, 24, UNIT_BOX, CFG, occupancy=occ)
    assert full["acc"].max() > 0.9 and full["acc"][0, 0] < 1e-6
    for key in ("rgb", "acc", "depth"):
        torch.testing.assert_close(skip[key], full[key], rtol=1e-4, atol=1e-4)
    assert sum(skip_calls) < 0.5 * sum(full_calls)


def test_occupancy_lookup_cells():
    grid = torch.zeros(1, 4, 4, 4, dtype=torch.bool)
    grid[0, 3, 0, 1] = True
    pts = torch.tensor([[[0.9, -0.9, -0.3], [0.9, -0.9, 0.3], [2.0, -5.0, -0.4]]])
    assert lookup(grid, pts).tolist() == [[True, False, True]]  # outside: nearest border cell
    centres = cell_points(4, 1)
    assert centres.shape == (64, 1, 3)
    torch.testing.assert_close(centres[0, 0], torch.tensor([-0.75, -0.75, -0.75]))


def test_render_image_shapes_and_background():
    field = make_field(blob_planes(), blob_decoder)
    K, R, T = camera(distance=6.0)
    out = render_image(field, K, R, T, 20, 24, UNIT_BOX, CFG)
    assert out["rgb"].shape == (20, 24, 3) and out["acc"].shape == (20, 24) and out["depth"].shape == (20, 24)
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1
    assert out["acc"][12, 12] > 0.99 and 5.6 < out["depth"][12, 12] < 6.0  # blob of radius ~0.2 at ~6.0
    assert out["acc"][0, 0] == 0 and out["depth"][0, 0] == 0 and out["rgb"][0, 0].abs().sum() == 0


def test_bf16_field_close_to_fp32(decoder_field):
    planes, _ = decoder_field
    dec = FusedDecoder(hidden=16, geo_features=7, color_hidden=16)
    pts = torch.rand(2, 100, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(2, 100, 3), dim=-1)
    with torch.no_grad():
        rgb32, s32 = make_field(planes, dec)(pts, dirs)
        rgb16, s16 = make_field(planes, dec, precision="bf16")(pts, dirs)
    assert rgb16.dtype == torch.float32
    torch.testing.assert_close(rgb16, rgb32, rtol=0.05, atol=0.05)
    torch.testing.assert_close(s16, s32, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_bf16_field_matches_eager_on_gpu():
    torch.manual_seed(0)
    planes = (torch.randn(2, 27, 32, 32, device="cuda") * 0.5).requires_grad_(True)
    dec = FusedDecoder(hidden=64).cuda()
    pts = torch.rand(2, 4096, 3, device="cuda") * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(2, 4096, 3, device="cuda"), dim=-1)
    rgb, sigma = make_field(planes, dec)(pts, dirs)
    rgb_c, sigma_c = make_field(planes, dec, compile=True)(pts, dirs)
    torch.testing.assert_close(rgb_c, rgb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sigma_c, sigma, rtol=1e-4, atol=1e-4)
    rgb_b, sigma_b = make_field(planes, dec, precision="bf16", compile=True)(pts, dirs)
    torch.testing.assert_close(rgb_b, rgb, rtol=0.05, atol=0.05)
    sigma_b.sum().backward()
    assert torch.isfinite(planes.grad).all()


def test_merge_sorted_matches_sort():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 7, 12, generator=g).sort(dim=-1).values
    b = torch.rand(5, 7, 9, generator=g).sort(dim=-1).values
    b[0, 0] = torch.cat([a[0, 0, :3], a[0, 0, 4:10]])  # ties, still sorted
    merged, order = merge_sorted(a, b)
    expected = torch.cat([a, b], dim=-1).sort(dim=-1).values
    assert torch.equal(merged, expected)
    assert torch.equal(torch.cat([a, b], dim=-1).gather(-1, order), merged)
    assert torch.equal(order.sort(dim=-1).values, torch.arange(21).expand(5, 7, 21))


def test_merge_sorted_is_a_permutation_when_rounding_breaks_order():
    a = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    b = torch.tensor([[1.5, 1.5 - 1e-7, 2.5]])  # one ulp-scale inversion, as inverse-CDF rounding gives
    merged, order = merge_sorted(a, b)
    assert torch.equal(order.sort(dim=-1).values, torch.arange(7)[None])
    assert torch.equal(torch.cat([a, b], dim=-1).gather(-1, order), merged)


def test_occupied_samples_are_evaluated_once_each_and_the_rest_are_zero():
    from humanliff.runtime.render import _evaluate

    calls = []

    def field(points, viewdirs):
        calls.append(points.shape)
        return points * 2.0 + viewdirs, points.sum(dim=-1, keepdim=True)

    g = torch.Generator().manual_seed(0)
    points, dirs = torch.randn(3, 50, 3, generator=g), torch.randn(3, 50, 3, generator=g)
    occupied = torch.rand(3, 50, generator=g) < torch.tensor([[0.2], [0.7], [0.0]])  # uneven rows, one empty
    rgb, sigma = _evaluate(field, points, dirs, occupied)
    assert calls == [(3, int(occupied.sum(dim=1).max()), 3)]
    torch.testing.assert_close(rgb, torch.where(occupied[..., None], points * 2.0 + dirs, 0.0))
    torch.testing.assert_close(sigma, torch.where(occupied, points.sum(dim=-1), 0.0))
    assert _evaluate(field, points, dirs, torch.zeros_like(occupied))[1].eq(0).all() and len(calls) == 1


def test_ray_chunk_zero_picks_the_device_default():
    from humanliff.runtime.render import ray_chunk

    assert ray_chunk(0, torch.device("cpu")) == 8192 and ray_chunk(0, torch.device("cuda")) == 262144
    assert ray_chunk(100, torch.device("cuda")) == 100
    assert RenderConfig().chunk == 0


def test_rays_that_meet_no_occupied_cell_are_not_rendered_and_nothing_changes(monkeypatch):
    from humanliff.runtime import render as render_module
    from humanliff.runtime.rays import camera_rays

    field = make_field(blob_planes(), blob_decoder)
    occ = build_occupancy(field, 16, 0.01, dilation=0)
    K, R, T = camera()
    origins, dirs = camera_rays(K, R, T, 24, 24)
    near, far, hit = box_near_far(origins, dirs, UNIT_BOX)
    ref = render_rays(field, origins[hit][None], dirs[hit][None], near[hit][None], far[hit][None],
                      UNIT_BOX[None], CFG, training=False, occupancy=occ)
    rendered = []
    real = render_module.render_rays
    monkeypatch.setattr(render_module, "render_rays", lambda f, o, *a, **k: rendered.append(o.shape[1]) or real(
        f, o, *a, **k))
    out = render_image(field, K, R, T, 24, 24, UNIT_BOX, CFG, occupancy=occ)
    assert 0 < sum(rendered) < 0.5 * int(hit.sum())  # most rays through the box miss the blob
    for key in ("rgb", "acc", "depth"):
        expected = torch.zeros_like(out[key]).reshape(576, -1).squeeze(-1)
        expected[hit.reshape(-1)] = ref[key][0]
        torch.testing.assert_close(out[key], expected.reshape(out[key].shape), rtol=1e-5, atol=1e-6)


def test_ray_reach_grows_the_grid_by_half_a_coarse_step():
    grid = torch.zeros(1, 8, 8, 8, dtype=torch.bool)
    grid[0, 4, 4, 4] = True
    dirs, near = torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1)
    # unit box of side 2: cells of 0.25; 5 samples over 2.0 -> steps of 0.5 -> grow by ceil(0.25 / 0.25) = 1
    grown = ray_reach(grid, dirs, near, torch.full((1,), 2.0), UNIT_BOX, 5)
    assert int(grown.sum()) == 27
    assert int(ray_reach(grid, dirs, near, torch.full((1,), 2.0), UNIT_BOX, 33).sum()) == 27  # at least one cell
    assert ray_reach(grid, dirs, near, torch.full((1,), 6.0), UNIT_BOX, 5).sum() == 343  # steps 1.5: 3 cells
