"""The runtime section of ``make benchmark``: export, engine start-up, engine calls and a whole human.

Exports the given UNet and decoder (bf16 on CUDA, the UNet as its four parts) to the formats asked for
(``python -m benchmarks.run --sections runtime --formats torchscript,aoti --aoti-tuning frozen``; default
CUDA aoti, torchscript; CPU torchscript, onnx), then measures: the torch path in the same process (CUDA:
bf16 compiled, two-stream CUDA graph; CPU: fp32 eager) per batch; per format export time, package size,
load time; fresh processes from start to UNet engines ready, to the run command's modules imported and
to the end of ``humanliff run --humans 1``; the UNet call replayed as a two-stream CUDA graph at batch 1
and the largest batch, and its ratio to the torch path; a warm 4-layer human against the pure UNet time
of the same number of calls. ``HUMANLIFF_BENCH_RUNTIME_S`` bounds the section: after the torch path's
first batch, the export, the first format's start-up and every format's calls, a step runs only when
the same kind of step measured before it in this run still fits (skipped ones are listed as errors).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.report import Report
from benchmarks.timing import time_fn
from humanliff.config import Config, RenderConfig
from humanliff.ema_file import EMA_FILE, write_ema
from humanliff.errors import HumanLiffError
from humanliff.export.artifacts import export_artifacts
from humanliff.pipeline import Pipeline
from humanliff.run_pipeline import engine_field, load_artifacts, run_config
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.engines import graphed
from humanliff.runtime.formats.aoti_compiler import DEFAULT_TUNING
from humanliff.runtime.manifest import read_manifest, unet_layout
from humanliff.runtime.occupancy import build_occupancy
from humanliff.runtime.render import render_image
from humanliff.store import create_store

STARTUP_CHILD = r"""
import json, sys, time
t0 = time.time()
import torch
from humanliff.runtime.compute import default_device
from humanliff.runtime.manifest import read_manifest
from humanliff.runtime.unet_engine import load_unet
t1 = time.time()
folder, fmt, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
dev = default_device()
unet = load_unet(folder, read_manifest(folder), (fmt,), dev)
torch.cuda.synchronize() if dev.type == "cuda" else None
t2 = time.time()
m = read_manifest(folder)["triplane"]
x = torch.zeros(batch, m["channels"], m["resolution"], m["resolution"], device=dev)
i = torch.zeros(batch, dtype=torch.int64, device=dev)
unet(x=x, timesteps=i, x_cond=x, y=i)
torch.cuda.synchronize() if dev.type == "cuda" else None
t3 = time.time()
print(json.dumps({"start": t0, "imported": t1, "loaded": t2, "first_call": t3, "format": unet.format}))
"""


RUN_IMPORTS = "import humanliff.cli, humanliff.pipeline, humanliff.run_pipeline, humanliff.generation_result"
"""What ``humanliff run`` imports before it loads the engines (torch with them)."""


def _store_and_ema(workdir: Path, unet: torch.nn.Module, decoder: torch.nn.Module, planes: torch.Tensor,
                   bounds: torch.Tensor, cfg: Config, resolution: int) -> tuple[Path, Path]:
    """A one-subject store and an ``ema.pt`` for the given networks (what ``export`` reads)."""
    store = create_store(workdir / "store", ["bench"], bounds[None].numpy(), resolution, 27, decoder.state_dict(),
                         dataclasses.asdict(cfg.decoder), cfg.to_dict())
    store.planes[0] = planes.detach().cpu().half().numpy()
    store.planes.flush()
    store_manifest = json.loads((workdir / "store" / "manifest.json").read_text())
    return write_ema(workdir / EMA_FILE, unet.state_dict(), cfg.to_dict(), store_manifest), workdir / "store"


STARTUP_REPEATS = 3
"""Fresh processes timed from start to UNet engines ready: the first may hash the artifacts (no record in
``verified-artifacts.json`` yet) and read them from disk; the later ones show a user's usual start."""


def _startup_child(arts: Path, fmt: str, batch: int) -> dict | str:
    """One fresh process loading the UNet engines: its time stamps (``start`` the parent's), or its error."""
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", STARTUP_CHILD, str(arts), fmt, str(batch)], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "failed"
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "start": start}


def _startup(rep: Report, arts: Path, fmt: str, workdir: Path, size: int, batch: int = 1) -> float:
    """Fresh processes: the UNet engines from start to ready (first call at ``batch``; ``STARTUP_REPEATS``
    times: the first and the median reported), the run command's imports, and ``humanliff run --humans 1``
    from start to exit. Returns the seconds all of it took."""
    began = time.time()
    runs = []
    for _ in range(STARTUP_REPEATS):
        t = _startup_child(arts, fmt, batch)
        if isinstance(t, str):
            rep.error(f"runtime-{fmt}", t)
            return time.time() - began
        runs.append(t)
    for label, t in (("first of", runs[0]),
                     ("median of", sorted(runs, key=lambda r: r["loaded"] - r["start"])[len(runs) // 2])):
        rep.add("runtime", f"{fmt}: process start to UNet engines ready ({label} {len(runs)} fresh processes)",
                t["loaded"] - t["start"], "s",
                note=f"python+torch import {t['imported'] - t['start']:.2f} s, load {t['loaded'] - t['imported']:.2f}"
                     f" s, first call {t['first_call'] - t['loaded']:.2f} s ({t['format']}); all: "
                     + ", ".join(f"{r['loaded'] - r['start']:.2f}" for r in runs) + " s")
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", RUN_IMPORTS], capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        rep.add("runtime", "process start to the run command's modules imported (torch included)",
                time.time() - start, "s", note=f"modules: {RUN_IMPORTS.split(' ', 1)[1]}")
    out = workdir / f"run_{fmt}"
    cmd = [sys.executable, "-m", "humanliff.cli", "run", str(arts), "--out", str(out), "--humans", "1",
           "--sampler", "dpmpp", "--steps", "20", "--engine", f"{fmt},ep", "--set", "sample.views=1",
           "--set", f"sample.image_size={size}", "--set", "sample.turntable_frames=1",
           "--set", "sample.meshes=false", "--set", "sample.strength=1"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.time() - start
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        rep.error(f"runtime-run-{fmt}", (proc.stderr.strip().splitlines() or ["failed"])[-1][:300])
    else:
        rep.add("runtime", f"{fmt}: `humanliff run --humans 1` process start to exit (4 layers, dpmpp 20, "
                           f"80 UNet calls (strength 1), one {size}x{size} view per layer, no mesh)", wall, "s",
                note=last[-200:])
    return time.time() - began


class Budget:
    """Seconds left to the runtime section; optional steps run only when the same kind of step, measured
    earlier in this run, would still fit."""

    def __init__(self, seconds: float | None) -> None:
        self.deadline = time.perf_counter() + (seconds if seconds else float("inf"))

    def fits(self, estimate_s: float) -> bool:
        return time.perf_counter() + estimate_s < self.deadline


def _torch_path(device: torch.device, unet: torch.nn.Module) -> tuple[Callable[..., torch.Tensor], str]:
    """The torch path on a copy of ``unet`` (CUDA: bf16, compiled, two-stream CUDA graph; CPU: fp32 eager)."""
    from humanliff.models.inference import inference_unet

    cuda = device.type == "cuda"
    fn = inference_unet(copy.deepcopy(unet), precision="bf16" if cuda else "fp32", compile=cuda)
    return fn, "bf16 compiled, two-stream CUDA graph" if cuda else "fp32 eager"


def _torch_calls(rep: Report, path: tuple[Callable[..., torch.Tensor], str], device: torch.device, res: int,
                 batches: tuple[int, ...], budget: Budget, estimate_s: float = 0.0) -> tuple[dict[int, float], float]:
    """The torch path's call per batch in this process: ``({batch: ms}, the last first-call seconds)``. Each
    batch runs only when its first call (the compile), estimated by the one before, fits the budget."""
    fn, kind = path
    per_call: dict[int, float] = {}
    for batch in batches:
        if not budget.fits(estimate_s):
            rep.error(f"runtime-torch-batch-{batch}", f"skipped: its compile (about {estimate_s:.0f} s) does not "
                                                      "fit the budget")
            continue
        feeds = _unet_feeds(device, batch, res)
        start = time.perf_counter()
        fn(*feeds.values())
        torch.cuda.synchronize() if device.type == "cuda" else None
        estimate_s = time.perf_counter() - start
        t = time_fn(lambda feeds=feeds: fn(*feeds.values()), repeats=20, device=device)
        per_call[batch] = t.median_ms
        rep.add("runtime", f"torch ({kind}): UNet call, batch {batch}", t.median_ms, "ms",
                note=f"{t.median_ms / batch:.2f} ms per human; first call {estimate_s:.0f} s (on CUDA: the compile)")
    return per_call, estimate_s


def _unet_feeds(device: torch.device, batch: int, res: int) -> dict[str, torch.Tensor]:
    """UNet inputs by name: noise, timestep 500, a random condition, layer 1."""
    shape = (batch, 27, res, res)
    return {"x": torch.randn(shape, device=device), "timesteps": torch.full((batch,), 500, device=device),
            "x_cond": torch.randn(shape, device=device),
            "y": torch.ones(batch, dtype=torch.int64, device=device)}


def bench_runtime(rep: Report, device: torch.device, unet: torch.nn.Module, decoder: torch.nn.Module,
                  planes: torch.Tensor, bounds: torch.Tensor, cfg: Config, resolution: int, workdir: Path,
                  batches: tuple[int, ...], formats: tuple[str, ...] | None = None, aoti_tuning: str = DEFAULT_TUNING,
                  budget_s: float | None = None, artifacts: Path | None = None, export_only: bool = False,
                  static_batch: int = 0) -> None:
    """Export, then per format: start-up, UNet call per batch against the torch path in this process, a warm
    human (see the module doc). ``formats`` default: CUDA aoti, torchscript; CPU torchscript, onnx.

    ``artifacts``: the folder the export goes to (default: in ``workdir``); when it already holds an export of
    ``formats`` with ``aoti_tuning`` (from an earlier ``export_only`` run on this machine), it is reused and the
    export rows are not repeated. ``export_only``: stop after the export rows. ``static_batch``: UNet engines
    exported for this batch only, shapes fixed (``export --static-batch``), and only it runs (0: ``batches``
    with engines for any batch up to their largest).

    Within ``budget_s`` (None: no limit) the order is: torch path at the first batch, export, the first
    format's start-up, every format's calls, then what fits: the torch path's other batches, the other
    formats' start-up, warm humans.
    """
    budget = Budget(budget_s)
    cuda = device.type == "cuda"
    precision = "bf16" if cuda else "fp32"
    formats = formats or (("aoti", "torchscript") if cuda else ("torchscript", "onnx"))
    batches = (static_batch,) if static_batch else batches
    arts = artifacts or workdir / "artifacts"
    reused = _complete_export(arts, formats, aoti_tuning, static_batch > 0)
    if reused:
        rep.add("runtime", f"export reused: {arts}", 0.0, "s", note=f"exported {reused}")
    else:
        ema, store = _store_and_ema(workdir, unet, decoder, planes, bounds, cfg, resolution)
        start = time.perf_counter()
        manifest = export_artifacts(ema, store, arts, formats, batch=max(batches), dtype=precision, device=device,
                                    aoti_tuning=aoti_tuning, static_batch=static_batch > 0, progress=False)
        batch_note = f"static batch {batches[0]}" if static_batch else f"batch 1-{max(batches)}"
        rep.add("runtime", f"export {'+'.join(formats)} (UNet parts + decoder, {precision}, aoti tuning "
                           f"{aoti_tuning}, {batch_note})", time.perf_counter() - start, "s")
        _export_rows(rep, manifest, formats)
    if export_only:
        return
    path = _torch_path(device, unet)
    torch_ms, compile_s = _torch_calls(rep, path, device, resolution, batches[:1], budget)
    size = 512 if cuda else 32
    startup_s = _startup(rep, arts, formats[0], workdir, size, batches[0])
    per_call = {}
    for fmt in formats:
        try:
            per_call[fmt] = _engine_calls(rep, device, arts, fmt, resolution, batches)
        except Exception as exc:  # noqa: BLE001 - one format that does not load must not lose the others
            rep.error(f"runtime-{fmt}-calls", f"{type(exc).__name__}: {str(exc)[:300]}")
    torch_ms.update(_torch_calls(rep, path, device, resolution, batches[1:], budget, compile_s)[0])
    path = None  # free the compiled torch path
    for fmt, calls in per_call.items():
        for batch, ms in calls.items():
            if batch in torch_ms:
                rep.add("runtime", f"{fmt} / torch path, UNet call, batch {batch}", ms / torch_ms[batch], "x",
                        note=f"{ms:.2f} vs {torch_ms[batch]:.2f} ms, same process (target 1.05x)")
    for fmt in formats[1:]:
        if budget.fits(startup_s):
            _startup(rep, arts, fmt, workdir, size, batches[0])
        else:
            rep.error(f"runtime-{fmt}-startup", f"skipped: about {startup_s:.0f} s does not fit the budget")
    for fmt, calls in per_call.items():
        estimate = 4 * 80 * calls[batches[0]] / 1e3 + 10
        if budget.fits(estimate):
            _warm_human(rep, device, arts, fmt, bounds, size, calls[batches[0]])
        else:
            rep.error(f"runtime-{fmt}-warm", f"skipped: about {estimate:.0f} s does not fit the budget")


def _complete_export(arts: Path, formats: tuple[str, ...], aoti_tuning: str, static_batch: bool) -> str | None:
    """The export date of ``arts`` when every network there has an ``ok`` artifact of each of ``formats`` (the
    AOTInductor ones built with ``aoti_tuning``) and its UNet's batch is static as asked, else None."""
    try:
        manifest = read_manifest(arts)
    except HumanLiffError:
        return None
    low, _, high = manifest["networks"][unet_layout(manifest)["networks"][0]]["dims"]["batch"]
    if static_batch != (low == high):
        return None
    for net in manifest["networks"].values():
        for fmt in formats:
            record = net["artifacts"].get(fmt, {})
            if record.get("status") != "ok" or (fmt == "aoti" and record.get("tuning") != aoti_tuning):
                return None
    return str(manifest.get("created", "earlier"))


def _export_rows(rep: Report, manifest: dict, formats: tuple[str, ...]) -> None:
    """Per format: export time, artifact size and load time at export over all networks."""
    for fmt in formats:
        records = [net["artifacts"].get(fmt, {}) for net in manifest["networks"].values()]
        notes = "; ".join(f"{n}: {a.get('status')} {a.get('loader', '')} {a.get('compiler', '') or ''}".strip()
                          for n, a in zip(manifest["networks"], records, strict=True))
        rep.add("runtime", f"{fmt}: export time, all networks", sum(a.get("export_s", 0) for a in records), "s",
                note=notes[:300])
        rep.add("runtime", f"{fmt}: artifact size, all networks", sum(a.get("bytes", 0) for a in records) / 1e6,
                "MB")
        rep.add("runtime", f"{fmt}: load time at export, all networks", sum(a.get("load_s", 0) for a in records),
                "s")


def _engine_calls(rep: Report, device: torch.device, arts: Path, fmt: str, res: int, batches: tuple[int, ...]
                  ) -> dict[int, float]:
    """One format's UNet call per batch (two-stream CUDA graph on CUDA): ms per call."""
    loaded = load_artifacts(arts, device, prefer=(fmt, "ep"))
    per_call = {}
    try:
        for batch in batches:
            feeds = _unet_feeds(device, batch, res)
            call = graphed(loaded.unet, feeds, device, loaded.unet.graphable)
            t = time_fn(lambda call=call, feeds=feeds: call(**feeds), repeats=20, device=device)
            per_call[batch] = t.median_ms
            rep.add("runtime", f"{fmt}: UNet call (engines, two-stream CUDA graph), batch {batch}", t.median_ms,
                    "ms", note=f"{t.median_ms / batch:.2f} ms per human; engines {loaded.unet.format}")
    finally:
        loaded.close()
    return per_call


def _warm_human(rep: Report, device: torch.device, arts: Path, fmt: str, bounds: torch.Tensor, size: int,
                call_ms: float) -> None:
    """A warm 4-layer human (dpmpp 20 steps, each layer from noise: ``strength`` 1, one view) against the pure
    UNet time of its 80 calls."""
    loaded = load_artifacts(arts, device, prefer=(fmt, "ep"))
    render_cfg = dataclasses.replace(RenderConfig(**loaded.manifest["render"]), chunk=size * size)
    pipe = Pipeline(loaded, run_config(arts, loaded.manifest))
    K, R, T = (x[0].to(device) for x in orbit_cameras(bounds, 1, size))

    def human() -> None:
        planes = pipe(1, [0, 1, 2, 3], sampler="dpmpp", steps=20, seed=0, strength=1.0).planes
        field = engine_field(loaded.decoder, planes[-1])
        occupancy = build_occupancy(field, render_cfg.occupancy_resolution, render_cfg.occupancy_threshold,
                                    device=device)
        render_image(field, K, R, T, size, size, bounds.to(device), render_cfg, occupancy=occupancy)

    t = time_fn(human, warmup=1, repeats=3, device=device)
    pure = 80 * call_ms / 1e3
    rep.add("runtime", f"{fmt}: warm 4-layer human, dpmpp 20 steps + one {size}x{size} view", t.median_ms / 1e3,
            "s", note=f"pure UNet time of its 80 calls {pure:.3f} s: runtime adds "
                      f"{(t.median_ms / 1e3 / pure - 1) * 100:.0f} %")
    loaded.close()
