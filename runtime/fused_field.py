"""Fused Triton path: nine-plane feature sampling plus a FusedDecoder-shaped MLP in one kernel.

``fused_decode(planes, weights, points, viewdirs)`` has the contract of
``decode_points(planes, FusedDecoder, points, viewdirs)`` (runtime/field.py), computed in bf16 with fp32
accumulation. The planes are re-laid out once (``prepare_planes``) as channels-last ``[B, 9, R, R, 4]``
(9 = plane*3 + group, the 3 channels of a group padded to 4, so one bilinear tap is one 8-byte load);
each point's 36 taps are gathered in registers, the 27 features go straight into ``tl.dot`` layers,
the view encoding is computed in the kernel and only ``rgb_raw`` / ``sigma_raw`` are written (fp32).

Gradients flow to ``planes`` only: the backward kernel recomputes the forward per block, backpropagates
through the MLP in registers and scatters d(features) with fp32 ``atomic_add`` (non-deterministic
summation order). The decoder weights are frozen copies: when they must be trained, or when gradients
w.r.t. points or view directions are needed, use ``decode_points`` / ``make_field`` instead.

The sampling reproduces ``sample_features`` (runtime/triplane.py): planes XY, XZ, ZY with (u, v) axes
(0, 1), (0, 2), (2, 1); group 0 at (u, v), group 1 at (u + 1/R, v), group 2 at (u, v + 1/R); bilinear,
zero padding, ``align_corners=False`` (pixel x = ((u + 1) R - 1) / 2, u along W, v along H).

Launch configurations keep Triton on ``mma.sync`` (MMAv2): with 4+ warps and ``BLOCK_M >= 64`` triton
3.6 lowers ``tl.dot`` to Hopper's wgmma, and that code read shared memory out of bounds on an H100
(compute-sanitizer: "Invalid __shared__ read of size 512 bytes"), an illegal memory access in most
processes. ``_check_config`` refuses such configurations unless ``DISABLE_MMA_V3=1`` is set. Measured on
the H100 (``benchmarks/results/2026-11-25-h100-session3.md``, R = 256, 4 x 1M points): the default
configuration runs 3.8 G points/s forward and 0.76 G points/s forward + backward, with no sanitizer error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.triplane import CHANNELS, GROUP_CHANNELS, N_GROUPS, N_PLANES

if TYPE_CHECKING:
    from humanliff.runtime.field import Field

try:  # the runtime must import without triton; the fused path then reports itself unavailable
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    libdevice = None

TAP_CHANNELS = 4
"""Channels of one texel of a prepared plane (the group's 3 channels plus one zero)."""
WIDTHS = (16, 32, 64, 128)
ACTIVATIONS = ("softplus", "relu")
PLANE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def triton_available() -> bool:
    """True when triton imports and kernels can run: on CUDA, or anywhere with ``TRITON_INTERPRET=1``."""
    if triton is None:
        return False
    if os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
        return True
    return torch.cuda.is_available()


# ----------------------------------------------------------------------------------------- weights


def _pow2_at_least16(n: int) -> int:
    p = 16
    while p < n:
        p *= 2
    return p


@dataclass(frozen=True)
class FusedWeights:
    """The padded, frozen bf16 weight matrices of a FusedDecoder-shaped network, stored ``[in, out]``.

    Density network (``hidden`` wide, ``density_layers`` hidden layers), colour network
    (``color_hidden`` wide, ``color_layers`` hidden layers):

    * ``d_in [3, 16, hidden]``: first density layer per plane; row ``g*4 + c`` of plane ``p`` is input
      feature ``p*9 + g*3 + c`` (rows with g = 3 or c = 3 are zero), matching a prepared plane's texels.
    * ``d_hidden [max(density_layers - 1, 1), hidden, hidden]`` (zeros when there are none).
    * ``d_out [hidden, out_pad]``: column 0 is sigma_raw, columns 1..geo_features the geometry features.
    * ``c_geo [out_pad, color_hidden]``: colour layer 0 on the density output (row 0, sigma, is zero).
    * ``c_view [view_pad, color_hidden]``: colour layer 0 on the view encoding (3 + 6 view_freqs rows).
    * ``c_hidden [max(color_layers - 1, 1), color_hidden, color_hidden]``.
    * ``c_out [color_hidden, 16]``: columns 0..2 are rgb_raw.
    """

    d_in: torch.Tensor
    d_hidden: torch.Tensor
    d_out: torch.Tensor
    c_geo: torch.Tensor
    c_view: torch.Tensor
    c_hidden: torch.Tensor
    c_out: torch.Tensor
    hidden: int
    density_layers: int
    color_hidden: int
    color_layers: int
    geo_features: int
    view_freqs: int
    activation: str

    @property
    def out_pad(self) -> int:
        """Padded width of the density network's output (power of two, >= 16)."""
        return self.d_out.shape[1]

    @property
    def view_pad(self) -> int:
        """Padded width of the view encoding (power of two, >= 16)."""
        return self.c_view.shape[0]

    @property
    def device(self) -> torch.device:
        return self.d_in.device

    def to(self, device: torch.device | str) -> FusedWeights:
        """These weights on ``device``."""
        names = ("d_in", "d_hidden", "d_out", "c_geo", "c_view", "c_hidden", "c_out")
        return replace(self, **{n: getattr(self, n).to(device) for n in names})


def _check_width(width: int, what: str) -> None:
    if width not in WIDTHS:
        raise HumanLiffError(f"fused field: {what} width {width} is not one of {WIDTHS}")


def fused_weights(density_layers: Sequence[torch.Tensor], color_layers: Sequence[torch.Tensor],
                  activation: str, view_freqs: int) -> FusedWeights:
    """Pack a FusedDecoder's bias-free ``Linear.weight`` matrices (``[out, in]``) for the fused kernels.

    Args:
        density_layers: ``[H, 27]``, (L - 1) x ``[H, H]``, ``[1 + geo, H]`` (L >= 1 hidden layers).
        color_layers: ``[C, geo + 3 + 6 view_freqs]``, (L' - 1) x ``[C, C]``, ``[3, C]`` (L' >= 1).
        activation: ``softplus`` (beta 10, as tiny-cuda-nn) or ``relu``.
        view_freqs: frequencies of the view encoding.

    The matrices are detached and copied: the fused path never produces weight gradients.
    """
    if activation not in ACTIVATIONS:
        raise HumanLiffError(f"fused field: activation '{activation}' is not one of {ACTIVATIONS}")
    if len(density_layers) < 2 or len(color_layers) < 2:
        raise HumanLiffError("fused field: both networks need at least one hidden layer")
    dl = [w.detach().float() for w in density_layers]
    cl = [w.detach().float() for w in color_layers]
    hidden, color_hidden = dl[0].shape[0], cl[0].shape[0]
    _check_width(hidden, "density hidden")
    _check_width(color_hidden, "colour hidden")
    geo = dl[-1].shape[0] - 1
    n_view = 3 + 6 * view_freqs
    expected_d = [(hidden, CHANNELS)] + [(hidden, hidden)] * (len(dl) - 2) + [(geo + 1, hidden)]
    expected_c = [(color_hidden, geo + n_view)] + [(color_hidden, color_hidden)] * (len(cl) - 2)
    expected_c += [(3, color_hidden)]
    for name, mats, shapes in (("density", dl, expected_d), ("colour", cl, expected_c)):
        got = [tuple(m.shape) for m in mats]
        if got != shapes:
            raise HumanLiffError(f"fused field: {name} weight shapes {got}, expected {shapes}")

    dev, bf16 = dl[0].device, torch.bfloat16
    out_pad, view_pad = _pow2_at_least16(geo + 1), _pow2_at_least16(n_view)

    d_in = torch.zeros(N_PLANES, N_GROUPS + 1, TAP_CHANNELS, hidden, device=dev)
    d_in[:, :N_GROUPS, :GROUP_CHANNELS] = dl[0].t().reshape(N_PLANES, N_GROUPS, GROUP_CHANNELS, hidden)
    d_in = d_in.reshape(N_PLANES, (N_GROUPS + 1) * TAP_CHANNELS, hidden)

    def stack(mats: list[torch.Tensor], width: int) -> torch.Tensor:
        if not mats:
            return torch.zeros(1, width, width, device=dev, dtype=bf16)
        return torch.stack([m.t() for m in mats]).to(bf16).contiguous()

    d_out = torch.zeros(hidden, out_pad, device=dev)
    d_out[:, : geo + 1] = dl[-1].t()
    c_geo = torch.zeros(out_pad, color_hidden, device=dev)
    c_geo[1 : geo + 1] = cl[0][:, :geo].t()
    c_view = torch.zeros(view_pad, color_hidden, device=dev)
    c_view[:n_view] = cl[0][:, geo:].t()
    c_out = torch.zeros(color_hidden, 16, device=dev)
    c_out[:, :3] = cl[-1].t()
    return FusedWeights(
        d_in=d_in.to(bf16).contiguous(), d_hidden=stack(dl[1:-1], hidden), d_out=d_out.to(bf16).contiguous(),
        c_geo=c_geo.to(bf16).contiguous(), c_view=c_view.to(bf16).contiguous(),
        c_hidden=stack(cl[1:-1], color_hidden), c_out=c_out.to(bf16).contiguous(),
        hidden=hidden, density_layers=len(dl) - 1, color_hidden=color_hidden, color_layers=len(cl) - 1,
        geo_features=geo, view_freqs=view_freqs, activation=activation,
    )


def decoder_weights(decoder: torch.nn.Module) -> FusedWeights:
    """``fused_weights`` of a FusedDecoder with the torch backend (duck-typed: ``density_net.layers``,
    ``color_net.layers``, ``activation``, ``view_freqs``), without importing humanliff.models."""
    try:
        dnet, cnet = decoder.density_net, decoder.color_net
        dense = [layer.weight for layer in dnet.layers]
        color = [layer.weight for layer in cnet.layers]
        activation, freqs = dnet.activation, decoder.view_freqs
    except AttributeError as exc:
        raise HumanLiffError("fused field: the decoder is not a FusedDecoder with the torch backend "
                             f"({exc}); use decode_points") from exc
    if cnet.activation != activation:
        raise HumanLiffError("fused field: the density and colour networks use different activations")
    return fused_weights(dense, color, activation, freqs)


def frozen_decoder_weights(decoder: Any, device: torch.device) -> FusedWeights | None:
    """``decoder_weights(decoder)`` on ``device`` when the fused kernel can stand in for ``decode_points``
    there: triton on a CUDA device and a FusedDecoder (torch backend) whose parameters are all frozen.
    None otherwise (a CPU device, no triton, a trainable, SeedDecoder or tiny-cuda-nn decoder)."""
    if device.type != "cuda" or not triton_available():
        return None
    params = decoder.parameters() if isinstance(decoder, torch.nn.Module) else ()
    if any(p.requires_grad for p in params):
        return None
    try:
        return decoder_weights(decoder).to(device)
    except HumanLiffError:
        return None


# ----------------------------------------------------------------------------------------- planes


def _check_planes(planes: torch.Tensor) -> None:
    if planes.dim() != 4 or planes.shape[1] != CHANNELS or planes.shape[2] != planes.shape[3]:
        raise HumanLiffError(f"fused field: planes must be [B, {CHANNELS}, R, R], got {tuple(planes.shape)}")


def prepare_planes(planes: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Tri-planes ``[B, 27, R, R]`` to the fused layout ``[B, 9, R, R, 4]`` (channels last, ``dtype``).

    Index ``[b, plane*3 + group, y, x, c]`` holds channel ``plane*9 + group*3 + c``; ``c = 3`` is zero.
    Detached: gradients reach ``planes`` through ``fused_decode``, not through this copy.
    """
    _check_planes(planes)
    if dtype not in PLANE_DTYPES:
        raise HumanLiffError(f"fused field: plane dtype {dtype} is not one of {PLANE_DTYPES}")
    b, _, r, _ = planes.shape
    groups = planes.detach().reshape(b, N_PLANES * N_GROUPS, GROUP_CHANNELS, r, r).permute(0, 1, 3, 4, 2)
    out = planes.new_zeros((b, N_PLANES * N_GROUPS, r, r, TAP_CHANNELS), dtype=dtype)
    out[..., :GROUP_CHANNELS] = groups
    return out


def _plane_grad_to_nchw(grad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 ``[B, 9, R, R, 4]`` gradient to ``[B, 27, R, R]`` in ``dtype``."""
    b, _, r, _, _ = grad.shape
    return grad[..., :GROUP_CHANNELS].permute(0, 1, 4, 2, 3).reshape(b, CHANNELS, r, r).to(dtype)


# ----------------------------------------------------------------------------------------- kernels

if triton is not None:

    @triton.jit
    def _log2(x):
        """log2; the fast ``lg2.approx`` on the GPU (the interpreter has no libdevice)."""
        if _INTERPRETED:
            return tl.log2(x)
        else:
            return libdevice.fast_log2f(x)

    @triton.jit
    def _sin(x):
        """sin; the fast ``sin.approx`` on the GPU (abs error ~1e-6 here, far below bf16's)."""
        if _INTERPRETED:
            return tl.sin(x)
        else:
            return libdevice.fast_sinf(x)

    @triton.jit
    def _softplus_parts(x):
        """``e = exp(-10 |x|)`` and softplus with beta 10, ``max(x, 0) + log(1 + e) / 10`` (stable)."""
        e = tl.exp2(tl.abs(x) * -14.426950408889634)  # 10 / ln 2
        return e, tl.maximum(x, 0.0) + _log2(1.0 + e) * 0.06931471805599453  # ln 2 / 10

    @triton.jit
    def _act(x, SOFTPLUS: tl.constexpr):
        """softplus with beta 10 (tiny-cuda-nn's) or relu, elementwise in fp32."""
        if SOFTPLUS:
            _, y = _softplus_parts(x)
            return y
        else:
            return tl.maximum(x, 0.0)

    @triton.jit
    def _act_and_grad(x, SOFTPLUS: tl.constexpr):
        """The activation and its derivative: sigmoid(10 x) for softplus, [x > 0] for relu (as torch)."""
        if SOFTPLUS:
            e, y = _softplus_parts(x)
            return y, tl.where(x >= 0.0, 1.0, e) / (1.0 + e)
        else:
            return tl.maximum(x, 0.0), tl.where(x > 0.0, 1.0, 0.0)

    @triton.jit
    def _load_w(ptr, K: tl.constexpr, N: tl.constexpr):
        """Row-major ``[K, N]`` matrix."""
        return tl.load(ptr + tl.arange(0, K)[:, None] * N + tl.arange(0, N)[None, :])

    @triton.jit
    def _load_wt(ptr, K: tl.constexpr, N: tl.constexpr):
        """The transpose ``[N, K]`` of a row-major ``[K, N]`` matrix (contiguous load, then a view)."""
        return tl.trans(_load_w(ptr, K, N))

    @triton.jit
    def _dot_bf16(a, b):
        """``a @ b`` with ``a`` rounded to bf16 (``b`` is bf16), fp32 accumulation."""
        if _INTERPRETED:  # the interpreter multiplies bf16 bit patterns as integers: go through fp32
            return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.float32), out_dtype=tl.float32)
        else:
            return tl.dot(a.to(tl.bfloat16), b, out_dtype=tl.float32)

    @triton.jit
    def _dense(h, w_ptr, K: tl.constexpr, N: tl.constexpr):
        """``h [BLOCK, K] @ W [K, N]``: bf16 operands, fp32 accumulation."""
        return _dot_bf16(h, _load_w(w_ptr, K, N))

    @triton.jit
    def _dense_t(g, w_ptr, K: tl.constexpr, N: tl.constexpr):
        """``g [BLOCK, N] @ W^T [N, K]`` for a row-major ``W [K, N]`` (backward through ``_dense``)."""
        return _dot_bf16(g, _load_wt(w_ptr, K, N))

    @triton.jit
    def _plane_uv(x, y, z, P: tl.constexpr):
        """(u, v) of points on plane P: XY, XZ, ZY."""
        if P == 0:
            return x, y
        elif P == 1:
            return x, z
        else:
            return z, y

    @triton.jit
    def _bilinear(u, v, R, P: tl.constexpr):
        """Bilinear taps of plane P's groups for points ``u, v [BLOCK]`` in [-1, 1].

        Returns ``x0, y0`` (int32), ``fx, fy`` (fp32) as ``[BLOCK, 4]`` (column = group; group 3 is
        padding), the texel offset of each group's plane ``[1, 4]`` and the group mask ``[1, 4]``.
        """
        rf = R * 1.0
        g = tl.arange(0, 4)[None, :]
        step = 1.0 / rf
        gu = u[:, None] + tl.where(g == 1, step, 0.0)
        gv = v[:, None] + tl.where(g == 2, step, 0.0)
        # grid_sample, align_corners=False; clamping keeps the int conversion in range and changes
        # nothing else (both taps are outside the plane there)
        ix = tl.minimum(tl.maximum(((gu + 1.0) * rf - 1.0) * 0.5, -2.0), rf + 1.0)
        iy = tl.minimum(tl.maximum(((gv + 1.0) * rf - 1.0) * 0.5, -2.0), rf + 1.0)
        x0f = tl.floor(ix)
        y0f = tl.floor(iy)
        plane_off = (P * 3 + g) * R * R
        return x0f.to(tl.int32), y0f.to(tl.int32), ix - x0f, iy - y0f, plane_off, g < 3

    @triton.jit
    def _tap(base_ptr, plane_off, x, y, R, ok):
        """Pointers ``[BLOCK, 4, 4]`` to texel (x, y) of each group (4 channels) and the tap's mask
        ``[BLOCK, 4, 1]`` (zero padding outside the plane)."""
        valid = ok & (x >= 0) & (x < R) & (y >= 0) & (y < R)
        texel = (plane_off + y * R + x) * 4
        ptrs = base_ptr + texel[:, :, None] + tl.arange(0, 4)[None, None, :]
        return ptrs, valid[:, :, None]

    @triton.jit
    def _load_tap(base_ptr, plane_off, x, y, R, ok):
        ptrs, valid = _tap(base_ptr, plane_off, x, y, R, ok)
        return tl.load(ptrs, mask=tl.broadcast_to(valid, ptrs.shape), other=0.0).to(tl.float32)

    @triton.jit
    def _sample_plane(base_ptr, u, v, R, P: tl.constexpr, BLOCK_M: tl.constexpr):
        """Plane P's features ``[BLOCK, 16]`` fp32, column ``group*4 + c`` (group 3 and c = 3 are zero)."""
        x0, y0, fx, fy, plane_off, ok = _bilinear(u, v, R, P)
        gx = 1.0 - fx
        gy = 1.0 - fy
        f = _load_tap(base_ptr, plane_off, x0, y0, R, ok) * (gx * gy)[:, :, None]
        f += _load_tap(base_ptr, plane_off, x0 + 1, y0, R, ok) * (fx * gy)[:, :, None]
        f += _load_tap(base_ptr, plane_off, x0, y0 + 1, R, ok) * (gx * fy)[:, :, None]
        f += _load_tap(base_ptr, plane_off, x0 + 1, y0 + 1, R, ok) * (fx * fy)[:, :, None]
        return tl.reshape(f, (BLOCK_M, 16))

    @triton.jit
    def _scatter_tap(grad_ptr, plane_off, x, y, R, ok, g3, w):
        ptrs, valid = _tap(grad_ptr, plane_off, x, y, R, ok)
        # all 4 channels (the padding one gets zero): one vector atomic per texel on sm_90
        tl.atomic_add(ptrs, g3 * w[:, :, None], mask=tl.broadcast_to(valid, ptrs.shape), sem="relaxed")

    @triton.jit
    def _scatter_plane(grad_ptr, gfeat, u, v, R, row_ok, P: tl.constexpr, BLOCK_M: tl.constexpr):
        """Add d(features) ``[BLOCK, 16]`` of plane P to the fp32 plane gradient at the bilinear taps."""
        x0, y0, fx, fy, plane_off, ok = _bilinear(u, v, R, P)
        ok = ok & row_ok[:, None]
        g3 = tl.reshape(gfeat, (BLOCK_M, 4, 4))
        gx = 1.0 - fx
        gy = 1.0 - fy
        _scatter_tap(grad_ptr, plane_off, x0, y0, R, ok, g3, gx * gy)
        _scatter_tap(grad_ptr, plane_off, x0 + 1, y0, R, ok, g3, fx * gy)
        _scatter_tap(grad_ptr, plane_off, x0, y0 + 1, R, ok, g3, gx * fy)
        _scatter_tap(grad_ptr, plane_off, x0 + 1, y0 + 1, R, ok, g3, fx * fy)

    @triton.jit
    def _view_encoding(dirs_ptr, rows, row_ok, VP: tl.constexpr, VIEW_FREQS: tl.constexpr):
        """``view_encoding`` of the block's directions: ``[BLOCK, VP]`` fp32, columns
        ``[d, sin d, cos d, sin 2d, cos 2d, ...]`` (d normalized), zero past ``3 + 6 VIEW_FREQS``."""
        dx = tl.load(dirs_ptr + rows * 3, mask=row_ok, other=1.0)
        dy = tl.load(dirs_ptr + rows * 3 + 1, mask=row_ok, other=0.0)
        dz = tl.load(dirs_ptr + rows * 3 + 2, mask=row_ok, other=0.0)
        inv = 1.0 / tl.maximum(tl.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
        dx = (dx * inv)[:, None]
        dy = (dy * inv)[:, None]
        dz = (dz * inv)[:, None]
        j = tl.arange(0, VP)[None, :]
        r = tl.maximum(j - 3, 0)
        comp = tl.where(j < 3, j, (r % 6) % 3)
        d = tl.where(comp == 0, dx, tl.where(comp == 1, dy, dz))
        scale = (1 << (r // 6)).to(tl.float32)
        phase = tl.where(r % 6 >= 3, 1.5707963267948966, 0.0)  # cos t = sin(t + pi/2)
        enc = tl.where(j < 3, d, _sin(d * scale + phase))
        return tl.where(j < 3 + 6 * VIEW_FREQS, enc, 0.0)

    @triton.jit
    def _forward_block(planes_ptr, dirs_ptr, w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout,
                       x, y, z, rows, row_ok, R,
                       H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                       C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                       SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr):
        """Features and both networks for one block of points.

        Returns the density output ``[BLOCK, OD]`` (column 0 = sigma_raw), rgb_raw ``[BLOCK, 16]``
        (columns 0..2; zeros without ``WITH_RGB``) and the activation derivatives of each
        hidden layer (fp16), density then colour, as tuples (used by the backward kernel).
        """
        pre = tl.zeros((BLOCK_M, H), dtype=tl.float32)
        for p in tl.static_range(3):
            u, v = _plane_uv(x, y, z, p)
            feat = _sample_plane(planes_ptr, u, v, R, p, BLOCK_M)
            pre += _dense(feat, w_in + p * 16 * H, 16, H)
        h, dh = _act_and_grad(pre, SOFTPLUS)
        d_grads = (dh.to(tl.float16),)
        for i in tl.static_range(D_LAYERS - 1):
            h, dh = _act_and_grad(_dense(h, w_hid + i * H * H, H, H), SOFTPLUS)
            d_grads = d_grads + (dh.to(tl.float16),)
        dens = _dense(h, w_dout, H, OD)

        c_grads = ()
        rgb = tl.zeros((BLOCK_M, 16), dtype=tl.float32)
        if WITH_RGB:
            enc = _view_encoding(dirs_ptr, rows, row_ok, VP, VIEW_FREQS)
            pre = _dense(dens, w_cgeo, OD, CH) + _dense(enc, w_cview, VP, CH)
            h, dh = _act_and_grad(pre, SOFTPLUS)
            c_grads = (dh.to(tl.float16),)
            for i in tl.static_range(C_LAYERS - 1):
                h, dh = _act_and_grad(_dense(h, w_chid + i * CH * CH, CH, CH), SOFTPLUS)
                c_grads = c_grads + (dh.to(tl.float16),)
            rgb = _dense(h, w_cout, CH, 16)
        return dens, rgb, d_grads, c_grads

    @triton.jit
    def _load_points(pts_ptr, rows, row_ok, VOLATILE: tl.constexpr = False):
        """x, y, z ``[BLOCK]`` of points ``[N, 3]`` (fp32) at ``rows``."""
        x = tl.load(pts_ptr + rows * 3, mask=row_ok, other=0.0, volatile=VOLATILE)
        y = tl.load(pts_ptr + rows * 3 + 1, mask=row_ok, other=0.0, volatile=VOLATILE)
        z = tl.load(pts_ptr + rows * 3 + 2, mask=row_ok, other=0.0, volatile=VOLATILE)
        return x, y, z

    @triton.jit
    def _fused_forward_kernel(planes_ptr, pts_ptr, dirs_ptr, rgb_ptr, sigma_ptr,
                              w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout, M, R,
                              H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                              C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                              SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr):
        """Grid ``(cdiv(M, BLOCK_M), B)``: rgb_raw ``[B, M, 3]`` and sigma_raw ``[B, M, 1]`` (fp32)."""
        b = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        planes_b = planes_ptr + b * (9 * 4) * R * R
        grow = b * M + rows  # global point index, int64
        x, y, z = _load_points(pts_ptr, grow, row_ok)
        dens, rgb, _, _ = _forward_block(planes_b, dirs_ptr, w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid,
                                         w_cout, x, y, z, grow, row_ok, R, H, D_LAYERS, OD, CH, C_LAYERS, VP,
                                         VIEW_FREQS, SOFTPLUS, WITH_RGB, BLOCK_M)
        col = tl.arange(0, OD)[None, :]
        tl.store(sigma_ptr + grow[:, None] + col, dens, mask=row_ok[:, None] & (col == 0))
        if WITH_RGB:
            col = tl.arange(0, 16)[None, :]
            tl.store(rgb_ptr + grow[:, None] * 3 + col, rgb, mask=row_ok[:, None] & (col < 3))

    @triton.jit
    def _fused_backward_kernel(planes_ptr, pts_ptr, dirs_ptr, grad_rgb_ptr, grad_sigma_ptr, grad_planes_ptr,
                               w_in, w_hid, w_dout, w_cgeo, w_cview, w_chid, w_cout, M, R,
                               H: tl.constexpr, D_LAYERS: tl.constexpr, OD: tl.constexpr, CH: tl.constexpr,
                               C_LAYERS: tl.constexpr, VP: tl.constexpr, VIEW_FREQS: tl.constexpr,
                               SOFTPLUS: tl.constexpr, WITH_RGB: tl.constexpr, BLOCK_M: tl.constexpr):
        """Grid ``(cdiv(M, BLOCK_M), B)``: adds d(loss)/d(planes) into fp32 ``[B, 9, R, R, 4]``.

        ``WITH_RGB``: rgb_raw has an incoming gradient ``[B, M, 3]`` (the colour network is recomputed
        and backpropagated); the sigma gradient ``[B, M, 1]`` is always read.
        """
        b = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        plane_stride = b * (9 * 4) * R * R
        planes_b = planes_ptr + plane_stride
        grow = b * M + rows
        x, y, z = _load_points(pts_ptr, grow, row_ok)
        _, _, d_grads, c_grads = _forward_block(planes_b, dirs_ptr, w_in, w_hid, w_dout, w_cgeo, w_cview,
                                                w_chid, w_cout, x, y, z, grow, row_ok, R, H, D_LAYERS, OD, CH,
                                                C_LAYERS, VP, VIEW_FREQS, SOFTPLUS, WITH_RGB, BLOCK_M)
        col = tl.arange(0, OD)[None, :]
        g_sigma = tl.load(grad_sigma_ptr + grow, mask=row_ok, other=0.0)
        g_dens = tl.where(col == 0, g_sigma[:, None], 0.0)  # [BLOCK, OD]
        if WITH_RGB:
            col3 = tl.arange(0, 16)[None, :]
            g_rgb = tl.load(grad_rgb_ptr + grow[:, None] * 3 + col3, mask=row_ok[:, None] & (col3 < 3), other=0.0)
            g = _dense_t(g_rgb, w_cout, CH, 16)  # [BLOCK, CH]
            for i in tl.static_range(C_LAYERS - 1, 0, -1):
                g = _dense_t(g * c_grads[i].to(tl.float32), w_chid + (i - 1) * CH * CH, CH, CH)
            g_dens += _dense_t(g * c_grads[0].to(tl.float32), w_cgeo, OD, CH)
        g = _dense_t(g_dens, w_dout, H, OD)  # [BLOCK, H]
        for i in tl.static_range(D_LAYERS - 1, 0, -1):
            g = _dense_t(g * d_grads[i].to(tl.float32), w_hid + (i - 1) * H * H, H, H)
        g = g * d_grads[0].to(tl.float32)
        grad_b = grad_planes_ptr + plane_stride
        # reload the points (volatile: not merged with the first load) so that the compiler recomputes the
        # taps here instead of keeping the forward's tap coordinates live across the MLP (register pressure)
        x, y, z = _load_points(pts_ptr, grow, row_ok, True)
        for p in tl.static_range(3):
            u, v = _plane_uv(x, y, z, p)
            gfeat = _dense_t(g, w_in + p * 16 * H, 16, H)  # [BLOCK, 16]
            _scatter_plane(grad_b, gfeat, u, v, R, row_ok, p, BLOCK_M)

    _INTERPRETED = tl.constexpr(type(_fused_forward_kernel).__name__ == "InterpretedFunction")
    """True when the kernels were decorated under TRITON_INTERPRET=1 (read by the jitted helpers above)."""


# ----------------------------------------------------------------------------------------- launch


class LaunchConfig(NamedTuple):
    """Block sizes and warps of the forward and the backward kernel (BLOCK_M a power of two >= 16), and
    optional register caps per thread (triton's ``maxnreg``: more resident warps, maybe spills)."""

    block_m: int = 32
    num_warps: int = 2
    bwd_block_m: int = 32
    bwd_num_warps: int = 2
    maxnreg: int | None = None
    bwd_maxnreg: int | None = None


def default_config(weights: FusedWeights) -> LaunchConfig:
    """Block sizes for these weights: 32 points on 2 warps (fastest measured for 64-wide layers), one warp
    on 16 points for 128-wide layers (register pressure; not measured)."""
    if max(weights.hidden, weights.color_hidden) > 64:
        return LaunchConfig(block_m=16, num_warps=1, bwd_block_m=16, bwd_num_warps=1)
    return LaunchConfig()


def _uses_wgmma(block_m: int, num_warps: int) -> bool:
    """Whether triton lowers this block's ``tl.dot`` to Hopper's wgmma (a warp group of 4, 64+ rows)."""
    return num_warps % 4 == 0 and block_m >= 64


def _check_config(config: LaunchConfig) -> None:
    wgmma_off = os.environ.get("DISABLE_MMA_V3", "0").lower() in ("1", "true", "on", "yes")
    for bm, warps in ((config.block_m, config.num_warps), (config.bwd_block_m, config.bwd_num_warps)):
        if bm < 16 or bm & (bm - 1):
            raise HumanLiffError(f"fused field: BLOCK_M {bm} is not a power of two >= 16")
        if _uses_wgmma(bm, warps) and not wgmma_off:
            raise HumanLiffError(f"fused field: BLOCK_M {bm} with {warps} warps compiles to wgmma, which faults "
                                 "(illegal memory access) on triton 3.6; use fewer warps or rows, or set "
                                 "DISABLE_MMA_V3=1")


def _meta(weights: FusedWeights, with_rgb: bool, block_m: int) -> dict[str, object]:
    return {"H": weights.hidden, "D_LAYERS": weights.density_layers, "OD": weights.out_pad,
            "CH": weights.color_hidden, "C_LAYERS": weights.color_layers, "VP": weights.view_pad,
            "VIEW_FREQS": weights.view_freqs, "SOFTPLUS": weights.activation == "softplus",
            "WITH_RGB": with_rgb, "BLOCK_M": block_m}


def _on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Launch on the tensors' GPU (triton launches on the current device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _launch_options(num_warps: int, maxnreg: int | None) -> dict[str, int]:
    return {"num_warps": num_warps} if maxnreg is None else {"num_warps": num_warps, "maxnreg": maxnreg}


def _weight_args(weights: FusedWeights) -> tuple[torch.Tensor, ...]:
    return (weights.d_in, weights.d_hidden, weights.d_out, weights.c_geo, weights.c_view, weights.c_hidden,
            weights.c_out)


def _launch_forward(prepared: torch.Tensor, weights: FusedWeights, points: torch.Tensor,
                    viewdirs: torch.Tensor | None, config: LaunchConfig
                    ) -> tuple[torch.Tensor | None, torch.Tensor]:
    b, m, _ = points.shape
    r = prepared.shape[2]
    sigma = points.new_empty((b, m, 1), dtype=torch.float32)
    rgb = None if viewdirs is None else points.new_empty((b, m, 3), dtype=torch.float32)
    if m == 0 or b == 0:
        return rgb, sigma
    grid = (triton.cdiv(m, config.block_m), b)
    with _on_device(prepared.device):
        _fused_forward_kernel[grid](
            prepared, points, points if viewdirs is None else viewdirs, sigma if rgb is None else rgb, sigma,
            *_weight_args(weights), m, r, **_meta(weights, viewdirs is not None, config.block_m),
            **_launch_options(config.num_warps, config.maxnreg),
        )
    return rgb, sigma


def _launch_backward(prepared: torch.Tensor, weights: FusedWeights, points: torch.Tensor,
                     viewdirs: torch.Tensor | None, grad_rgb: torch.Tensor | None, grad_sigma: torch.Tensor,
                     config: LaunchConfig) -> torch.Tensor:
    """fp32 ``[B, 9, R, R, 4]`` gradient of the prepared planes."""
    b, m, _ = points.shape
    grad = torch.zeros(prepared.shape, dtype=torch.float32, device=prepared.device)
    if m == 0 or b == 0:
        return grad
    with_rgb = viewdirs is not None and grad_rgb is not None
    grid = (triton.cdiv(m, config.bwd_block_m), b)
    with _on_device(prepared.device):
        _fused_backward_kernel[grid](
            prepared, points, points if viewdirs is None else viewdirs,
            grad_sigma if grad_rgb is None else grad_rgb, grad_sigma, grad, *_weight_args(weights), m,
            prepared.shape[2], **_meta(weights, with_rgb, config.bwd_block_m),
            **_launch_options(config.bwd_num_warps, config.bwd_maxnreg),
        )
    return grad


class _FusedDecode(torch.autograd.Function):
    """Differentiable in ``planes`` only (argument 0)."""

    @staticmethod
    def forward(ctx: Any, planes: torch.Tensor, prepared: torch.Tensor, weights: FusedWeights,
                points: torch.Tensor, viewdirs: torch.Tensor | None,
                config: LaunchConfig) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``sigma_raw`` alone without ``viewdirs``, else ``(rgb_raw, sigma_raw)``."""
        rgb, sigma = _launch_forward(prepared, weights, points, viewdirs, config)
        ctx.save_for_backward(prepared, points, viewdirs)
        ctx.weights, ctx.config, ctx.plane_dtype = weights, config, planes.dtype
        return sigma if rgb is None else (rgb, sigma)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """d(loss)/d(planes) ``[B, 27, R, R]`` in the planes' dtype; None for the other inputs."""
        prepared, points, viewdirs = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        grad_rgb, grad_sigma = grads if len(grads) == 2 else (None, grads[0])
        if grad_sigma is None:
            grad_sigma = points.new_zeros(points.shape[:2] + (1,), dtype=torch.float32)
        grad_sigma = grad_sigma.float().contiguous()
        grad_rgb = None if grad_rgb is None else grad_rgb.float().contiguous()
        grad = _launch_backward(prepared, ctx.weights, points, viewdirs, grad_rgb, grad_sigma, ctx.config)
        return _plane_grad_to_nchw(grad, ctx.plane_dtype), None, None, None, None, None


def fused_decode(planes: torch.Tensor, weights: FusedWeights, points: torch.Tensor,
                 viewdirs: torch.Tensor | None, *, prepared: torch.Tensor | None = None,
                 config: LaunchConfig | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Sample nine-plane features and decode them with the fused kernel.

    Args:
        planes: ``[B, 27, R, R]`` tri-planes (any float dtype); the gradient flows here.
        weights: ``fused_weights(...)`` / ``decoder_weights(decoder)``, on the planes' device.
        points: ``[B, M, 3]`` in [-1, 1] (outside: zero padding). No gradient w.r.t. points.
        viewdirs: ``[B, M, 3]`` (normalized in the kernel) or None for density only. No gradient.
        prepared: ``prepare_planes(planes)`` when the caller keeps it across calls (it must be current).
        config: block sizes and warps of the two kernels (``default_config(weights)`` when None).

    Returns:
        ``(rgb_raw [B, M, 3] or None, sigma_raw [B, M, 1])``, float32, as ``decode_points`` with the
        FusedDecoder these weights came from (bf16 accuracy).
    """
    if not triton_available():
        raise HumanLiffError("fused field: needs triton and a CUDA device (or TRITON_INTERPRET=1)")
    config = default_config(weights) if config is None else config
    _check_config(config)
    _check_planes(planes)
    if points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise HumanLiffError(f"fused field: points must be [B, M, 3] with B={planes.shape[0]}, "
                             f"got {tuple(points.shape)}")
    if viewdirs is not None and viewdirs.shape != points.shape:
        raise HumanLiffError(f"fused field: viewdirs {tuple(viewdirs.shape)} do not match points "
                             f"{tuple(points.shape)}")
    if torch.is_grad_enabled() and (points.requires_grad or (viewdirs is not None and viewdirs.requires_grad)):
        raise HumanLiffError("fused field: no gradient w.r.t. points or view directions; detach them or use "
                             "decode_points")
    if weights.device != planes.device or points.device != planes.device:
        raise HumanLiffError(f"fused field: planes on {planes.device}, points on {points.device}, weights on "
                             f"{weights.device}; move them to one device")
    if prepared is None:
        prepared = prepare_planes(planes)
    elif prepared.shape != (planes.shape[0], N_PLANES * N_GROUPS, planes.shape[2], planes.shape[3], TAP_CHANNELS):
        raise HumanLiffError(f"fused field: prepared planes {tuple(prepared.shape)} do not match planes "
                             f"{tuple(planes.shape)}")
    points = points.detach().float().contiguous()
    viewdirs = None if viewdirs is None else viewdirs.detach().float().contiguous()
    out = _FusedDecode.apply(planes, prepared.contiguous(), weights, points, viewdirs, config)
    return (None, out) if viewdirs is None else out


def make_fused_field(planes: torch.Tensor, weights: FusedWeights, *,
                     config: LaunchConfig | None = None) -> Field:
    """The field of ``planes [B, 27, R, R]`` through ``fused_decode``, planes prepared once.

    Like ``make_field``'s, but gradients reach only ``planes`` (not the decoder); ``planes`` must not be
    changed in place while the field is used.
    """
    prepared = prepare_planes(planes)

    def field(points: torch.Tensor,
              viewdirs: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        return fused_decode(planes, weights, points, viewdirs, prepared=prepared, config=config)

    return field
