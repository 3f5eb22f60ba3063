"""The runtime section of ``make benchmark``: export, engine start-up, engine calls and a whole human.

Exports the given UNet and decoder (bf16 on CUDA: AOTInductor and TorchScript, the UNet as its four
parts), then measures per format: export time, package size, load time; a fresh ``humanliff run``
process from start to its first human written; the UNet call replayed as a two-stream CUDA graph at
batch 1 and at the largest batch; and a warm 4-layer human with one view, against the pure UNet time of
the same number of calls.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.report import Report
from benchmarks.timing import time_fn
from humanliff.config import Config, RenderConfig
from humanliff.ema_file import EMA_FILE, write_ema
from humanliff.export.artifacts import export_artifacts
from humanliff.pipeline import Pipeline
from humanliff.run_pipeline import engine_field, load_artifacts, run_config
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.engines import graphed
from humanliff.runtime.occupancy import build_occupancy
from humanliff.runtime.render import render_image
from humanliff.store import create_store

STARTUP_CHILD = r"""
import json, sys, time
t0 = time.time()
import torch
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


def _store_and_ema(workdir: Path, unet: torch.nn.Module, decoder: torch.nn.Module, planes: torch.Tensor,
                   bounds: torch.Tensor, cfg: Config, resolution: int) -> tuple[Path, Path]:
    """A one-subject store and an ``ema.pt`` for the given networks (what ``export`` reads)."""
    store = create_store(workdir / "store", ["bench"], bounds[None].numpy(), resolution, 27, decoder.state_dict(),
                         dataclasses.asdict(cfg.decoder), cfg.to_dict())
    store.planes[0] = planes.detach().cpu().half().numpy()
    store.planes.flush()
    store_manifest = json.loads((workdir / "store" / "manifest.json").read_text())
    return write_ema(workdir / EMA_FILE, unet.state_dict(), cfg.to_dict(), store_manifest), workdir / "store"


def _startup(rep: Report, arts: Path, fmt: str, workdir: Path, size: int) -> None:
    """Fresh processes: the UNet engines from start to ready, and ``humanliff run --humans 1`` to the end."""
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", STARTUP_CHILD, str(arts), fmt, "1"], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        rep.error(f"runtime-{fmt}", proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "failed")
        return
    t = json.loads(proc.stdout.strip().splitlines()[-1])
    rep.add("runtime", f"{fmt}: process start to UNet engines ready", t["loaded"] - start, "s",
            note=f"python+torch import {t['imported'] - start:.2f} s, load {t['loaded'] - t['imported']:.2f} s, "
                 f"first call {t['first_call'] - t['loaded']:.2f} s ({t['format']})")
    out = workdir / f"run_{fmt}"
    cmd = [sys.executable, "-m", "humanliff.cli", "run", str(arts), "--out", str(out), "--humans", "1",
           "--sampler", "dpmpp", "--steps", "20", "--engine", f"{fmt},ep", "--set", "sample.views=1",
           "--set", f"sample.image_size={size}", "--set", "sample.turntable_frames=1",
           "--set", "sample.mesh_resolution=16"]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.time() - start
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        rep.error(f"runtime-run-{fmt}", (proc.stderr.strip().splitlines() or ["failed"])[-1][:300])
        return
    rep.add("runtime", f"{fmt}: `humanliff run --humans 1` process start to exit (4 layers, dpmpp 20, "
                       f"one {size}x{size} view per layer)", wall, "s", note=last[-200:])


def bench_runtime(rep: Report, device: torch.device, unet: torch.nn.Module, decoder: torch.nn.Module,
                  planes: torch.Tensor, bounds: torch.Tensor, cfg: Config, resolution: int, workdir: Path,
                  batches: tuple[int, ...]) -> None:
    """Export, then per loaded format: start-up, UNet call per batch, a warm human (see the module doc)."""
    ema, store = _store_and_ema(workdir, unet, decoder, planes, bounds, cfg, resolution)
    cuda = device.type == "cuda"
    precision = "bf16" if cuda else "fp32"
    formats = ("aoti", "torchscript") if cuda else ("torchscript", "onnx")
    arts = workdir / "artifacts"
    start = time.perf_counter()
    manifest = export_artifacts(ema, store, arts, formats, batch=max(batches), dtype=precision, device=device,
                                progress=False)
    rep.add("runtime", f"export {'+'.join(formats)} (UNet parts + decoder, {precision})",
            time.perf_counter() - start, "s")
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
    size = 512 if cuda else 32
    for fmt in formats:
        _startup(rep, arts, fmt, workdir, size)
    for fmt in formats:
        try:
            _engine_timings(rep, device, arts, fmt, resolution, bounds, size, batches)
        except Exception as exc:  # noqa: BLE001 - one format that does not load must not lose the others
            rep.error(f"runtime-{fmt}-timings", f"{type(exc).__name__}: {str(exc)[:300]}")


def _engine_timings(rep: Report, device: torch.device, arts: Path, fmt: str, res: int, bounds: torch.Tensor,
                    size: int, batches: tuple[int, ...]) -> None:
    """One format's UNet call per batch (two-stream CUDA graph) and a warm human against its pure UNet time."""
    loaded = load_artifacts(arts, device, prefer=(fmt, "ep"))
    per_call = {}
    for batch in batches:
        shape = (batch, 27, res, res)
        feeds = {"x": torch.randn(shape, device=device), "timesteps": torch.full((batch,), 500, device=device),
                 "x_cond": torch.randn(shape, device=device), "y": torch.ones(batch, dtype=torch.int64,
                                                                              device=device)}
        call = graphed(loaded.unet, feeds, device, loaded.unet.graphable)
        t = time_fn(lambda call=call, feeds=feeds: call(**feeds), repeats=20, device=device)
        per_call[batch] = t.median_ms
        rep.add("runtime", f"{fmt}: UNet call (engines, two-stream CUDA graph), batch {batch}", t.median_ms,
                "ms", note=f"{t.median_ms / batch:.2f} ms per human; engines {loaded.unet.format}")
    render_cfg = dataclasses.replace(RenderConfig(**loaded.manifest["render"]), chunk=size * size)
    pipe = Pipeline(loaded, run_config(arts, loaded.manifest))
    K, R, T = (x[0].to(device) for x in orbit_cameras(bounds, 1, size))

    def human() -> None:
        planes = pipe(1, [0, 1, 2, 3], sampler="dpmpp", steps=20, seed=0).planes
        field = engine_field(loaded.decoder, planes[-1])
        occupancy = build_occupancy(field, render_cfg.occupancy_resolution, render_cfg.occupancy_threshold,
                                    device=device)
        render_image(field, K, R, T, size, size, bounds.to(device), render_cfg, occupancy=occupancy)

    t = time_fn(human, warmup=1, repeats=3, device=device)
    pure = 80 * per_call[batches[0]] / 1e3
    rep.add("runtime", f"{fmt}: warm 4-layer human, dpmpp 20 steps + one {size}x{size} view", t.median_ms / 1e3,
            "s", note=f"pure UNet time of its 80 calls {pure:.3f} s: runtime adds "
                      f"{(t.median_ms / 1e3 / pure - 1) * 100:.0f} %")
    loaded.close()
