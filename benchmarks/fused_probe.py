"""Probe: the fused Triton field (runtime/fused_field.py) against the torch.compile bf16 path.

Usage: ``python -m benchmarks.fused_probe [--res 256] [--sets 8] [--points 4194304] [--repeats 10] [--skip-torch]
[--coherent] [--skip-variants]``. Needs CUDA. Prints M points/s (median of ``--repeats`` timed runs after
warm-up, CUDA-synchronized) of forward (no grad) and forward+backward (planes require grad, decoder
frozen) for (a) ``make_field(..., precision="bf16", compile=True)`` and (b) ``fused_decode``, the
errors between them (and against fp32 eager), and the timings of a few BLOCK_M / num_warps variants.
Every measurement catches and prints its own exception, so one failing variant does not end the run.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.timing import time_fn
from humanliff.models.decoder import FusedDecoder
from humanliff.runtime import fused_field as ff
from humanliff.runtime.field import decode_points, make_field

FWD_VARIANTS = ((64, 4, None), (64, 8, None), (128, 4, None), (128, 4, 128), (128, 8, None), (256, 8, None),
                (256, 8, 128))
"""(BLOCK_M, num_warps, maxnreg) of the forward kernel."""
BWD_VARIANTS = ((32, 4, None), (32, 2, None), (64, 4, None), (64, 4, 168), (64, 8, None), (128, 8, None))
"""(BLOCK_M, num_warps, maxnreg) of the backward kernel."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(n_points: int, fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    """M points/s of ``fn`` (median of ``repeats`` timed calls after ``warmup`` calls, synchronized)."""
    timing = time_fn(fn, warmup=warmup, repeats=repeats, device=device)
    return n_points / timing.median_ms / 1e3


def _attempt(label: str, fn: Callable[[], str], device: torch.device) -> None:
    """Run one measurement and print its line, or its exception."""
    try:
        print(f"{label:<52s} {fn()}", flush=True)
        _sync(device)
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure and goes on
        print(f"{label:<52s} FAILED: {type(exc).__name__}: {str(exc)[:800]}", flush=True)
        traceback.print_exc(limit=3)
        try:
            _sync(device)
        except Exception as sync_exc:  # noqa: BLE001 - e.g. a sticky CUDA error after an illegal access
            print(f"    (synchronize failed too: {sync_exc}; later CUDA measurements will fail)", flush=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> str:
    """Max-abs relative error (max |a - b| / max |b|) and norm relative error."""
    a, b = a.float(), b.float()
    max_rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    norm_rel = ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
    return f"max-rel {max_rel:.2e}  norm-rel {norm_rel:.2e}"


def make_inputs(res: int, sets: int, n_points: int, coherent: bool, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """planes ``[sets, 27, R, R]``, points and unit viewdirs ``[sets, n_points // sets, 3]``."""
    gen = torch.Generator(device=device).manual_seed(0)
    per_set = n_points // sets
    planes = (torch.rand(sets, 27, res, res, device=device, generator=gen) * 2 - 1) * 0.5
    if not coherent:
        points = torch.rand(sets, per_set, 3, device=device, generator=gen) * 2 - 1
        dirs = F.normalize(torch.randn(sets, per_set, 3, device=device, generator=gen), dim=-1)
        return planes, points, dirs
    steps = 128  # points along rays, as a renderer samples them
    rays = per_set // steps
    origin = torch.rand(sets, rays, 1, 3, device=device, generator=gen) * 2 - 1
    d = F.normalize(torch.randn(sets, rays, 1, 3, device=device, generator=gen), dim=-1)
    t = torch.linspace(0, 0.5, steps, device=device)[None, None, :, None]
    points = (origin + d * t).reshape(sets, -1, 3).clamp(-1, 1).contiguous()
    dirs = d.expand(-1, -1, steps, -1).reshape(sets, -1, 3).contiguous()
    return planes, points, dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--points", type=int, default=1 << 22)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--coherent", action="store_true", help="points along rays instead of uniform")
    parser.add_argument("--skip-variants", action="store_true", help="only the default launch config")
    parser.add_argument("--skip-torch", action="store_true",
                        help="no torch.compile path: the fused kernel alone in a fresh process (where it faulted)")
    parser.add_argument("--device", default="cuda",
                        help="cuda; 'cpu' only as a smoke test of this script (TRITON_INTERPRET=1, tiny sizes)")
    args = parser.parse_args()
    dev = torch.device(args.device)
    if (dev.type == "cuda" and not torch.cuda.is_available()) or not ff.triton_available():
        print("fused_probe needs CUDA and triton (or --device cpu with TRITON_INTERPRET=1); nothing to measure")
        return
    import triton

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (interpreter smoke test)"
    print(f"device {name}  torch {torch.__version__}  triton {triton.__version__}")
    planes, points, dirs = make_inputs(args.res, args.sets, args.points, args.coherent, dev)
    n = points.shape[0] * points.shape[1]
    print(f"R={args.res} sets={args.sets} points={n} ({'ray-coherent' if args.coherent else 'uniform random'})")
    dec = FusedDecoder().to(dev).requires_grad_(False)
    weights = ff.decoder_weights(dec)
    config = ff.default_config(weights)
    print(f"default launch config {config}")
    rep, warm = args.repeats, args.warmup
    out: dict[str, object] = {}

    # ---- (a) torch.compile bf16 path
    field = make_field(planes, dec, precision="bf16", compile=True)
    grad_planes_a = planes.clone().requires_grad_(True)
    field_grad = make_field(grad_planes_a, dec, precision="bf16", compile=True)

    def torch_fwd() -> str:
        with torch.no_grad():
            out["a"] = field(points, dirs)
            return f"{_rate(n, lambda: field(points, dirs), warm, rep, dev):8.1f} M points/s"

    def torch_fb() -> str:
        def step() -> None:
            grad_planes_a.grad = None
            rgb, sigma = field_grad(points, dirs)
            (rgb.sum() + sigma.sum()).backward()
        rate = _rate(n, step, warm, rep, dev)
        out["grad_a"] = grad_planes_a.grad.clone()
        return f"{rate:8.1f} M points/s"

    if not args.skip_torch:
        print("--- (a) make_field(precision='bf16', compile=True)")
        _attempt("(a) forward, no grad", torch_fwd, dev)
        _attempt("(a) forward+backward (planes only)", torch_fb, dev)

    # ---- (b) fused Triton path
    prepared = ff.prepare_planes(planes)
    grad_planes_b = planes.clone().requires_grad_(True)

    def fused_fwd(cfg: ff.LaunchConfig, with_dirs: bool = True, prep: torch.Tensor | None = prepared) -> str:
        d = dirs if with_dirs else None
        with torch.no_grad():
            out["b" if with_dirs else "b_density"] = ff.fused_decode(planes, weights, points, d, prepared=prep,
                                                                     config=cfg)
            rate = _rate(n, lambda: ff.fused_decode(planes, weights, points, d, prepared=prep, config=cfg),
                         warm, rep, dev)
        return f"{rate:8.1f} M points/s"

    def fused_fb(cfg: ff.LaunchConfig) -> str:
        def step() -> None:
            grad_planes_b.grad = None
            rgb, sigma = ff.fused_decode(grad_planes_b, weights, points, dirs, config=cfg)  # prepares each step
            (rgb.sum() + sigma.sum()).backward()
        rate = _rate(n, step, warm, rep, dev)
        out["grad_b"] = grad_planes_b.grad.clone()
        return f"{rate:8.1f} M points/s"

    def prepare_time() -> str:
        timing = time_fn(lambda: ff.prepare_planes(planes), warmup=warm, repeats=rep, device=dev)
        return f"{timing.median_ms * 1e3:8.1f} us"

    def first_call() -> str:
        t0 = time.perf_counter()
        ff.fused_decode(planes, weights, points[:, :1024], dirs[:, :1024], config=config)
        _sync(dev)
        return f"{time.perf_counter() - t0:8.2f} s"

    print("--- (b) fused_decode (Triton)")
    _attempt("(b) first call (kernel compile)", first_call, dev)
    _attempt("(b) prepare_planes", prepare_time, dev)
    _attempt("(b) forward, no grad, planes prepared once", lambda: fused_fwd(config), dev)
    _attempt("(b) forward incl. prepare_planes", lambda: fused_fwd(config, prep=None), dev)
    _attempt("(b) forward density only (viewdirs None)", lambda: fused_fwd(config, with_dirs=False), dev)
    _attempt("(b) forward+backward incl. prepare", lambda: fused_fb(config), dev)

    # ---- accuracy
    print("--- errors")

    def errors(name: str, a: object, b: object) -> None:
        if a is None or b is None:
            print(f"{name:<52s} n/a (a measurement failed)")
            return
        print(f"{name:<52s} {_rel(b, a)}")

    a, b = out.get("a"), out.get("b")
    errors("rgb_raw   fused vs compile-bf16", None if a is None else a[0], None if b is None else b[0])
    errors("sigma_raw fused vs compile-bf16", None if a is None else a[1], None if b is None else b[1])
    errors("d planes  fused vs compile-bf16", out.get("grad_a"), out.get("grad_b"))

    def fp32_reference() -> str:
        with torch.no_grad():
            rgb32, sigma32 = decode_points(planes, dec, points, dirs)
        lines = []
        for key, label in (("a", "compile-bf16"), ("b", "fused")):
            if key in out:
                rgb, sigma = out[key]
                lines.append(f"{label}: rgb {_rel(rgb, rgb32)}; sigma {_rel(sigma, sigma32)}")
        if "b_density" in out:
            lines.append(f"fused density-only: sigma {_rel(out['b_density'][1], sigma32)}")
        return "\n    " + "\n    ".join(lines)

    _attempt("vs fp32 eager decode_points", fp32_reference, dev)

    if args.skip_variants:
        return
    print("--- launch variants (BLOCK_M, num_warps, maxnreg)")
    for bm, warps, regs in FWD_VARIANTS:
        cfg = config._replace(block_m=bm, num_warps=warps, maxnreg=regs)
        _attempt(f"(b) forward {bm}, {warps}, {regs}", lambda cfg=cfg: fused_fwd(cfg), dev)
    for bm, warps, regs in BWD_VARIANTS:
        cfg = config._replace(bwd_block_m=bm, bwd_num_warps=warps, bwd_maxnreg=regs)
        _attempt(f"(b) fwd+bwd, backward {bm}, {warps}, {regs}", lambda cfg=cfg: fused_fb(cfg), dev)


if __name__ == "__main__":
    main()
