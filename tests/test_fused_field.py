"""The fused Triton field (runtime/fused_field.py) against ``decode_points`` with a FusedDecoder.

On a machine without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set here
before triton is imported); with CUDA they run on the GPU. Sizes are tiny so the interpreter stays fast.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the kernels' decoration

pytest.importorskip("triton", reason="the fused field needs triton (pip install triton)")

from humanliff.errors import HumanLiffError  # noqa: E402
from humanliff.models.decoder import FusedDecoder, SeedDecoder  # noqa: E402
from humanliff.runtime import fused_field as ff  # noqa: E402
from humanliff.runtime import fused_kernels as fk  # noqa: E402
from humanliff.runtime.field import decode_points, make_field  # noqa: E402

INTERPRETED = bool(getattr(fk, "_INTERPRETED", False))
DEVICE = torch.device("cpu" if INTERPRETED else "cuda")
if not ff.triton_available() or (DEVICE.type == "cuda" and not torch.cuda.is_available()):
    pytest.skip("triton cannot run here (no CUDA and the kernels were not decorated for the interpreter)",
                allow_module_level=True)

B, R, M = 2, 8, 100  # M is not a multiple of the blocks below
CONFIG = ff.LaunchConfig(block_m=32, num_warps=4, bwd_block_m=32, bwd_num_warps=4)
TOL = 3e-2  # relative error (norm) of bf16 planes / features / weights against the fp32 torch path


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def make_case(seed: int, **decoder_kw) -> tuple[torch.Tensor, FusedDecoder, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    planes = torch.randn(B, 27, R, R, generator=gen)
    dec = FusedDecoder(**decoder_kw).requires_grad_(False)
    points = torch.rand(B, M, 3, generator=gen) * 2.2 - 1.1  # a few outside [-1, 1]
    dirs = torch.randn(B, M, 3, generator=gen) * 3.0  # not unit: the kernel normalizes
    return planes.to(DEVICE), dec.to(DEVICE), points.to(DEVICE), dirs.to(DEVICE)


def test_prepare_planes_layout():
    planes = torch.randn(B, 27, R, R, device=DEVICE)
    prep = ff.prepare_planes(planes)
    assert prep.shape == (B, 9, R, R, 4) and prep.dtype == torch.bfloat16 and prep.is_contiguous()
    for plane in range(3):
        for group in range(3):
            for c in range(3):
                torch.testing.assert_close(prep[:, plane * 3 + group, :, :, c],
                                           planes[:, plane * 9 + group * 3 + c].bfloat16())
    assert prep[..., 3].eq(0).all()
    assert ff.prepare_planes(planes, torch.float32)[..., :3].permute(0, 1, 4, 2, 3).reshape(
        B, 27, R, R).equal(planes)
    with pytest.raises(HumanLiffError, match="planes must be"):
        ff.prepare_planes(planes[:, :26])


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("hidden", [16, 64])
@pytest.mark.parametrize("with_dirs", [True, False])
def test_forward_matches_decode_points(activation, hidden, with_dirs):
    planes, dec, points, dirs = make_case(hidden + (activation == "relu"), hidden=hidden, color_hidden=hidden,
                                          activation=activation)
    dirs = dirs if with_dirs else None
    rgb, sigma = ff.fused_decode(planes, ff.decoder_weights(dec), points, dirs, config=CONFIG)
    with torch.no_grad():
        rgb_ref, sigma_ref = decode_points(planes, dec, points, dirs)
    assert sigma.shape == (B, M, 1) and sigma.dtype == torch.float32
    assert rel_err(sigma, sigma_ref) < TOL
    if with_dirs:
        assert rgb.shape == (B, M, 3) and rgb.dtype == torch.float32
        assert rel_err(rgb, rgb_ref) < TOL
    else:
        assert rgb is None and rgb_ref is None


def test_forward_other_shapes():
    """One density layer, two colour layers, 7 geometry features, 2 view frequencies, 32 wide."""
    planes, dec, points, dirs = make_case(3, hidden=32, density_layers=1, geo_features=7, color_hidden=16,
                                          color_layers=2, view_freqs=2)
    weights = ff.decoder_weights(dec)
    assert (weights.density_layers, weights.color_layers, weights.out_pad, weights.view_pad) == (1, 2, 16, 16)
    rgb, sigma = ff.fused_decode(planes, weights, points, dirs, config=ff.LaunchConfig(16, 4, 32, 4))
    with torch.no_grad():
        rgb_ref, sigma_ref = decode_points(planes, dec, points, dirs)
    assert rel_err(rgb, rgb_ref) < TOL and rel_err(sigma, sigma_ref) < TOL


def test_points_outside_are_zero_padded():
    planes, dec, points, dirs = make_case(4)
    gen = torch.Generator().manual_seed(5)
    # near and past the border (partly outside taps), far outside, and huge coordinates
    points = torch.cat([torch.rand(B, 40, 3, generator=gen) * 0.3 + 0.9,
                        -(torch.rand(B, 40, 3, generator=gen) * 0.3 + 0.9),
                        torch.full((B, 10, 3), 7.0), torch.full((B, 10, 3), -1e7)], dim=1).to(DEVICE)
    points[:, -5:, 1] = 0.0  # one plane (ZY / XY) partly inside
    rgb, sigma = ff.fused_decode(planes, ff.decoder_weights(dec), points, dirs, config=CONFIG)
    with torch.no_grad():
        rgb_ref, sigma_ref = decode_points(planes, dec, points, dirs)
        zero_sigma = dec(torch.zeros(1, 27, device=DEVICE), None)
    assert rel_err(rgb, rgb_ref) < TOL and rel_err(sigma, sigma_ref) < TOL
    far = sigma[:, 80:85]  # all taps outside: the decoder of zero features (a small, cancelling sum)
    torch.testing.assert_close(sigma_ref[:, 80:85], zero_sigma.expand_as(far))
    torch.testing.assert_close(far, zero_sigma.expand_as(far), atol=2e-4, rtol=0)


@pytest.mark.parametrize("activation,with_dirs", [("softplus", True), ("relu", True), ("softplus", False)])
def test_plane_gradient_matches_autograd(activation, with_dirs):
    planes, dec, points, dirs = make_case(6, hidden=32, color_hidden=16, density_layers=3, activation=activation)
    dirs = dirs if with_dirs else None
    gen = torch.Generator().manual_seed(7)
    w_rgb = torch.randn(B, M, 3, generator=gen).to(DEVICE)
    w_sigma = torch.randn(B, M, 1, generator=gen).to(DEVICE)

    def loss(rgb: torch.Tensor | None, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma * w_sigma).sum() + (0.0 if rgb is None else (rgb * w_rgb).sum())

    fused = planes.clone().requires_grad_(True)
    loss(*ff.fused_decode(fused, ff.decoder_weights(dec), points, dirs, config=CONFIG)).backward()
    ref = planes.clone().requires_grad_(True)
    loss(*decode_points(ref, dec, points, dirs)).backward()
    # relu's kinks make any bf16 path's gradient noisy (~5 % for the torch bf16 autocast path here):
    # allow the larger of TOL and 2.5x the error of torch's own bf16 path
    bf16_ref = planes.clone().requires_grad_(True)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        rgb, sigma = decode_points(bf16_ref, dec, points, dirs)
    loss(None if rgb is None else rgb.float(), sigma.float()).backward()
    assert fused.grad.shape == planes.shape and fused.grad.dtype == planes.dtype
    assert rel_err(fused.grad, ref.grad) < max(TOL, 2.5 * rel_err(bf16_ref.grad, ref.grad))


def test_gradient_of_sigma_only_and_bf16_planes():
    """rgb unused by the loss (its gradient is None) and planes stored in bf16."""
    planes, dec, points, dirs = make_case(8)
    fused = planes.bfloat16().requires_grad_(True)
    _, sigma = ff.fused_decode(fused, ff.decoder_weights(dec), points, dirs, config=CONFIG)
    sigma.sum().backward()
    ref = planes.clone().requires_grad_(True)
    decode_points(ref, dec, points, dirs)[1].sum().backward()
    assert fused.grad.dtype == torch.bfloat16
    assert rel_err(fused.grad, ref.grad) < TOL


def test_make_fused_field_and_empty_points():
    planes, dec, points, dirs = make_case(9)
    weights = ff.decoder_weights(dec)
    field = ff.make_fused_field(planes, weights, config=CONFIG)
    rgb, sigma = field(points, dirs)
    rgb2, sigma2 = ff.fused_decode(planes, weights, points, dirs, config=CONFIG)
    torch.testing.assert_close(rgb, rgb2)
    torch.testing.assert_close(sigma, sigma2)
    rgb0, sigma0 = field(points[:, :0], dirs[:, :0])
    assert rgb0.shape == (B, 0, 3) and sigma0.shape == (B, 0, 1)
    rgb3, sigma3 = make_field(planes, dec, precision="bf16", require_fused=True)(points, dirs)  # forced on
    rgb_ref, sigma_ref = decode_points(planes, dec, points, dirs)
    assert rel_err(rgb3, rgb_ref) < TOL and rel_err(sigma3, sigma_ref) < TOL


def test_unsupported_requests_raise():
    planes, dec, points, dirs = make_case(10)
    weights = ff.decoder_weights(dec)
    with pytest.raises(HumanLiffError, match="no gradient w.r.t. points"):
        ff.fused_decode(planes, weights, points.clone().requires_grad_(True), dirs)
    with pytest.raises(HumanLiffError, match="BLOCK_M"):
        ff.fused_decode(planes, weights, points, dirs, config=ff.LaunchConfig(block_m=48))
    with pytest.raises(HumanLiffError, match="wgmma"):
        ff.fused_decode(planes, weights, points, dirs, config=ff.LaunchConfig(bwd_block_m=64, bwd_num_warps=4))
    layers = [w.weight for w in dec.density_net.layers]
    with pytest.raises(HumanLiffError, match="width"):
        ff.fused_weights([torch.zeros(24, 27)] + layers[1:], [w.weight for w in dec.color_net.layers],
                         "softplus", 4)
    with pytest.raises(HumanLiffError, match="activation"):
        ff.fused_weights(layers, [w.weight for w in dec.color_net.layers], "tanh", 4)
    with pytest.raises(HumanLiffError, match="colour weight shapes"):
        ff.fused_weights(layers, [w.weight for w in dec.color_net.layers], "softplus", 3)


def test_wgmma_configs_refused_unless_disabled(monkeypatch):
    config = ff.LaunchConfig(block_m=64, num_warps=8)
    with pytest.raises(HumanLiffError, match="DISABLE_MMA_V3"):
        ff._check_config(config)
    monkeypatch.setenv("DISABLE_MMA_V3", "1")
    ff._check_config(config)
    monkeypatch.delenv("DISABLE_MMA_V3")
    for weights_kw in ({}, {"hidden": 128, "color_hidden": 128}):
        ff._check_config(ff.default_config(ff.decoder_weights(FusedDecoder(**weights_kw))))


def test_make_field_picks_the_fused_kernel_for_fused_decoders(monkeypatch):
    planes, dec, points, dirs = make_case(11)
    trainable = FusedDecoder(hidden=16, color_hidden=16).to(DEVICE)
    assert ff.frozen_decoder_weights(dec, torch.device("cpu")) is None  # never on the CPU
    assert ff.field_weights(trainable, torch.device("cpu")) is None
    monkeypatch.setattr(ff, "triton_available", lambda: True)
    cuda = torch.device("cuda")  # only a name here: both are refused before anything moves there
    assert ff.frozen_decoder_weights(trainable, cuda) is None
    assert ff.frozen_decoder_weights(SeedDecoder().requires_grad_(False), cuda) is None
    assert ff.field_weights(SeedDecoder(), cuda) is None

    calls = []

    def on_device(decoder, device):  # the CUDA device check stands in for this host's device
        calls.append(decoder)
        return ff.decoder_weights(decoder, trainable=ff.is_trainable(decoder))

    monkeypatch.setattr(ff, "field_weights", on_device)
    rgb, sigma = make_field(planes, dec, precision="bf16")(points, dirs)
    fused_rgb, fused_sigma = ff.fused_decode(planes, ff.decoder_weights(dec), points, dirs)
    torch.testing.assert_close(rgb, fused_rgb)
    torch.testing.assert_close(sigma, fused_sigma)
    assert calls == [dec]
    make_field(planes, dec, precision="fp32")  # fp32 asks for the torch path: not even considered
    make_field(planes, dec, precision="bf16", fused=False)
    assert calls == [dec]
    # a trainable decoder (stage A) takes the fused path with trainable weights: its parameters get gradients
    _, sigma = make_field(planes, trainable, precision="bf16")(points[:, :20], None)
    assert calls == [dec, trainable]
    sigma.sum().backward()
    assert all(p.grad is not None for p in trainable.density_net.parameters())
    assert all(p.grad is None for p in trainable.color_net.parameters())  # sigma only: as the torch path


@pytest.mark.skipif(not INTERPRETED, reason="checks addresses through the Triton interpreter")
def test_every_access_stays_inside_its_tensors(monkeypatch):
    """Each load, store and atomic of both kernels (mask applied) addresses bytes of a kernel argument."""
    import numpy as np
    from triton.runtime import interpreter

    ranges: list[tuple[int, int]] = []
    outside = []
    init_args = interpreter.GridExecutor._init_args_hst

    def record_args(self, args_dev, kwargs):
        args, kw = init_args(self, args_dev, kwargs)
        ranges[:] = [(t.untyped_storage().data_ptr(), t.untyped_storage().data_ptr() + t.untyped_storage().nbytes())
                     for t in [*args, *kw.values()] if isinstance(t, torch.Tensor)]
        return args, kw

    # where each memory op of the interpreter's builder takes its pointers and mask
    operands = {"create_masked_load": lambda a: (a[0], a[1]), "create_masked_store": lambda a: (a[0], a[2]),
                "create_atomic_rmw": lambda a: (a[1], a[3])}

    def checked(name, original):
        def access(self, *args):
            ptrs, mask = operands[name](args)
            size = np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize
            addr = ptrs.data.astype(np.uint64).ravel()[np.broadcast_to(mask.data, ptrs.data.shape).ravel()]
            inside = np.zeros(addr.shape, bool)
            for lo, hi in ranges:
                inside |= (addr >= lo) & (addr + size <= hi)
            outside.append(int((~inside).sum()))
            return original(self, *args)
        return access

    builder = interpreter.InterpreterBuilder
    monkeypatch.setattr(interpreter.GridExecutor, "_init_args_hst", record_args)
    for name in operands:
        monkeypatch.setattr(builder, name, checked(name, getattr(builder, name)))
    planes, dec, points, dirs = make_case(7)
    planes.requires_grad_(True)
    points[0, :10] *= 1e3  # far outside the box: every tap masked
    rgb, sigma = ff.fused_decode(planes, ff.decoder_weights(dec), points, dirs, config=CONFIG)
    (rgb.sum() + sigma.sum()).backward()
    assert len(outside) > 100 and sum(outside) == 0
    # the weight-gradient kernel in both modes: slots of the partial sums, atomics into the gradient copies
    weights = ff.decoder_weights(dec.requires_grad_(True), trainable=True)
    for config in (ff.LaunchConfig(bwd_block_m=16, wgrad="partials", wgrad_blocks=2),
                   ff.LaunchConfig(bwd_block_m=32, wgrad="atomic", wgrad_slots=3)):
        count = len(outside)
        rgb, sigma = ff.fused_decode(planes, weights, points[:, :40], dirs[:, :40], config=config)
        (rgb.sum() + sigma.sum()).backward()
        assert len(outside) > count + 50 and sum(outside) == 0


def _loss_weights(seed: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, m, 3, generator=gen).to(DEVICE), torch.randn(B, m, 1, generator=gen).to(DEVICE)


def _grads(fn, planes: torch.Tensor, dec: FusedDecoder, w_rgb: torch.Tensor, w_sigma: torch.Tensor,
           plane_grad: bool = True) -> list[torch.Tensor | None]:
    """Gradients of a weighted sum of ``fn(planes) -> (rgb, sigma)``: planes first, then the decoder's."""
    dec.zero_grad(set_to_none=True)
    planes = planes.clone().requires_grad_(plane_grad)
    rgb, sigma = fn(planes)
    ((sigma.float() * w_sigma).sum() + (0.0 if rgb is None else (rgb.float() * w_rgb).sum())).backward()
    return [planes.grad] + [None if p.grad is None else p.grad.clone() for p in dec.parameters()]


WGRAD_CASES = {  # name: (launch config, decoder, with view directions, planes need a gradient)
    "atomic, 3+2 layers, softplus": (ff.LaunchConfig(bwd_block_m=32, wgrad="atomic", wgrad_slots=3),
                                     {"hidden": 32, "color_hidden": 16, "density_layers": 3, "color_layers": 2},
                                     True, True),
    "partials, 1+1 layers, 7 geo, 2 freqs": (  # softplus: relu's kinks make bf16 gradients noisy (above)
        ff.LaunchConfig(bwd_block_m=16, wgrad="partials", wgrad_blocks=2),
        {"hidden": 16, "color_hidden": 32, "density_layers": 1, "geo_features": 7, "view_freqs": 2}, True, True),
    "partials, sigma only, decoder gradients only": (
        ff.LaunchConfig(bwd_block_m=16, wgrad="partials", wgrad_blocks=4),
        {"hidden": 16, "color_hidden": 16}, False, False),
}


@pytest.mark.parametrize("case", list(WGRAD_CASES))
def test_decoder_gradients_match_autograd(case):
    """Planes and every decoder parameter against the fp32 torch path (as the plane gradient above)."""
    config, decoder_kw, with_dirs, plane_grad = WGRAD_CASES[case]
    m = 40  # not a multiple of the blocks; B * m / BLOCK_M blocks: a few programs and slots
    planes, dec, points, dirs = make_case(12, **decoder_kw)
    dec.requires_grad_(True)
    points, dirs = points[:, :m], (dirs[:, :m] if with_dirs else None)
    w_rgb, w_sigma = _loss_weights(13, m)

    def fused(p: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        weights = ff.decoder_weights(dec, trainable=True)
        assert weights.trainable and weights.d_in.dtype == torch.bfloat16
        return ff.fused_decode(p, weights, points, dirs, config=config)

    def bf16(p: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            return decode_points(p, dec, points, dirs)

    got = _grads(fused, planes, dec, w_rgb, w_sigma, plane_grad)
    ref = _grads(lambda p: decode_points(p, dec, points, dirs), planes, dec, w_rgb, w_sigma, plane_grad)
    ref_bf16 = _grads(bf16, planes, dec, w_rgb, w_sigma, plane_grad)
    names = ["planes"] + [name for name, _ in dec.named_parameters()]
    for name, g, r, r16 in zip(names, got, ref, ref_bf16, strict=True):
        if r is None:  # planes without a gradient; the colour network of a sigma-only loss
            assert g is None, name
            continue
        assert g.shape == r.shape and g.dtype == r.dtype, name
        assert rel_err(g, r) < max(TOL, 2.5 * rel_err(r16, r)), name
    assert (got[0] is None) != plane_grad


def test_weight_gradient_configs_are_checked(monkeypatch):
    """The weight-gradient dots have the layer widths as rows: 4 warps at 64 wide would be wgmma."""
    trainable = ff.decoder_weights(FusedDecoder(), trainable=True)
    frozen = ff.decoder_weights(FusedDecoder())
    four_warps = ff.LaunchConfig(bwd_block_m=32, bwd_num_warps=4)
    ff._check_config(four_warps, frozen)
    with pytest.raises(HumanLiffError, match="weight-gradient dots with 4 warps"):
        ff._check_config(four_warps, trainable)
    ff._check_config(four_warps, ff.decoder_weights(FusedDecoder(hidden=32, color_hidden=32), trainable=True))
    ff._check_config(ff.default_config(trainable), trainable)
    for bad in (ff.LaunchConfig(wgrad="shared"), ff.LaunchConfig(wgrad_slots=0), ff.LaunchConfig(wgrad_blocks=0)):
        with pytest.raises(HumanLiffError, match="wgrad"):
            ff._check_config(bad, trainable)
    monkeypatch.setenv("DISABLE_MMA_V3", "1")
    ff._check_config(four_warps, trainable)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("wgrad", ff.WGRAD_MODES)
def test_decoder_gradients_on_the_gpu_at_full_size(wgrad):
    """R = 256, 4 x 64K points, the default decoder and launch configuration: both summation modes."""
    gen = torch.Generator().manual_seed(14)
    planes = ((torch.rand(4, 27, 256, 256, generator=gen) * 2 - 1) * 0.5).cuda()
    points = (torch.rand(4, 1 << 16, 3, generator=gen) * 2.2 - 1.1).cuda()
    dirs = torch.randn(points.shape, generator=gen).cuda()
    torch.manual_seed(14)
    dec = FusedDecoder().cuda()
    w_rgb, w_sigma = (torch.randn(4, 1 << 16, c, generator=gen).cuda() for c in (3, 1))
    config = ff.default_config(ff.decoder_weights(dec))._replace(wgrad=wgrad)

    def fused(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ff.fused_decode(p, ff.decoder_weights(dec, trainable=True), points, dirs, config=config)

    got = _grads(fused, planes, dec, w_rgb, w_sigma)
    ref = _grads(lambda p: decode_points(p, dec, points, dirs), planes, dec, w_rgb, w_sigma)
    for g, r in zip(got, ref, strict=True):
        assert torch.isfinite(g).all() and rel_err(g, r) < TOL
