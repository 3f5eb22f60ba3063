"""Issue 19's speed rows: a warm layered human from the shipped default model and from its distilled student,
through the runtime's engines (what ``humanliff run`` calls).

Usage (CUDA: two exports, then the timing; the CPU runs it too, as a check)::

    python -m benchmarks.default_human --out /tmp/default_human [--formats aoti] [--batches 1,16] [--size 512]

For each model (``default``: the teacher with its own settings, DPM-Solver++(2M) SDE 20 steps a layer, 10
above layer 0 with ``sample.strength`` 0.5; ``default-distilled``: the student, 4 calls at layer 0 and 2
above) its engines are exported into ``<out>/<model>`` (``--formats``; bf16 on CUDA, fp32 on the CPU;
tuned for the largest batch; an export found there is reused, with no export row), then a warm 4-layer
human is timed per batch: sampling with the model's own settings plus one ``--size`` view of each human's
top layer (occupancy grid and render), as ``humanliff run`` does before writing files. Rows: seconds per
batch and per human, the UNet calls counted through the pipeline's callback, and the student against the
teacher; ``<out>/<date>-<device>-default-human.{json,md}`` (and ``$OUT`` when set).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.report import Report
from benchmarks.timing import time_fn
from humanliff.config import RenderConfig
from humanliff.export.artifacts import export_artifacts
from humanliff.outputs.writer import render_occupancy
from humanliff.pipeline import Pipeline
from humanliff.pretrained import DEFAULT_SOURCES, default_model
from humanliff.run_pipeline import EngineModels, engine_field, load_artifacts, run_config
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.compute import default_device
from humanliff.runtime.render import render_image

LAYERS = [0, 1, 2, 3]


def human_call(pipe: Pipeline, loaded: EngineModels, size: int) -> Callable[[int, list[int]], None]:
    """The timed call: ``call(batch, calls)`` samples ``batch`` 4-layer humans (one item appended to ``calls``
    per UNet call), then renders one ``size`` view of each human's top layer. Cameras and render settings
    are made once, outside it."""
    device = loaded.device
    render_cfg = dataclasses.replace(RenderConfig(**loaded.manifest["render"]), chunk=size * size)
    bounds = loaded.bounds.to(device)
    K, R, T = (x[0].to(device) for x in orbit_cameras(loaded.bounds, 1, size))

    def call(batch: int, calls: list[int]) -> None:
        planes = pipe(batch, LAYERS, seed=0, callback=lambda _: calls.append(1)).planes
        for i in range(batch):
            field = engine_field(loaded.decoder, planes[-1][i:i + 1])
            render_image(field, K, R, T, size, size, bounds, render_cfg,
                         occupancy=render_occupancy(field, render_cfg, device))

    return call


def bench_model(rep: Report, name: str, out: Path, formats: str, batches: list[int], size: int,
                device: torch.device) -> dict[int, float]:
    """Export ``name``'s engines, then time a warm human per batch; returns seconds per human by batch."""
    ema, store = default_model(distilled=DEFAULT_SOURCES[name])
    folder = out / name
    if not (folder / "manifest.json").is_file():
        started = time.perf_counter()
        export_artifacts(ema, store, folder, formats, batch=max(batches),
                         dtype="bf16" if device.type == "cuda" else "fp32", device=device, progress=False)
        rep.add("default_human", f"{name}: export ({formats})", time.perf_counter() - started, "s",
                note=f"{ema.name} of {ema.parent.name}")
    loaded = load_artifacts(folder, device, prefer=tuple(formats.split(",")))
    pipe = Pipeline(loaded, run_config(folder, loaded.manifest))
    call = human_call(pipe, loaded, size)
    per_human = {}
    try:
        for batch in batches:
            calls: list[int] = []
            call(batch, calls)  # counts this batch's UNet calls once
            t = time_fn(lambda b=batch: call(b, []), warmup=1, repeats=3, device=device)
            per_human[batch] = t.median_ms / 1e3 / batch
            sample = pipe.config.sample
            rep.add("default_human", f"{name}: warm 4-layer human, batch {batch}, {sample.sampler} "
                    f"{sample.steps} + one {size}x{size} view each", per_human[batch], "s",
                    note=f"per human; {t.median_ms / 1e3:.4f} s the batch; {len(calls)} UNet calls "
                         f"(engines {loaded.engines['unet']}, decoder {loaded.engines['decoder']})")
    finally:
        loaded.close()
    return per_human


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--formats", default=None, help="engine formats (default: aoti on CUDA, torchscript)")
    parser.add_argument("--batches", default="1,16", help="humans per call, comma-separated")
    parser.add_argument("--size", type=int, default=512, help="view side in pixels")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = default_device(args.device)
    formats = args.formats or ("aoti" if device.type == "cuda" else "torchscript")
    batches = [int(b) for b in args.batches.split(",") if b]
    out_dirs = [args.out] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    for folder in out_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    rep = Report(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", out_dirs)
    rep.stem = f"{rep.stem}-default-human"
    teacher = bench_model(rep, "default", args.out, formats, batches, args.size, device)
    student = bench_model(rep, "default-distilled", args.out, formats, batches, args.size, device)
    for batch in batches:
        rep.add("default_human", f"student against the teacher, batch {batch}, per human", student[batch], "s",
                baseline=teacher[batch], note="baseline: the teacher's (default) warm human, this run")


if __name__ == "__main__":
    main()
