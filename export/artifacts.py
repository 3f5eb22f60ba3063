"""Checkpoint to artifacts folder: every network in every format asked for, each checked, plus the manifest.

``export_artifacts`` traces the UNet (with its control branch) and the decoder graph (tri-plane sampling
plus the decoder) once with ``torch.export``, then writes each format from that program, times it,
checks it against torch on fresh random inputs and records the outcome in ``manifest.json`` (see
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

from humanliff import NUM_LAYERS
from humanliff.config import Config, DecoderConfig
from humanliff.errors import HumanLiffError
from humanliff.export.aoti import compile_aoti
from humanliff.export.onnx_export import OPSETS, export_onnx
from humanliff.export.spec import (
    MAX_POINTS,
    PRECISIONS,
    DecoderGraph,
    ExportSpec,
    UNetGraph,
    decoder_spec,
    unet_spec,
)
from humanliff.export.tensorrt_build import build_engine
from humanliff.export.verify import verify_aoti, verify_engine
from humanliff.io import atomic_path
from humanliff.models.checkpoint import load_ema
from humanliff.models.decoder import build_decoder
from humanliff.runtime.cameras import orbit_cameras
from humanliff.runtime.engines import ENGINES, EngineUnavailable
from humanliff.runtime.manifest import artifact_name, sha256_file, write_manifest
from humanliff.runtime.render import ray_chunk
from humanliff.runtime.triplane import CHANNELS
from humanliff.training.store import TriplaneStore, open_store

log = logging.getLogger(__name__)

FORMATS = ("ep", "onnx", "aoti", "tensorrt")
"""Export formats, in the order they are written (TensorRT builds from the ONNX file)."""
TRIPLANE_LAYOUT = ("channel = plane*9 + group*3 + c; planes XY, XZ, ZY; groups sampled at (u, v), "
                   "(u + 1/R, v), (u, v + 1/R); bilinear, zero padding, align_corners=False; points "
                   "normalized per axis by the box")
MIN_MAX_BATCH = 4
"""Engines accept any batch from 1 to ``max(batch, MIN_MAX_BATCH)``."""
CHECK_SEED = 1234
"""Seed of the fresh random inputs of the checks (the trace uses seed 0 and other sizes)."""


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """``"onnx,aoti"`` -> ``["onnx", "aoti"]``, checked; TensorRT brings the ONNX it is built from."""
    names = [f.strip() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise HumanLiffError(f"unknown export format(s) {', '.join(unknown) or '(none)'} "
                             f"(choose from {', '.join(FORMATS)})")
    if "tensorrt" in names and "onnx" not in names:
        names.append("onnx")
    return [f for f in FORMATS if f in names]


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


def _write_format(fmt: str, program: torch.export.ExportedProgram, spec: ExportSpec, folder: Path,
                  example: Mapping[str, torch.Tensor], opt: Mapping[str, int], precision: str, opset: int
                  ) -> list[Path]:
    """Write one format of one network into ``folder``; returns its files (the engine file first)."""
    path = folder / artifact_name(spec.name, fmt)
    if fmt == "ep":
        torch.export.save(program, str(path))
        return [path]
    if fmt == "onnx":
        return export_onnx(program, spec, path, opset)
    if fmt == "aoti":
        return compile_aoti(program, list(example.values()), path)
    onnx_path = folder / artifact_name(spec.name, "onnx")
    return [build_engine(onnx_path, path, spec, opt, precision, folder / "tensorrt_timing.cache")]


def _check_format(fmt: str, files: list[Path], spec: ExportSpec, opt: Mapping[str, int], device: torch.device,
                  feeds: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], precision: str,
                  record: dict[str, Any]) -> dict[str, Any] | None:
    """Check a written artifact against ``reference``; AOTInductor adds its loader outcomes to ``record``."""
    if fmt == "aoti":
        names = [s.name for s in spec.outputs]
        record.update(verify_aoti(files[0], names, device, feeds, reference, precision))
        return record.pop("check")
    engine = ENGINES[fmt](files[0], spec.network_spec(opt), device, record).load()
    try:
        return verify_engine(engine, feeds, reference, precision)
    finally:
        engine.close()


def export_network(graph: torch.nn.Module, spec: ExportSpec, opt: Mapping[str, int], folder: Path,
                   formats: Sequence[str], device: torch.device, precision: str, opset: int = OPSETS[0],
                   progress: bool = False) -> dict[str, Any]:
    """Trace ``graph`` once and write/check each format; returns the manifest's record of the network."""
    trace_sizes = {k: min(max(2, low), high) if k == "batch" else min(64, high)
                   for k, (low, high) in spec.dims.items()}
    example = spec.sample_inputs(trace_sizes, torch.Generator().manual_seed(0), device)
    start = time.perf_counter()
    program = torch.export.export(graph, tuple(example.values()), dynamic_shapes=spec.dynamic_shapes())
    trace_s = time.perf_counter() - start
    check_sizes = {k: min(3, high) if k == "batch" else min(777, high) for k, (_, high) in spec.dims.items()}
    feeds = spec.sample_inputs(check_sizes, torch.Generator().manual_seed(CHECK_SEED), device)
    with torch.inference_mode():
        out = graph(**feeds)
    out = out if isinstance(out, tuple) else (out,)
    reference = dict(zip([s.name for s in spec.outputs], out, strict=True))
    artifacts: dict[str, Any] = {}
    for fmt in tqdm(formats, desc=f"export {spec.name}", unit="format", disable=not progress):
        start = time.perf_counter()
        try:
            files = _write_format(fmt, program, spec, folder, example, opt, precision, opset)
        except EngineUnavailable as exc:
            log.warning("%s: %s not built: %s", spec.name, fmt, exc)
            artifacts[fmt] = {"status": "not_run", "error": str(exc)}
            continue
        except Exception as exc:
            log.warning("%s: %s export failed: %s", spec.name, fmt, _one_line(exc))
            artifacts[fmt] = {"status": "failed", "error": _one_line(exc)}
            continue
        record: dict[str, Any] = {"files": {p.name: sha256_file(p) for p in files},
                                  "export_s": round(time.perf_counter() - start, 3), "device": device.type}
        start = time.perf_counter()
        try:
            check = _check_format(fmt, files, spec, opt, device, feeds, reference, precision, record)
        except Exception as exc:
            log.warning("%s: %s could not be checked here: %s", spec.name, fmt, _one_line(exc))
            check, record["check_error"] = None, _one_line(exc)
        record.update(check=check, check_sizes=check_sizes, check_s=round(time.perf_counter() - start, 3))
        record["status"] = "unverified" if check is None else ("ok" if check["passed"] else "failed")
        if check is not None:
            log.info("%s: %s max relative error %.2e (%s)", spec.name, fmt, check["max_rel_err"],
                     record["status"])
        artifacts[fmt] = record
    return {**spec.network_spec(opt).to_json(), "trace_s": round(trace_s, 3), "artifacts": artifacts}


def _check_store(store: TriplaneStore, cfg: Config, unet_ckpt: Path) -> None:
    expected = (cfg.triplane.channels, cfg.triplane.resolution)
    if (store.channels, store.resolution) != expected:
        raise HumanLiffError(f"{store.path}: tri-planes are {store.channels}x{store.resolution}^2 but the "
                             f"UNet in {unet_ckpt} expects {expected[0]}x{expected[1]}^2")


def export_artifacts(unet_ckpt: str | Path, store: str | Path, out_dir: str | Path,
                     formats: str | Sequence[str] = ("ep", "onnx"), batch: int = 1, dtype: str = "fp32", *,
                     overrides: Sequence[str] = (), device: str | torch.device | None = None,
                     opset: int = OPSETS[0], progress: bool = True) -> dict[str, Any]:
    """Export the UNet of ``unet_ckpt`` (``ema.pt`` or its run folder) and the decoder of ``store``.

    Args:
        formats: any of ``ep`` (torch.export program), ``onnx``, ``aoti`` (AOTInductor), ``tensorrt``.
        batch: humans per UNet call the engines are tuned for (TensorRT's optimal profile, CUDA graphs);
            engines accept any batch from 1 to ``max(batch, MIN_MAX_BATCH)``.
        dtype: compute dtype ``fp32``, ``fp16`` or ``bf16`` (engine I/O stays float32 / int64).
        overrides: ``section.key=value`` changes to the UNet run's config; its ``sample`` and ``render``
            sections are recorded as the runtime's defaults.
        device: where the engines are built and checked (default CUDA when available). AOTInductor and
            TensorRT artifacts run only on that kind of device; ONNX and ``ep`` run anywhere.

    Returns the manifest (also written to ``out_dir/manifest.json``).
    """
    formats = parse_formats(formats)
    if dtype not in PRECISIONS:
        raise HumanLiffError(f"--dtype {dtype} is not one of {', '.join(PRECISIONS)}")
    if batch < 1:
        raise HumanLiffError(f"--batch must be at least 1, got {batch}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unet, unet_cfg = load_ema(unet_ckpt, device)
    triplanes = open_store(store)
    _check_store(triplanes, unet_cfg, Path(unet_ckpt))
    cfg = unet_cfg.with_overrides(overrides)
    res, channels, compute = unet_cfg.triplane.resolution, unet_cfg.triplane.channels, PRECISIONS[dtype]
    if channels != CHANNELS:
        raise HumanLiffError(f"{unet_ckpt}: {channels} tri-plane channels; the decoder graph needs "
                             f"{CHANNELS}")
    max_batch = max(batch, MIN_MAX_BATCH)
    render = cfg.render
    points = min(ray_chunk(render.chunk, device) * (render.n_samples + render.n_importance), MAX_POINTS)
    steps = unet_cfg.diffusion.steps
    jobs = [(UNetGraph(unet, compute), unet_spec(res, channels, NUM_LAYERS, steps, max_batch),
             {"batch": batch}),
            (DecoderGraph(torch_decoder(triplanes, device), compute), decoder_spec(res, channels, max_batch),
             {"batch": 1, "points": points})]
    bounds = triplanes.subject_bounds(0)
    K, R, T = orbit_cameras(bounds, cfg.sample.views, cfg.sample.image_size)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        networks = {spec.name: export_network(graph, spec, opt, tmp, formats, device, dtype, opset, progress)
                    for graph, spec, opt in jobs}
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
            "networks": networks,
        }
        write_manifest(tmp, manifest)
    return {"format": "humanliff-artifacts", **manifest}
