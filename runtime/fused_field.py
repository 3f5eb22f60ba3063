"""Fused Triton path: nine-plane feature sampling plus a FusedDecoder-shaped MLP in one kernel.

``fused_decode(planes, weights, points, viewdirs)`` has the contract of
``decode_points(planes, FusedDecoder, points, viewdirs)`` (runtime/field.py), computed in bf16 with fp32
accumulation. The planes are re-laid out once (``prepare_planes``, runtime/fused_planes.py), each point's
36 taps are gathered in registers, the 27 features go straight into ``tl.dot`` layers, the view encoding
is computed in the kernel and only ``rgb_raw`` / ``sigma_raw`` are written (fp32). Kernels:
runtime/fused_kernels.py; weight layout: runtime/fused_weights.py. Measurements: docs/architecture.md.

Gradients flow to ``planes`` and, for trainable weights (``decoder_weights(decoder, trainable=True)``),
to the decoder's parameters: the backward kernel recomputes the forward per block, backpropagates through
the MLP in registers and scatters d(features) with fp32 ``atomic_add`` (non-deterministic summation order);
the weight-gradient variant also forms each matrix's gradient per block (``LaunchConfig.wgrad``). No
gradients w.r.t. points or view directions: use ``decode_points`` / ``make_field(fused=False)`` for those.

Launch configurations keep Triton on ``mma.sync`` (MMAv2): with a multiple of 4 warps, a ``tl.dot`` whose
output has a multiple of 64 rows lowers to Hopper's wgmma in triton 3.6, and that code read shared memory
out of bounds on an H100 (compute-sanitizer: "Invalid __shared__ read of size 512 bytes"), an illegal
memory access in most processes. ``check_config`` refuses such configurations unless ``DISABLE_MMA_V3=1``
is set; the weight-gradient dots have the layer widths as rows, so they need 1 or 2 warps at 64+ wide.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from humanliff.runtime import fused_kernels as kernels
from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.fused_kernels import triton_available
from humanliff.runtime.fused_planes import check_planes, plane_grad_to_nchw, prepare_planes, prepared_shape
from humanliff.runtime.fused_weights import MATRICES, FusedWeights, decoder_weights, fused_weights

if TYPE_CHECKING:
    from humanliff.runtime.field import Field

__all__ = ["FusedWeights", "LaunchConfig", "WGRAD_MODES", "decoder_weights", "default_config", "field_weights",
           "frozen_decoder_weights", "fused_decode", "fused_weights", "is_trainable", "make_fused_field",
           "prepare_planes", "triton_available"]

WGRAD_MODES = ("atomic", "partials")
"""How the weight-gradient backward sums over blocks of points: ``atomic`` (each block's gradient added
atomically into one of ``wgrad_slots`` fp32 copies, summed afterwards) or ``partials`` (each program sums
its blocks in registers and stores one partial; the partials are summed afterwards)."""


class LaunchConfig(NamedTuple):
    """Block sizes and warps of the forward and the backward kernel (BLOCK_M a power of two >= 16), and
    optional register caps per thread (triton's ``maxnreg``: more resident warps, maybe spills).

    The weight-gradient backward (trainable weights) runs with ``bwd_block_m`` / ``bwd_num_warps`` and sums
    per ``wgrad`` (``WGRAD_MODES``): ``wgrad_slots`` copies of the gradient for ``atomic`` (fewer same-address
    conflicts), ``wgrad_blocks`` blocks of points per program for ``partials`` (one partial per program).
    """

    block_m: int = 32
    num_warps: int = 2
    bwd_block_m: int = 32
    bwd_num_warps: int = 2
    maxnreg: int | None = None
    bwd_maxnreg: int | None = None
    wgrad: str = "atomic"
    wgrad_slots: int = 64
    wgrad_blocks: int = 64


def default_config(weights: FusedWeights) -> LaunchConfig:
    """Block sizes for these weights: 32 points on 2 warps (fastest measured for 64-wide layers), one warp
    on 16 points for 128-wide layers (register pressure; not measured)."""
    if max(weights.hidden, weights.color_hidden) > 64:
        return LaunchConfig(block_m=16, num_warps=1, bwd_block_m=16, bwd_num_warps=1)
    return LaunchConfig()


def _uses_wgmma(rows: int, num_warps: int) -> bool:
    """Whether triton lowers a ``tl.dot`` with ``rows`` output rows to Hopper's wgmma (a warp group of 4)."""
    return num_warps % 4 == 0 and rows % 64 == 0


def _check_config(config: LaunchConfig, weights: FusedWeights | None = None) -> None:
    """Raise for a configuration the kernels cannot run, or one that would compile to wgmma (see above).

    With trainable ``weights`` the backward's weight-gradient dots (rows: the layer widths) count too.
    """
    wgmma_off = os.environ.get("DISABLE_MMA_V3", "0").lower() in ("1", "true", "on", "yes")
    wgrad_rows = () if weights is None or not weights.trainable else (
        weights.hidden, weights.color_hidden, weights.out_pad, weights.view_pad)
    launches = ((config.block_m, config.num_warps, ()), (config.bwd_block_m, config.bwd_num_warps, wgrad_rows))
    for block_m, warps, other_rows in launches:
        if block_m < 16 or block_m & (block_m - 1):
            raise HumanLiffError(f"fused field: BLOCK_M {block_m} is not a power of two >= 16")
        if any(_uses_wgmma(rows, warps) for rows in (block_m, *other_rows)) and not wgmma_off:
            what = f"BLOCK_M {block_m}" if _uses_wgmma(block_m, warps) else "the weight-gradient dots"
            raise HumanLiffError(f"fused field: {what} with {warps} warps compiles to wgmma, which faults "
                                 "(illegal memory access) on triton 3.6; use fewer warps or rows, or set "
                                 "DISABLE_MMA_V3=1")
    if config.wgrad not in WGRAD_MODES:
        raise HumanLiffError(f"fused field: wgrad '{config.wgrad}' is not one of {WGRAD_MODES}")
    if config.wgrad_slots < 1 or config.wgrad_blocks < 1:
        raise HumanLiffError(f"fused field: wgrad_slots {config.wgrad_slots} and wgrad_blocks "
                             f"{config.wgrad_blocks} must be >= 1")


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


def _n_blocks(m: int, block_m: int) -> int:
    """Blocks of ``block_m`` points covering ``m``."""
    return -(-m // block_m)


def _launch_forward(prepared: torch.Tensor, weights: FusedWeights, points: torch.Tensor,
                    viewdirs: torch.Tensor | None, config: LaunchConfig
                    ) -> tuple[torch.Tensor | None, torch.Tensor]:
    b, m, _ = points.shape
    r = prepared.shape[2]
    sigma = points.new_empty((b, m, 1), dtype=torch.float32)
    rgb = None if viewdirs is None else points.new_empty((b, m, 3), dtype=torch.float32)
    if m == 0 or b == 0:
        return rgb, sigma
    grid = (_n_blocks(m, config.block_m), b)
    with _on_device(prepared.device):
        kernels._fused_forward_kernel[grid](
            prepared, points, points if viewdirs is None else viewdirs, sigma if rgb is None else rgb, sigma,
            *weights.matrices(), m, r, **_meta(weights, viewdirs is not None, config.block_m),
            **_launch_options(config.num_warps, config.maxnreg),
        )
    return rgb, sigma


def _wgrad_layout(config: LaunchConfig, n_blocks: int, b: int) -> tuple[int, int, int]:
    """``(programs per point set, blocks per program, gradient slots)`` of the weight-gradient launch."""
    if config.wgrad == "atomic":
        return n_blocks, 1, config.wgrad_slots
    per_program = min(config.wgrad_blocks, n_blocks)
    programs = _n_blocks(n_blocks, per_program)
    return programs, per_program, programs * b


def _launch_backward(prepared: torch.Tensor, weights: FusedWeights, points: torch.Tensor,
                     viewdirs: torch.Tensor | None, grad_rgb: torch.Tensor | None,
                     grad_sigma: torch.Tensor, config: LaunchConfig, with_weights: bool
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """fp32 ``[B, 9, R, R, 4]`` gradient of the prepared planes and, with ``with_weights``, fp32 gradients
    of the packed matrices (``MATRICES`` order, their shapes; None otherwise)."""
    b, m, _ = points.shape
    grad = torch.zeros(prepared.shape, dtype=torch.float32, device=prepared.device)
    mats = weights.matrices()
    sizes = [t.numel() for t in mats]
    if m == 0 or b == 0:
        return grad, tuple(torch.zeros_like(t, dtype=torch.float32) for t in mats) if with_weights else None
    with_rgb = viewdirs is not None and grad_rgb is not None
    n_blocks = _n_blocks(m, config.bwd_block_m)
    args = (prepared, points, points if viewdirs is None else viewdirs,
            grad_sigma if grad_rgb is None else grad_rgb, grad_sigma, grad, *mats)
    meta = _meta(weights, with_rgb, config.bwd_block_m)
    options = _launch_options(config.bwd_num_warps, config.bwd_maxnreg)
    with _on_device(prepared.device):
        if not with_weights:
            kernels._fused_backward_kernel[(n_blocks, b)](*args, m, prepared.shape[2], **meta, **options)
            return grad, None
        programs, per_program, slots = _wgrad_layout(config, n_blocks, b)
        partials = torch.zeros((slots, sum(sizes)), dtype=torch.float32, device=prepared.device)
        kernels._fused_backward_wgrad_kernel[(programs, b)](
            *args, *partials[0].split(sizes), m, prepared.shape[2], slots, partials.shape[1], **meta,
            WGRAD=1 if config.wgrad == "partials" else 2, BLOCKS_PER_PROGRAM=per_program, **options)
    total = partials.sum(0) if slots > 1 else partials[0]
    return grad, tuple(g.view(t.shape) for g, t in zip(total.split(sizes), mats, strict=True))


class _FusedDecode(torch.autograd.Function):
    """Differentiable in ``planes`` (argument 0) and, for trainable weights, their sources (arguments 6 on)."""

    @staticmethod
    def forward(ctx: Any, planes: torch.Tensor, prepared: torch.Tensor, weights: FusedWeights,
                points: torch.Tensor, viewdirs: torch.Tensor | None, config: LaunchConfig,
                *sources: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``sigma_raw`` alone without ``viewdirs``, else ``(rgb_raw, sigma_raw)``; ``sources`` are
        ``weights.sources`` (so that autograd asks for their gradients)."""
        rgb, sigma = _launch_forward(prepared, weights, points, viewdirs, config)
        ctx.save_for_backward(prepared, points, viewdirs)
        ctx.weights, ctx.config, ctx.plane_dtype = weights, config, planes.dtype
        return sigma if rgb is None else (rgb, sigma)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """d(loss)/d(planes) ``[B, 27, R, R]`` in the planes' dtype and d(loss)/d(sources) (None for the
        colour network's when rgb_raw has no gradient); None for the other inputs."""
        prepared, points, viewdirs = ctx.saved_tensors
        n_sources = len(ctx.needs_input_grad) - 6
        with_weights = any(ctx.needs_input_grad[6:])
        if not ctx.needs_input_grad[0] and not with_weights:
            return (None,) * (6 + n_sources)
        grad_rgb, grad_sigma = grads if len(grads) == 2 else (None, grads[0])
        if grad_sigma is None:
            grad_sigma = points.new_zeros(points.shape[:2] + (1,), dtype=torch.float32)
        grad_sigma = grad_sigma.float().contiguous()
        grad_rgb = None if grad_rgb is None else grad_rgb.float().contiguous()
        grad, grad_mats = _launch_backward(prepared, ctx.weights, points, viewdirs, grad_rgb, grad_sigma,
                                           ctx.config, with_weights)
        grad_planes = plane_grad_to_nchw(grad, ctx.plane_dtype) if ctx.needs_input_grad[0] else None
        if grad_mats is None:
            return (grad_planes,) + (None,) * (5 + n_sources)
        if viewdirs is None or grad_rgb is None:  # the colour network had no part in the loss
            grad_mats = [None if name.startswith("c_") else g for name, g in zip(MATRICES, grad_mats, strict=True)]
        return (grad_planes, None, None, None, None, None, *ctx.weights.source_grads(grad_mats))


def fused_decode(planes: torch.Tensor, weights: FusedWeights, points: torch.Tensor,
                 viewdirs: torch.Tensor | None, *, prepared: torch.Tensor | None = None,
                 config: LaunchConfig | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Sample nine-plane features and decode them with the fused kernel.

    Args:
        planes: ``[B, 27, R, R]`` tri-planes (any float dtype); the gradient flows here.
        weights: ``fused_weights(...)`` / ``decoder_weights(decoder)``, on the planes' device; trainable
            weights also get gradients (through them, the decoder's parameters).
        points: ``[B, M, 3]`` in [-1, 1] (outside: zero padding). No gradient w.r.t. points.
        viewdirs: ``[B, M, 3]`` (normalized in the kernel) or None for density only. No gradient.
        prepared: ``prepare_planes(planes)`` when the caller keeps it across calls (it must be current).
        config: block sizes and warps of the kernels (``default_config(weights)`` when None).

    Returns:
        ``(rgb_raw [B, M, 3] or None, sigma_raw [B, M, 1])``, float32, as ``decode_points`` with the
        FusedDecoder these weights came from (bf16 accuracy).
    """
    if not triton_available():
        raise HumanLiffError("fused field: needs triton and a CUDA device (or TRITON_INTERPRET=1)")
    config = default_config(weights) if config is None else config
    _check_config(config, weights)
    check_planes(planes)
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
    elif prepared.shape != prepared_shape(planes):
        raise HumanLiffError(f"fused field: prepared planes {tuple(prepared.shape)} do not match planes "
                             f"{tuple(planes.shape)}")
    points = points.detach().float().contiguous()
    viewdirs = None if viewdirs is None else viewdirs.detach().float().contiguous()
    out = _FusedDecode.apply(planes, prepared.contiguous(), weights, points, viewdirs, config, *weights.sources)
    return (None, out) if viewdirs is None else out


def make_fused_field(planes: torch.Tensor, weights: FusedWeights, *,
                     config: LaunchConfig | None = None) -> Field:
    """The field of ``planes [B, 27, R, R]`` through ``fused_decode``, planes prepared once.

    Like ``make_field``'s; gradients reach ``planes`` and, for trainable ``weights``, the decoder's
    parameters. Neither ``planes`` nor the decoder may change in place while the field is used.
    """
    prepared = prepare_planes(planes)

    def field(points: torch.Tensor,
              viewdirs: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        return fused_decode(planes, weights, points, viewdirs, prepared=prepared, config=config)

    return field


def is_trainable(decoder: Any) -> bool:
    """Whether ``decoder`` is a module with a parameter that requires grad."""
    return isinstance(decoder, torch.nn.Module) and any(p.requires_grad for p in decoder.parameters())


def field_weights(decoder: Any, device: torch.device) -> FusedWeights | None:
    """``decoder_weights(decoder)`` on ``device`` when the fused kernel can stand in for ``decode_points``
    there: triton on a CUDA device and a FusedDecoder (torch backend). Trainable (gradients to the
    decoder) when any parameter requires grad, else frozen bf16 copies. None otherwise (a CPU device, no
    triton, a SeedDecoder or tiny-cuda-nn decoder)."""
    if device.type != "cuda" or not triton_available():
        return None
    try:
        return decoder_weights(decoder, trainable=is_trainable(decoder)).to(device)
    except HumanLiffError:
        return None


def frozen_decoder_weights(decoder: Any, device: torch.device) -> FusedWeights | None:
    """``field_weights(decoder, device)`` for a decoder whose parameters are all frozen, else None."""
    return None if is_trainable(decoder) else field_weights(decoder, device)
