"""Checkpoint to artifacts folder: every network in every format asked for, each checked, plus the manifest.

``export_artifacts`` traces the UNet (whole or as its four parts, see ``UNET_LAYOUTS``) and the decoder
graph (tri-plane sampling plus the decoder) once each with ``torch.export``, then writes each format of
the registry (``humanliff.runtime.formats``) from that trace, times it, checks it against torch on fresh
random inputs and records the outcome, the files' sizes and the load time in ``manifest.json`` (see
``humanliff.runtime.manifest``). The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from humanliff.config import Config, DecoderConfig
from humanliff.ema_file import read_schedule
from humanliff.errors import HumanLiffError
from humanliff.export.spec import (
    MAX_POINTS,
    PRECISIONS,
    DecoderGraph,
    ExportSpec,
    UNetGraph,
    decoder_spec,
    shared_compute_weights,
    unet_part_specs,
    unet_spec,
    with_compute_weights,
)
from humanliff.io import atomic_path, removed_if_killed
from humanliff.models.checkpoint import load_ema
from humanliff.models.decoder import build_decoder
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.compute import default_device
from humanliff.runtime.formats import FORMATS, EngineUnavailable
from humanliff.runtime.formats.aoti_compiler import DEFAULT_TUNING, TUNINGS, candidates
from humanliff.runtime.formats.base import Reference, WriteJob, max_rel_error
from humanliff.runtime.formats.onnx import OPSETS
from humanliff.runtime.layers import NUM_LAYERS
from humanliff.runtime.manifest import sha256_file, write_manifest
from humanliff.runtime.render import ray_chunk
from humanliff.runtime.triplane import CHANNELS
from humanliff.runtime.verified_files import remember_written
from humanliff.store import TriplaneStore, check_layout, open_store

log = logging.getLogger(__name__)

TRIPLANE_LAYOUT = ("channel = plane*9 + group*3 + c; planes XY, XZ, ZY; groups sampled at (u, v), "
                   "(u + 1/R, v), (u, v + 1/R); bilinear, zero padding, align_corners=False; points "
                   "normalized per axis by the box")
MIN_MAX_BATCH = 4
"""Engines accept any batch from 1 to ``max(batch, MIN_MAX_BATCH)``."""
CHECK_SEED = 1234
"""Seed of the fresh random inputs of the checks (the trace uses seed 0 and other sizes)."""
UNET_LAYOUTS = ("parts", "whole", "both")
"""``parts``: the four parts the runtime replays as a two-stream CUDA graph; ``whole``: one graph (the
C++ example's); ``both``: both, the runtime using the parts."""
DEFAULT_FORMATS = {"cuda": ("aoti", "torchscript", "ep"), "cpu": ("onnx", "ep")}
"""``--formats auto`` per device type: loaded engines first, ``ep`` as the portable fallback."""


def parse_formats(text: str | Sequence[str], device: torch.device | None = None) -> list[str]:
    """``"onnx,aoti"`` -> ``["onnx", "aoti"]``, checked, in writing order; ``auto`` picks by device.

    A format built from another (TensorRT from ONNX) brings it along and is written after it.
    """
    names = [f.strip() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    if names == ["auto"]:
        names = list(DEFAULT_FORMATS["cuda" if device is not None and device.type == "cuda" else "cpu"])
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise HumanLiffError(f"unknown export format(s) {', '.join(unknown) or '(none)'} "
                             f"(choose from auto, {', '.join(FORMATS)})")
    names += [FORMATS[f].builds_from for f in names if FORMATS[f].builds_from not in (None, *names)]
    return sorted(set(names), key=lambda f: (FORMATS[f].builds_from is not None, -FORMATS[f].rank))


def torch_decoder(store: TriplaneStore, device: torch.device) -> torch.nn.Module:
    """The store's decoder with the torch backend (a tiny-cuda-nn decoder exports through its torch twin)."""
    if store.decoder_config.get("backend", "torch") == "torch":
        return store.load_decoder(device)
    decoder = build_decoder(DecoderConfig(**{**store.decoder_config, "backend": "torch"}))
    decoder.load_state_dict(store.decoder_state())
    return decoder.to(device).eval().requires_grad_(False)


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{exc.__class__.__name__}: {lines[0][:300] if lines else ''}"


def _export_format(name: str, job: WriteJob, feeds: Mapping[str, torch.Tensor],
                   reference: Reference) -> dict[str, Any]:
    """Write one format of one network, then check it; returns the manifest's record of the artifact."""
    fmt = FORMATS[name]
    start = time.perf_counter()
    try:
        files = fmt.write(job)
    except EngineUnavailable as exc:
        log.warning("%s: %s not built: %s", job.name, name, exc)
        return {"status": "not_run", "error": str(exc)}
    except Exception as exc:
        log.warning("%s: %s export failed: %s", job.name, name, _one_line(exc))
        return {"status": "failed", "error": _one_line(exc)}
    record: dict[str, Any] = {"files": {p.name: sha256_file(p) for p in files},
                              "bytes": sum(p.stat().st_size for p in files),
                              "export_s": round(time.perf_counter() - start, 3), "device": job.device.type}
    start = time.perf_counter()
    try:
        check = fmt.verify(fmt, files, job, feeds, reference, record)
    except Exception as exc:
        log.warning("%s: %s could not be checked here: %s", job.name, name, _one_line(exc))
        check, record["check_error"] = None, _one_line(exc)
    record.update(check=check, check_s=round(time.perf_counter() - start, 3))
    record["status"] = "unverified" if check is None else ("ok" if check["passed"] else "failed")
    if check is not None and "max_rel_err" in check:
        log.info("%s: %s max relative error %.2e (%s)", job.name, name, check["max_rel_err"], record["status"])
    elif check is not None:
        log.warning("%s: %s %s", job.name, name, check.get("error", "failed"))
    return record


def _outputs(graph: torch.nn.Module, spec: ExportSpec, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = graph(*feeds.values())
    return dict(zip([s.name for s in spec.outputs], out if isinstance(out, tuple) else (out,), strict=True))


def float32_reference(graph: torch.nn.Module, spec: ExportSpec, feeds: Mapping[str, torch.Tensor]) -> Reference:
    """``graph`` (a spec graph with a compute ``dtype``) on ``feeds`` in float32, and torch's own error.

    The engines are judged against float32; torch's eager path in the compute dtype is measured against
    the same reference, so the check allows an engine what torch itself loses to bf16 / fp16 rounding.
    """
    compute = graph.dtype
    if compute == torch.float32:
        return Reference(_outputs(graph, spec, feeds))
    graph.dtype = torch.float32
    try:
        exact = _outputs(graph, spec, {k: v.float() if v.is_floating_point() else v for k, v in feeds.items()})
    finally:
        graph.dtype = compute
    return Reference(exact, max_rel_error(_outputs(graph, spec, feeds), exact))


def export_network(graph: torch.nn.Module, spec: ExportSpec, opt: Mapping[str, int], folder: Path,
                   formats: Sequence[str], device: torch.device, precision: str,
                   options: dict[str, Any] | None = None, progress: bool = False,
                   lowered: torch.nn.Module | None = None) -> dict[str, Any]:
    """Trace ``graph`` once and write/check each format; returns the manifest's record of the network.

    ``options``: the writers' switches (``opset`` for ONNX, ``cxx`` and ``aoti_tuning`` for
    AOTInductor), shared by every format's job so that a writer's one-time choice (the
    AOTInductor compiler) serves all networks. ``lowered``: the graph traced, ``graph`` with its weights in
    the compute dtype (default ``with_compute_weights(graph)``; the UNet's parts share one copy, see
    ``shared_compute_weights``); ``graph`` itself gives the float32 reference of the checks.
    """
    trace_sizes = {k: min(max(2, low), high) if k == "batch" else min(64, high)
                   for k, (low, high) in spec.dims.items()}
    example = spec.sample_inputs(trace_sizes, torch.Generator().manual_seed(0), device)
    check_sizes = {k: max(low, min(3 if k == "batch" else 777, high)) for k, (low, high) in spec.dims.items()}
    feeds = spec.sample_inputs(check_sizes, torch.Generator().manual_seed(CHECK_SEED), device)
    reference = float32_reference(graph, spec, feeds)
    graph = with_compute_weights(graph) if lowered is None else lowered
    start = time.perf_counter()
    program = torch.export.export(graph, tuple(example.values()), dynamic_shapes=spec.dynamic_shapes())
    trace_s = time.perf_counter() - start
    network = spec.network_spec(opt)
    options = {} if options is None else options
    artifacts: dict[str, Any] = {}
    for name in tqdm(formats, desc=f"export {spec.name}", unit="format", disable=not progress):
        job = WriteJob(spec.name, program, graph, tuple(example.values()), network, folder, device, precision,
                       options)
        artifacts[name] = {**_export_format(name, job, feeds, reference), "check_sizes": check_sizes}
    return {**network.to_json(), "trace_s": round(trace_s, 3), "artifacts": artifacts}


def _unet_jobs(unet: torch.nn.Module, cfg: Config, layout: str, batches: tuple[int, int], batch: int,
               compute: torch.dtype) -> tuple[list[tuple[torch.nn.Module, ExportSpec, dict[str, int]]], dict]:
    """The UNet's graphs to export for ``layout`` (batch range ``batches``: min, max) and the manifest's
    ``unet`` record."""
    res, channels, steps = cfg.triplane.resolution, cfg.triplane.channels, cfg.diffusion.steps
    low, high = batches
    jobs = []
    if layout in ("whole", "both"):
        jobs.append((UNetGraph(unet, compute), unet_spec(res, channels, NUM_LAYERS, steps, high, low)))
    if layout in ("parts", "both"):
        jobs += unet_part_specs(unet, res, channels, NUM_LAYERS, steps, high, compute, low)
    parts = [spec.name for _, spec in jobs if spec.name != "unet"]
    record = ({"layout": "parts", "networks": parts, "side_stream": ["unet.encode_control"]} if parts
              else {"layout": "whole", "networks": ["unet"], "side_stream": []})
    return [(graph, spec, {"batch": batch}) for graph, spec in jobs], record


def export_artifacts(unet_ckpt: str | Path, store: str | Path, out_dir: str | Path,
                     formats: str | Sequence[str] = "auto", batch: int = 1, dtype: str = "fp32", *,
                     overrides: Sequence[str] = (), device: str | torch.device | None = None,
                     opset: int = OPSETS[0], unet_layout: str = "parts", cxx: str | None = None,
                     aoti_tuning: str = DEFAULT_TUNING, static_batch: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """Export the UNet of ``unet_ckpt`` (``ema.pt`` or its run folder) and the decoder of ``store``.

    Args:
        formats: ``auto`` (by device: ``DEFAULT_FORMATS``) or any of the registry's formats (``aoti``,
            ``torchscript``, ``onnx``, ``ep``, ``tensorrt``).
        batch: humans per UNet call the engines are tuned for (TensorRT's optimal profile, CUDA graphs);
            engines accept any batch from 1 to ``max(batch, MIN_MAX_BATCH)``, or with ``static_batch``
            exactly ``batch`` for the UNet (shapes fixed at export, as the compiled torch path's; the
            runtime pads smaller groups).
        dtype: compute dtype ``fp32``, ``fp16`` or ``bf16`` (network I/O stays float32 / int64).
        overrides: ``section.key=value`` changes to the UNet run's config; its ``sample`` and ``render``
            sections are recorded as the runtime's defaults.
        device: where the engines are built and checked (default CUDA when available). AOTInductor,
            TorchScript, TensorRT and ``ep`` artifacts run only on that kind of device; ONNX anywhere.
        unet_layout: ``parts``, ``whole`` or ``both`` (see ``UNET_LAYOUTS``).
        cxx: the C++ compiler for AOTInductor (default: the first of ``$CXX``, g++, c++, clang++ whose
            packages load here).
        aoti_tuning: the Inductor settings of AOTInductor packages (``plain``, ``frozen``, ``autotune``:
            see ``humanliff.runtime.formats.aoti_compiler.TUNINGS``), recorded per artifact.

    Returns the manifest (also written to ``out_dir/manifest.json``).
    """
    device = default_device(device)
    formats = parse_formats(formats, device)
    if dtype not in PRECISIONS:
        raise HumanLiffError(f"--dtype {dtype} is not one of {', '.join(PRECISIONS)}")
    if batch < 1:
        raise HumanLiffError(f"--engine-batch must be at least 1, got {batch}")
    if unet_layout not in UNET_LAYOUTS:
        raise HumanLiffError(f"--unet-layout {unet_layout} is not one of {', '.join(UNET_LAYOUTS)}")
    if aoti_tuning not in TUNINGS:
        raise HumanLiffError(f"--aoti-tuning {aoti_tuning} is not one of {', '.join(TUNINGS)}")
    unet, unet_cfg = load_ema(unet_ckpt, device)
    schedule = read_schedule(unet_ckpt)  # a distilled student's: the manifest's "distilled"
    triplanes = open_store(store)
    check_layout(unet_cfg.triplane, triplanes, f"the UNet in {unet_ckpt}")
    cfg = unet_cfg.with_overrides(overrides)
    res, channels, compute = unet_cfg.triplane.resolution, unet_cfg.triplane.channels, PRECISIONS[dtype]
    if channels != CHANNELS:
        raise HumanLiffError(f"{unet_ckpt}: {channels} tri-plane channels; the decoder graph needs "
                             f"{CHANNELS}")
    max_batch = max(batch, MIN_MAX_BATCH)
    render = cfg.render
    points = min(ray_chunk(render.chunk, device) * (render.n_samples + render.n_importance), MAX_POINTS)
    unet_batches = (batch, batch) if static_batch else (1, max_batch)
    jobs, unet_record = _unet_jobs(unet, unet_cfg, unet_layout, unet_batches, batch, compute)
    jobs.append((DecoderGraph(torch_decoder(triplanes, device), compute), decoder_spec(res, channels, max_batch),
                 {"batch": 1, "points": points}))
    if cxx is not None and "aoti" in formats:
        candidates(cxx)  # a --cxx that does not exist: one line before any compute
    options: dict[str, Any] = {"opset": opset, "cxx": cxx, "aoti_tuning": aoti_tuning}
    bounds = triplanes.subject_bounds(0)
    K, R, T = orbit_cameras(bounds, cfg.sample.views, cfg.sample.image_size)
    with atomic_path(out_dir) as tmp, removed_if_killed(tmp):  # a C++ abort leaves no temporary folder
        tmp.mkdir()
        lowered = shared_compute_weights([graph for graph, _, _ in jobs])  # one lowered UNet for its parts
        networks = {spec.name: export_network(graph, spec, opt, tmp, formats, device, dtype, options, progress,
                                              lowered=low)
                    for (graph, spec, opt), low in zip(jobs, lowered, strict=True)}
        del lowered
        manifest = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "layers": NUM_LAYERS,
            "batch": batch,
            "compute_dtype": dtype,
            "opset": opset,
            "diffusion": dataclasses.asdict(unet_cfg.diffusion),
            "triplane": {"resolution": res, "channels": channels, "layout": TRIPLANE_LAYOUT},
            "bounds": bounds.tolist(),
            "cameras": {"K": K.tolist(), "R": R.tolist(), "T": T.tolist(),
                        "image_size": cfg.sample.image_size},
            "decoder": dict(triplanes.decoder_config),
            "render": dataclasses.asdict(cfg.render),
            "sample": dataclasses.asdict(cfg.sample),
            "sources": {"unet": str(unet_ckpt), "store": str(store)},
            "unet": unet_record,
            "networks": networks,
            **({"distilled": schedule.to_record()} if schedule else {}),
        }
        write_manifest(tmp, manifest)
    remember_written(out_dir, manifest)
    return {"format": "humanliff-artifacts", **manifest}
