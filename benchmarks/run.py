"""``make benchmark``: the original-equivalent paths and ours, measured in one process on one device.

Usage: ``python -m benchmarks.run [--sections points,fit,render,unet,sampling,train,runtime] [--quick]``.
On a machine without CUDA it runs a small CPU variant and says so in its first line. Results go to
``benchmarks/results/<date>-<device>.json`` and ``.md`` (and to ``$OUT`` when set), rewritten after
every measurement so that a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from benchmarks.original import (
    OriginalFitStep,
    original_points,
    use_einsum_attention,
)
from benchmarks.report import Report
from benchmarks.timing import time_fn
from benchmarks.train_speed import bench_train
from humanliff.config import Config, load_config
from humanliff.models.decoder import FusedDecoder, SeedDecoder, build_decoder
from humanliff.models.inference import inference_unet
from humanliff.models.unet import build_unet
from humanliff.runtime.compute import default_device
from humanliff.runtime.field import decode_points, make_field
from humanliff.runtime.formats.aoti_compiler import DEFAULT_TUNING
from humanliff.runtime.fused_field import (
    WGRAD_MODES,
    decoder_weights,
    default_config,
    frozen_decoder_weights,
    make_fused_field,
    triton_available,
)
from humanliff.runtime.layered import human_generators, sample_layers
from humanliff.runtime.schedule import linear_schedule

if TYPE_CHECKING:
    from humanliff.data.types import SubjectData
    from humanliff.store import TriplaneStore
    from humanliff.training.fit_a import StageAFitter
    from humanliff.training.fit_step import PlaneTargets

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("points", "fit", "render", "unet", "sampling", "train", "runtime")
log = logging.getLogger("benchmark")


@dataclasses.dataclass
class Setup:
    """Sizes of one benchmark run: the original's on a GPU, small ones on the CPU."""

    device: torch.device
    resolution: int
    points: int
    image_views: int
    image_size: int
    fit_iterations: int
    unet_batches: tuple[int, ...]
    cfg: Config
    repeats: int
    curve_steps: int
    """Steps of the train section's loss-curve comparison."""
    train_budget_s: float
    """Seconds by which the train section's optional rows must end (each estimated by the one before)."""
    train_rows: str = "all"
    """``microbatch``: on CUDA the train section measures only the original step and the block-compiled
    rows at each microbatch (no whole-UNet compile, no loss curves)."""
    train_microbatches: str = "8,16,2,32"
    """The block-compiled rows' microbatches, in order (on CUDA; batch: the larger of 8 and each)."""


def make_setup(quick: bool) -> Setup:
    cuda = torch.cuda.is_available() and not quick
    cfg = load_config("synbody") if cuda else load_config("tiny")
    device = default_device()
    if cuda:
        return Setup(device, 256, 1 << 22, 32, 256, 2000, (1, 16), cfg, 10, 2000, 450.0)
    return Setup(device, cfg.triplane.resolution, 1 << 14, 8, 32, 5, (1, 2), cfg, 3, 4, 600.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, synchronized."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


# --- points: nine-plane sampling + decoder -----------------------------------------------------------


def bench_points(rep: Report, s: Setup) -> None:
    dev, n_planes = s.device, 8
    planes = (torch.rand(n_planes, 27, s.resolution, s.resolution, device=dev) * 2 - 1) * 0.5
    pts = torch.rand(n_planes, s.points // n_planes, 3, device=dev) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn_like(pts), dim=-1)
    seed = SeedDecoder().to(dev)
    fused = FusedDecoder().to(dev)
    precision = "bf16" if dev.type == "cuda" else "fp32"

    def fwd(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn(pts, dirs)
        return run

    def fwd_bwd(fn: Callable) -> Callable[[], object]:
        def run() -> None:
            rgb, sigma = fn(pts, dirs)
            (rgb.float().sum() + sigma.float().sum()).backward()
        return run

    grad_planes = planes.clone().requires_grad_(True)
    original = {"forward": lambda p, d: original_points(planes, seed, p, d),
                "forward+backward": lambda p, d: original_points(grad_planes, seed, p, d)}
    ours = {
        "seed decoder, fp32 eager": (lambda p, d: decode_points(planes, seed, p, d),
                                     lambda p, d: decode_points(grad_planes, seed, p, d)),
        f"fused decoder, {precision} compiled": (make_field(planes, fused, precision=precision, compile=True),
                                                 make_field(grad_planes, fused, precision=precision,
                                                            compile=True)),
    }
    if dev.type == "cuda" and triton_available():
        frozen = FusedDecoder().to(dev).requires_grad_(False)
        ours["fused decoder, bf16 fused Triton kernel (decoder frozen: backward into the planes only)"] = (
            make_field(planes, frozen, precision="bf16", require_fused=True),
            make_field(grad_planes, frozen, precision="bf16", require_fused=True))
        # the trainable decoder's forward is the frozen one's kernel: only forward+backward is new
        for wgrad in WGRAD_MODES:
            weights = decoder_weights(fused, trainable=True)
            config = default_config(weights)._replace(wgrad=wgrad)
            ours[f"fused decoder, bf16 fused Triton kernel with decoder gradients ({wgrad})"] = (
                None, make_fused_field(grad_planes, weights, config=config))
    base = {}
    for kind, wrap in (("forward", fwd), ("forward+backward", fwd_bwd)):
        t = time_fn(wrap(original[kind]), repeats=s.repeats, device=dev)
        base[kind] = s.points / t.median_ms / 1e3
        rep.add("points", f"original path, {kind}", base[kind], "M points/s",
                note=f"{s.points} points, R={s.resolution}, fp32 eager")
    for name, (fwd_fn, bwd_fn) in ours.items():
        for kind, wrap, fn in (("forward", fwd, fwd_fn), ("forward+backward", fwd_bwd, bwd_fn)):
            if fn is None:
                continue
            t = time_fn(wrap(fn), repeats=s.repeats, device=dev)
            rep.add("points", f"{name}, {kind}", s.points / t.median_ms / 1e3, "M points/s", base[kind])


# --- stage B fitting and rendering -------------------------------------------------------------------


def _fit_data(s: Setup, workdir: Path) -> Path:
    from humanliff.data.synth import synthesize_dataset

    return synthesize_dataset(workdir / "data", subjects=8, views=s.image_views, resolution=s.image_size,
                              seed=0)


def _default_store() -> TriplaneStore:
    """The default model's tri-plane store (its decoder and first subjects)."""
    from humanliff.pretrained import default_model
    from humanliff.store import open_store

    return open_store(default_model()[1])


def _default_decoder(dev: torch.device) -> tuple[torch.nn.Module, str]:
    """The default model's stage-A decoder when installed, else a fresh one (timing is the same)."""
    try:
        return _default_store().load_decoder(dev), "the default model's decoder"
    except Exception as exc:  # noqa: BLE001 - any failure falls back to a fresh decoder
        log.info("default store unavailable (%s); fresh fused decoder", exc)
        return FusedDecoder().to(dev), "fresh fused decoder"


def bench_fit(rep: Report, s: Setup, workdir: Path) -> dict:
    """Stage-B iterations at the original settings: ours (1 and 8 subjects at once) vs the original step."""
    from humanliff.data.loader import load_dataset, split_views
    from humanliff.training.fit_b import StageBFitter
    from humanliff.training.fit_step import draw_rays, plane_targets

    dev = s.device
    cfg = dataclasses.replace(s.cfg, data=dataclasses.replace(s.cfg.data, root=str(_fit_data(s, workdir)),
                                                              image_scaling=1.0, max_subjects=0))
    cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, precision="bf16" if dev.type == "cuda"
                                                           else "fp32"))
    subjects = load_dataset(cfg.data, progress=False)
    train_views, _ = split_views(len(subjects[0].view_ids), cfg.data.holdout_every)
    decoder, decoder_note = _default_decoder(dev)
    decoder = decoder.to(dev)
    init = torch.zeros(1, 27, s.resolution, s.resolution, device=dev)
    per_step = {}
    fitted = {}
    for count in (1, 8):
        targets = plane_targets(subjects[:count], [0] * count, train_views, dev, cfg.data)
        fitter = StageBFitter(cfg, decoder, targets, init.expand(count, -1, -1, -1))
        t = time_fn(fitter.step, warmup=3, repeats=s.repeats * 2, device=dev)
        per_step[count] = t.median_ms
        rep.add("fit", f"stage-B iteration, {count} subject(s) at once", t.median_ms, "ms",
                note=f"{cfg.fit.batch_images} images x {cfg.fit.rays_per_image} rays per subject, "
                     f"{cfg.render.n_samples}+{cfg.render.n_importance} samples, peak {t.peak_mb:.0f} MB")
        if count == 1:
            fitted["targets"] = targets
    targets = fitted["targets"]
    gen = torch.Generator(dev).manual_seed(0)
    rays = draw_rays(targets, torch.zeros(1, dtype=torch.long, device=dev), cfg.fit.batch_images,
                     cfg.fit.rays_per_image, cfg.fit.foreground_fraction, gen)
    seed_dec = SeedDecoder().to(dev)
    for anomaly in (False, True):
        step = OriginalFitStep(cfg, seed_dec, init, anomaly=anomaly)
        t = time_fn(lambda step=step: step.step(rays, targets.bounds), warmup=2,
                    repeats=3 if anomaly else s.repeats, device=dev)
        label = "with anomaly mode (as shipped)" if anomaly else "without anomaly mode"
        rep.add("fit", f"original stage-B iteration, 1 subject, {label}", t.median_ms, "ms",
                note="fp32, dense Adam, coarse pass evaluated twice")
        if not anomaly:
            original_ms = t.median_ms
    iterations = 4 * cfg.fit.iterations_b
    rep.add("fit", "stage B, one subject's 4 layers (2000 it/layer), estimated", per_step[1] * iterations / 6e4,
            "min", original_ms * iterations / 6e4, note="iterations x measured iteration time")
    rep.add("fit", "stage B throughput, 8 subjects at once", 8 * 3.6e6 / (per_step[8] * iterations),
            "subjects/hour", 3.6e6 / (original_ms * iterations))
    # Fit one layer of one subject for real, for the render benchmark and as a check of the estimate.
    fitter = StageBFitter(cfg, decoder, targets, init)
    wall = _wall(lambda: [fitter.step() for _ in range(s.fit_iterations)], dev)
    rep.add("fit", f"stage B, one subject, one layer, {s.fit_iterations} iterations, measured", wall, "s",
            note=decoder_note)
    bench_fit_a(rep, s, cfg, subjects, train_views)
    return {"planes": fitter.planes.detach(), "decoder": decoder, "bounds": targets.bounds[0], "cfg": cfg}


class _OriginalStageAStep(OriginalFitStep):
    """The original's iteration with its decoder trained as well (stage A): one Adam over planes and decoder."""

    def __init__(self, cfg: Config, decoder: torch.nn.Module, planes: torch.Tensor) -> None:
        super().__init__(cfg, decoder, planes, anomaly=False)
        self.optimizer.add_param_group({"params": list(self.decoder.requires_grad_(True).parameters()),
                                        "lr": cfg.fit.lr_decoder})


def _stage_a_fitter(cfg: Config, targets: PlaneTargets, fused: bool) -> StageAFitter:
    """A one-rank stage-A fitter over every plane of ``targets`` with a fresh default FusedDecoder: the fused
    kernel (``render.fused_kernel``) or the torch path (compiled as ``fit.compile``)."""
    from humanliff.training.fit_a import StageAFitter, StageAState, decoder_optimizer
    from humanliff.training.fit_step import RenderLoss
    from humanliff.training.sparse_adam import RowAdam

    cfg = dataclasses.replace(cfg, decoder=load_config(None).decoder,
                              render=dataclasses.replace(cfg.render, fused_kernel=fused))
    dev = targets.images.device
    torch.manual_seed(0)
    decoder = build_decoder(cfg.decoder).to(dev)
    optimizer = decoder_optimizer(decoder, cfg)
    res = cfg.triplane.resolution
    table = RowAdam(torch.randn(len(targets), 27, res, res, device=dev) * cfg.fit.init_std)
    state = StageAState([], [], table, decoder, optimizer, torch.Generator(dev).manual_seed(0))
    return StageAFitter(state, RenderLoss(decoder, cfg), targets, cfg)


def bench_fit_a(rep: Report, s: Setup, cfg: Config, subjects: list[SubjectData], train_views: object) -> None:
    """Stage-A iterations (decoder and planes trained; 8 planes, one image of 2048 rays each): the original
    step, ours with the fused kernel (decoder gradients in the kernel) and ours on the compiled torch path."""
    from humanliff.training.fit_step import draw_rays, plane_targets

    dev = s.device
    cfg = dataclasses.replace(cfg, triplane=dataclasses.replace(cfg.triplane, resolution=s.resolution))
    slices = [subj for subj in subjects[:2] for _ in range(4)]
    targets = plane_targets(slices, [0, 1, 2, 3] * 2, train_views, dev, cfg.data)
    rows = torch.arange(len(targets), device=dev)
    rays = draw_rays(targets, rows, 1, cfg.fit.rays_per_image, cfg.fit.foreground_fraction,
                     torch.Generator(dev).manual_seed(0))
    init = torch.randn(len(targets), 27, s.resolution, s.resolution, device=dev) * cfg.fit.init_std
    original = _OriginalStageAStep(cfg, SeedDecoder().to(dev), init)
    t = time_fn(lambda: original.step(rays, targets.bounds), warmup=2, repeats=s.repeats, device=dev)
    original_ms = t.median_ms
    note = f"{len(targets)} planes x 1 image x {cfg.fit.rays_per_image} rays, {cfg.render.n_samples}+" \
           f"{cfg.render.n_importance} samples"
    rep.add("fit", "original stage-A iteration (decoder trained), without anomaly mode", original_ms, "ms",
            note=f"{note}; fp32, dense Adam over the planes and the seed decoder")
    kernel = dev.type == "cuda" and triton_available()
    cuda = dev.type == "cuda"
    variants = [(True, False, True), (True, False, False), (False, True, True), (False, True, False)] if cuda \
        else [(True, False, False), (False, False, False)]
    for fused, compile_, graph in variants:
        fit_cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, compile=compile_, cuda_graph=graph))
        fitter = _stage_a_fitter(fit_cfg, targets, fused)
        t = time_fn(fitter.step, warmup=3, repeats=s.repeats * 2, device=dev)
        torch_path = f"{fit_cfg.fit.precision if cuda else 'fp32'} torch path{', compiled' if compile_ else ''}"
        path = "bf16 fused Triton kernel, decoder gradients in the kernel" if kernel else torch_path
        label = f"render.fused_kernel on: {path}" if fused else f"render.fused_kernel off: {torch_path}"
        if cuda:
            label += ", step as a CUDA graph (fit.cuda_graph)" if graph else ", eager step (fit.cuda_graph=false)"
        rep.add("fit", f"stage-A iteration, {label}", t.median_ms, "ms", original_ms,
                note=f"{note}; fused decoder, RowAdam planes; peak {t.peak_mb:.0f} MB")
        if cuda and os.environ.get("HUMANLIFF_BENCH_PROFILE") and not graph:
            _profile_steps(fitter.step, label)


def _profile_steps(step: Callable[[], object], label: str, steps: int = 5) -> None:
    """Print where ``steps`` calls of ``step`` spend GPU time (torch.profiler's kernel table) and how much of
    the wall time the GPU is busy (``HUMANLIFF_BENCH_PROFILE=1``: for finding what to speed up)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / steps * 1e3
    events = prof.key_averages()
    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / steps / 1e3
    print(f"[profile] {label}: {wall:.2f} ms a step (profiled), GPU busy {busy:.2f} ms a step", flush=True)
    print(events.table(sort_by="self_device_time_total", row_limit=30), flush=True)


def _default_fitted(s: Setup) -> dict:
    """The default model's first subject, outer layer, in place of a fitted plane when ``fit`` is not run."""
    store = _default_store()
    planes = torch.from_numpy(store.planes[0, -1].astype("float32"))[None].to(s.device)
    return {"planes": planes, "decoder": store.load_decoder(s.device), "bounds": store.subject_bounds(0),
            "cfg": s.cfg}


def bench_render(rep: Report, s: Setup, fitted: dict) -> None:
    from humanliff.runtime.cameras import orbit_cameras
    from humanliff.runtime.occupancy import build_occupancy
    from humanliff.runtime.render import render_image

    dev, cfg = s.device, fitted["cfg"]
    size = 512 if dev.type == "cuda" else 32
    planes, decoder, bounds = fitted["planes"], fitted["decoder"], fitted["bounds"]
    K, R, T = (x[0].to(dev) for x in orbit_cameras(bounds.cpu(), 1, size))
    precision = "bf16" if dev.type == "cuda" else "fp32"
    eval_cfg = dataclasses.replace(cfg.render, chunk=size * size)
    fused = precision == "bf16" and frozen_decoder_weights(decoder, dev) is not None
    field = make_field(planes, decoder, precision=precision, compile=not fused, fused=fused)
    kind = f"{precision} {'fused Triton kernel' if fused else 'compiled'}"
    occupancy = build_occupancy(field, cfg.render.occupancy_resolution, cfg.render.occupancy_threshold,
                                device=dev)
    frac = occupancy.float().mean().item()
    original_field = make_field(planes, SeedDecoder().to(dev))
    t_orig = time_fn(lambda: render_image(original_field, K, R, T, size, size, bounds, cfg.render),
                     warmup=1, repeats=3, device=dev)
    rep.add("render", f"{size}x{size} view, original point path (fp32 eager, 128+128)", t_orig.median_ms, "ms")
    t_full = time_fn(lambda: render_image(field, K, R, T, size, size, bounds, eval_cfg), repeats=s.repeats,
                     device=dev)
    rep.add("render", f"{size}x{size} view, ours, no occupancy grid", t_full.median_ms, "ms", t_orig.median_ms,
            note=f"{kind}, R={planes.shape[-1]}")
    t_occ = time_fn(lambda: render_image(field, K, R, T, size, size, bounds, eval_cfg, occupancy=occupancy),
                    repeats=s.repeats, device=dev)
    rep.add("render", f"{size}x{size} view, ours, occupancy grid", t_occ.median_ms, "ms", t_orig.median_ms,
            note=f"{kind}, {cfg.render.occupancy_resolution}^3 grid, {100 * frac:.1f}% cells occupied")


# --- UNet, samplers, training ----------------------------------------------------------------------


def _unet(s: Setup) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = build_unet(s.cfg.unet, s.resolution, s.cfg.triplane.channels).to(s.device)
    # Zero-initialized output convs would make every output zero: give all weights random values.
    with torch.no_grad():
        for p in unet.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0, 0.02)
    return unet


def _unet_inputs(s: Setup, batch: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(s.device).manual_seed(batch)
    x = torch.randn(batch, 27, s.resolution, s.resolution, device=s.device, generator=g)
    x_cond = torch.randn(x.shape, device=s.device, generator=g).clamp(-1, 1)
    t = torch.randint(0, 1000, (batch,), device=s.device, generator=g)
    y = torch.randint(0, 4, (batch,), device=s.device, generator=g)
    return x, t, x_cond, y


def bench_unet(rep: Report, s: Setup) -> dict:
    """One UNet evaluation: the original fp32 eager einsum path vs ours (bf16, compiled, two-stream CUDA graph)."""
    dev = s.device
    unet = _unet(s)
    n_params = sum(p.numel() for p in unet.parameters())
    original = use_einsum_attention(_unet(s).eval())
    baseline = {}
    for batch in s.unet_batches[:2]:
        inputs = _unet_inputs(s, batch)
        with torch.no_grad():
            t = time_fn(lambda inputs=inputs: original(*inputs), repeats=s.repeats, device=dev)
        baseline[batch] = t.median_ms
        rep.add("unet", f"original, fp32 eager einsum, batch {batch}", t.median_ms, "ms",
                note=f"{n_params / 1e6:.1f} M parameters, peak {t.peak_mb:.0f} MB")
    original = None
    precision = "bf16" if dev.type == "cuda" else "fp32"
    eager = inference_unet(unet, precision=precision)
    compiled = inference_unet(unet, precision=precision, compile=dev.type == "cuda")
    fns = {}
    for batch in s.unet_batches:
        inputs = _unet_inputs(s, batch)
        t = time_fn(lambda inputs=inputs: eager(*inputs), repeats=s.repeats, device=dev)
        rep.add("unet", f"ours, {precision} eager SDPA channels_last, batch {batch}", t.median_ms, "ms",
                baseline.get(batch))
        start = time.perf_counter()
        compiled(*inputs)
        _sync(dev)
        compile_s = time.perf_counter() - start
        t = time_fn(lambda inputs=inputs: compiled(*inputs), repeats=s.repeats, device=dev)
        rep.add("unet", f"ours, {precision} compiled, two-stream CUDA graph, batch {batch}", t.median_ms, "ms",
                baseline.get(batch), note=f"first call (compile) {compile_s:.0f} s, peak {t.peak_mb:.0f} MB")
        rep.add("unet", f"ours, per human, batch {batch}", t.median_ms / batch, "ms",
                baseline.get(1))
        fns[batch] = t.median_ms
    with torch.no_grad():
        ref = unet.float()(*_unet_inputs(s, 1))
        rel = ((compiled(*_unet_inputs(s, 1)) - ref).norm() / ref.norm()).item()
    rep.add("unet", f"ours vs fp32 output, relative error ({precision})", rel, "")
    return {"unet": unet, "compiled": compiled, "eval_ms": fns, "baseline_ms": baseline}


def bench_sampling(rep: Report, s: Setup, u: dict) -> None:
    """A whole 4-layer human: DPM-Solver++ / DDIM at several step counts and the original's 250-step DDPM."""
    dev = s.device
    acp = linear_schedule().to(dev)
    shape = (1, 27, s.resolution, s.resolution)
    base_eval = u["baseline_ms"][1]
    runs = [("dpmpp", 10), ("dpmpp", 20), ("dpmpp_sde", 20), ("ddim", 50), ("ddpm", 250)] if dev.type == "cuda" else \
        [("dpmpp", 3), ("ddpm", 5)]
    for sampler, steps in runs:
        def human(sampler: str = sampler, steps: int = steps) -> torch.Tensor:
            return sample_layers(u["compiled"], shape, acp, [0, 1, 2, 3], sampler, steps,
                                 generator=human_generators(0, 1))
        seconds = _wall(human, dev)
        original_s = 4 * 250 * base_eval / 1e3
        rep.add("sampling", f"4-layer human, {sampler} {steps} steps/layer, batch 1", seconds, "s", original_s,
                note="original: 4 x 250 DDPM steps x its measured eval time")
    batch = max(s.unet_batches)
    shape_b = (batch, 27, s.resolution, s.resolution)
    seconds = _wall(lambda: sample_layers(u["compiled"], shape_b, acp, [0, 1, 2, 3], "dpmpp", 20,
                                          generator=human_generators(0, batch)), dev)
    rep.add("sampling", f"4-layer humans, dpmpp 20 steps, batch {batch}, per human", seconds / batch, "s",
            4 * 250 * base_eval / 1e3)


def _bench_runtime(rep: Report, s: Setup, workdir: Path, fitted: dict | None, args: argparse.Namespace) -> None:
    """The runtime section (``benchmarks.runtime``) on the benchmark's UNet and the fitted (or a blank) field;
    ``args``: its ``--formats``, ``--aoti-tuning`` and the ``HUMANLIFF_BENCH_RUNTIME_S`` budget."""
    from benchmarks.runtime import bench_runtime

    decoder = fitted["decoder"] if fitted else FusedDecoder().to(s.device)
    planes = fitted["planes"] if fitted else torch.zeros(1, 27, s.resolution, s.resolution, device=s.device)
    bounds = (fitted["bounds"] if fitted else torch.tensor([[-0.5, -1.0, -0.3], [0.5, 1.0, 0.3]])).cpu()
    cfg = dataclasses.replace(s.cfg, decoder=load_config(None).decoder)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip()) or None
    budget = float(os.environ.get("HUMANLIFF_BENCH_RUNTIME_S", 0)) or None
    bench_runtime(rep, s.device, _unet(s), decoder, planes, bounds, cfg, s.resolution, workdir, s.unet_batches,
                  formats, args.aoti_tuning, budget, args.artifacts, args.export_only, args.static_batch)


def _section(rep: Report, sections: list[str], name: str, fn: Callable[[], object]) -> object | None:
    """Run one section if asked for; a failure is recorded and does not stop the others."""
    if name not in sections:
        return None
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failed section must not lose the others
        rep.error(name, f"{type(exc).__name__}: {str(exc)[:300]}")
        log.exception("section %s failed", name)
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small CPU-sized variant even on a GPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--curve-steps", type=int, default=None, help="steps of the train section's loss curves")
    parser.add_argument("--train-budget-s", type=float, default=None,
                        help="seconds by which the train section's optional rows end")
    parser.add_argument("--train-rows", choices=("all", "microbatch"), default=None,
                        help="train section: every row, or (CUDA) the original step and the microbatch rows only")
    parser.add_argument("--train-microbatches", default=None, metavar="M,M",
                        help="train section (CUDA): microbatches of the block-compiled rows, in order (batch: "
                             "the larger of 8 and M; default 8,16,2,32)")
    parser.add_argument("--formats", default="", help="runtime section: engine formats, e.g. torchscript,aoti "
                        "(default: CUDA aoti,torchscript; CPU torchscript,onnx)")
    parser.add_argument("--aoti-tuning", default=DEFAULT_TUNING, help="runtime section: plain, frozen or autotune "
                        "(export --aoti-tuning); env HUMANLIFF_BENCH_RUNTIME_S: the section's budget in seconds")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="runtime section: export into this folder, or reuse the complete export found there")
    parser.add_argument("--export-only", action="store_true", help="runtime section: stop after the export")
    parser.add_argument("--static-batch", type=int, default=0, metavar="N",
                        help="runtime section: UNet engines for batch N only, shapes fixed (export --static-batch)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    s = make_setup(args.quick)
    overrides = {"curve_steps": args.curve_steps, "train_budget_s": args.train_budget_s,
                 "train_rows": args.train_rows, "train_microbatches": args.train_microbatches}
    s = dataclasses.replace(s, **{k: v for k, v in overrides.items() if v is not None})
    if s.device.type == "cuda" and not args.quick:
        device = torch.cuda.get_device_name()
        print(f"benchmark on {device} (original sizes: R={s.resolution}, 128+128 samples, 192-channel UNet)")
    else:
        device = "cpu"
        print("benchmark: NO GPU - small CPU variant (tiny sizes; numbers are not comparable to GPU results)")
    outs = [args.out] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    rep = Report(device, outs)
    sections = args.sections.split(",")
    torch.backends.cuda.matmul.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fitted = _section(rep, sections, "fit", lambda: bench_fit(rep, s, work))
        _section(rep, sections, "points", lambda: bench_points(rep, s))
        _section(rep, sections, "render", lambda: bench_render(rep, s, fitted or _default_fitted(s)))
        unet = _section(rep, sections, "unet", lambda: bench_unet(rep, s))
        if unet is not None:
            _section(rep, sections, "sampling", lambda: bench_sampling(rep, s, unet))
        unet = None  # free the compiled UNet before training
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
        _section(rep, sections, "train", lambda: bench_train(rep, s, lambda: _unet(s)))
        _section(rep, sections, "runtime", lambda: _bench_runtime(rep, s, work, fitted, args))
    print(rep.markdown())


if __name__ == "__main__":
    main()
