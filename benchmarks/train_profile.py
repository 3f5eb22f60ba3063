"""Where a diffusion training step's GPU time goes at the original size (issue 21), and what its convolutions
can do on their own.

Usage (CUDA; about 1 minute eager, plus about 3 minutes with ``--compiled``; ``--no-convs`` and ``--no-eager``
leave those parts out)::

    python -m benchmarks.train_profile --out /tmp/profile --microbatch 16 --compiled

1. Convolutions alone: forward + backward of each distinct convolution of the synbody UNet (bf16,
   channels_last, cuDNN's autotuner on), in TFLOP/s, next to the same convolution with its tri-plane side
   padded from 27 to 32 channels (tensor-core tiles want multiples of 8).
2. One training step of ``DiffusionTrainer`` (batch = microbatch, bf16, no CUDA graph so that the profiler
   sees every launch) under ``torch.profiler``, eager and, with ``--compiled``, compiled block by block: GPU
   time per kernel category (convolution, GEMM, attention, Triton (Inductor's fused elementwise and
   reductions), other elementwise, optimizer) and the top kernels and aten ops (``profile_*.txt``).
3. With ``--groupnorm``: forward + backward of one compiled top-level ResBlock (encoder C -> C, decoder
   2C -> C) with the UNet's GroupNorm (``F.group_norm``, whose traced output is NCHW) and with the candidate
   ``ChannelsLastGroupNorm`` (written out under compile, so activations stay channels_last): milliseconds
   and peak memory.

Rows go to ``<out>/<date>-<device>-train-profile.{json,md}`` (and ``$OUT`` when set) as they come.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from benchmarks.report import Report
from benchmarks.timing import time_fn
from humanliff.config import Config, load_config
from humanliff.models.unet import GroupNorm32, ResBlock
from humanliff.training.distributed import DistInfo
from humanliff.training.train import DiffusionTrainer

CATEGORIES = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("convolution", re.compile(r"conv|cudnn|xmma|implicit|wgrad|dgrad|fprop|nchwToNhwc|nhwcToNchw", re.I)),
    ("GEMM", re.compile(r"gemm|nvjet|cutlass|sm90_|cublas", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach|lerp|norm_kernel", re.I)),
    ("Triton (Inductor)", re.compile(r"^triton", re.I)),
)
"""Kernel name -> category, first match wins; the rest is "other elementwise and reductions"."""


def category(kernel: str) -> str:
    """The category of a CUDA kernel's name (see ``CATEGORIES``)."""
    return next((name for name, pattern in CATEGORIES if pattern.search(kernel)), "other elementwise and reductions")


def conv_shapes(cfg: Config, micro: int) -> list[tuple[int, int, int, int, bool]]:
    """The distinct 3x3 convolutions of the config's UNet as ``(batch, C_in, C_out, R, needs_input_grad)``:
    the tri-plane convolutions first (in: no input gradient), then a ResBlock's at every level."""
    r, c, mc = cfg.triplane.resolution, cfg.triplane.channels, cfg.unet.model_channels
    shapes = [(micro, c, mc, r, False), (micro, mc, c, r, True)]
    seen = set()
    for level, mult in enumerate(cfg.unet.channel_mult):
        width, res = mc * mult, r >> level
        if (width, res) not in seen:
            seen.add((width, res))
            shapes.append((micro, width, width, res, True))
    return shapes


def _conv_row(rep: Report, b: int, c_in: int, c_out: int, r: int, input_grad: bool, pad_to: int | None) -> None:
    dev = torch.device("cuda")
    ci = pad_to if pad_to and c_in % 8 else c_in
    co = pad_to if pad_to and c_out % 8 else c_out
    x = torch.randn(b, ci, r, r, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    w = torch.randn(co, ci, 3, 3, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w.requires_grad_(True)
    grad = torch.randn(b, co, r, r, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        F.conv2d(x, w, padding=1).backward(grad)

    t = time_fn(step, warmup=3, repeats=10, device=dev)
    flop = 2.0 * b * ci * co * 9 * r * r * (3 if input_grad else 2)
    padded = f", padded to {ci} -> {co}" if (ci, co) != (c_in, c_out) else ""
    rep.add("conv", f"3x3 conv {c_in} -> {c_out} at {r}x{r}, batch {b}, forward + backward{padded}",
            flop / t.median_ms / 1e9, "TFLOP/s",
            note=f"{t.median_ms:.2f} ms; input gradient {'yes' if input_grad else 'no'}")


def bench_convs(rep: Report, cfg: Config, micro: int) -> None:
    """Section 1 (see the module docstring)."""
    for b, c_in, c_out, r, input_grad in conv_shapes(cfg, micro):
        _conv_row(rep, b, c_in, c_out, r, input_grad, None)
        if c_in % 8 or c_out % 8:
            _conv_row(rep, b, c_in, c_out, r, input_grad, 32)


def _kernel_time(event: object) -> float:
    """Self device time of a profiler event in microseconds (the attribute's name moved across versions)."""
    return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))


def profile_step(rep: Report, cfg: Config, micro: int, label: str, out_dirs: list[Path]) -> None:
    """Section 2 for one trainer setting: categories as rows, tables as ``profile_<label>.txt``."""
    dev = torch.device("cuda")
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=dev)
    trainer = DiffusionTrainer(cfg, info)
    shape = (micro, cfg.triplane.channels, cfg.triplane.resolution, cfg.triplane.resolution)
    gen = torch.Generator(dev).manual_seed(0)
    x0 = torch.randn(shape, device=dev, generator=gen).clamp(-1, 1).contiguous(memory_format=torch.channels_last)
    x_cond = torch.randn(shape, device=dev, generator=gen).clamp(-1, 1).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (micro,), device=dev, generator=gen)
    keys = np.arange(micro, dtype=np.int64)
    for _ in range(3):
        trainer.train_step(x0, x_cond, y, keys)
    torch.cuda.synchronize(dev)
    step_ms = time_fn(lambda: trainer.train_step(x0, x_cond, y, keys), warmup=1, repeats=5, device=dev).median_ms
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        trainer.train_step(x0, x_cond, y, keys)
        torch.cuda.synchronize(dev)
    totals: dict[str, float] = defaultdict(float)
    kernels = [e for e in prof.key_averages()  # "## ...": GPU spans of annotations, not kernels
               if e.device_type == torch.autograd.DeviceType.CUDA and not e.key.startswith("##")]
    for e in kernels:
        totals[category(e.key)] += _kernel_time(e)
    gpu_ms = sum(totals.values()) / 1e3
    rep.add("profile", f"{label}: step, batch {micro}", micro / step_ms * 1e3, "samples/s",
            note=f"{step_ms:.1f} ms a step (timed); {gpu_ms:.1f} ms of kernels in the profiled step")
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1]):
        rep.add("profile", f"{label}: {name}", us / 1e3, "ms", note=f"{100 * us / 1e3 / gpu_ms:.1f} % of kernel time")
    top = sorted(kernels, key=_kernel_time, reverse=True)[:40]
    lines = [f"{_kernel_time(e) / 1e3:9.2f} ms {e.count:5d}x  [{category(e.key)}] {e.key[:160]}" for e in top]
    ops = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cuda_time_total", row_limit=40,
                                                             max_name_column_width=60)
    text = f"# {label}: top kernels by GPU time\n" + "\n".join(lines) + "\n\n# aten ops by input shapes\n" + ops
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    for out in out_dirs:
        (out / f"profile_{slug}.txt").write_text(text)


def group_norm_fp32(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float) -> torch.Tensor:
    """``F.group_norm`` of ``x`` ``[B, C, H, W]`` in fp32 written out as views and reductions, so that the
    output keeps ``x``'s memory format when traced (``F.group_norm``'s meta function returns NCHW for a
    channels_last input, so a compiled training step may copy every normed activation back)."""
    b, c = x.shape[:2]
    grouped = x.float().view(b, groups, c // groups, *x.shape[2:])
    centred = grouped - grouped.mean(dim=(2, 3, 4), keepdim=True)
    variance = centred.square().mean(dim=(2, 3, 4), keepdim=True)
    normed = (centred * torch.rsqrt(variance + eps)).view(x.shape)
    return normed * weight.view(-1, 1, 1) + bias.view(-1, 1, 1)


class ChannelsLastGroupNorm(GroupNorm32):
    """The candidate for the UNet's ``GroupNorm32`` (issue 21, not adopted until measured): the written-out
    form under ``torch.compile``, ``F.group_norm`` (one kernel) in eager mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return group_norm_fp32(x, self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)
        return super().forward(x)


def _resblock_row(rep: Report, cfg: Config, micro: int, c_in: int, label: str, norm: type[GroupNorm32]) -> None:
    dev, r, c = torch.device("cuda"), cfg.triplane.resolution, cfg.unet.model_channels
    torch.manual_seed(0)
    block = ResBlock(c_in, 4 * c, 0.0, c, cfg.unet.use_scale_shift_norm)
    block.in_layers[0], block.out_layers[0] = norm(32, c_in), norm(32, c)
    compiled = torch.compile(block.to(dev).to(memory_format=torch.channels_last))
    x = torch.randn(micro, c_in, r, r, device=dev).contiguous(memory_format=torch.channels_last).requires_grad_()
    emb = torch.randn(micro, 4 * c, device=dev)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = compiled(x, emb)
        out.float().square().mean().backward()

    t = time_fn(step, warmup=3, repeats=10, device=dev)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20
    rep.add("groupnorm", f"ResBlock {c_in} -> {c} at {r}^2, batch {micro}, compiled, GroupNorm {label}",
            t.median_ms, "ms", note=f"forward + backward, bf16 autocast, channels_last; peak {peak:.0f} MB")


def bench_groupnorm(rep: Report, cfg: Config, micro: int) -> None:
    """Forward + backward of one compiled ResBlock at the top level (an encoder block C -> C and a decoder
    block 2C -> C), bf16, channels_last, with the UNet's ``GroupNorm32`` and with ``ChannelsLastGroupNorm``:
    what keeping the normed activations channels_last is worth."""
    c = cfg.unet.model_channels
    for c_in in (c, 2 * c):
        for label, norm in (("F.group_norm (the UNet's)", GroupNorm32), ("written out", ChannelsLastGroupNorm)):
            _resblock_row(rep, cfg, micro, c_in, label, norm)
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--config", default="synbody")
    parser.add_argument("--microbatch", type=int, default=16)
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--convs", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--groupnorm", action=argparse.BooleanOptionalAction, default=False,
                        help="compiled ResBlocks with GroupNorm written out against F.group_norm")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: benchmarks.train_profile: needs CUDA")
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    out_dirs = [Path(args.out)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
    rep = Report(torch.cuda.get_device_name(), out_dirs)
    rep.stem = f"{rep.stem}-train-profile"
    cfg = load_config(args.config)
    base = dataclasses.replace(cfg.train, batch_size=args.microbatch, microbatch=args.microbatch, precision="bf16",
                               cuda_graph=False)
    if args.convs:
        bench_convs(rep, cfg, args.microbatch)
    if args.groupnorm:
        bench_groupnorm(rep, cfg, args.microbatch)
    settings = [("eager", dataclasses.replace(base, compile=False))] if args.eager else []
    if args.compiled:
        settings.append(("compiled block by block", dataclasses.replace(base, compile=True, compile_scope="blocks")))
    for label, tc in settings:
        profile_step(rep, dataclasses.replace(cfg, train=tc), args.microbatch, label, out_dirs)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
