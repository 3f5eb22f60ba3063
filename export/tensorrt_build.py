"""TensorRT engines built from our ONNX with the TensorRT Python API (needs ``tensorrt``).

One optimization profile per network (min / opt / max from the export spec), fp16 or bf16 kernels when
asked, and a timing cache reused across builds. ``humanliff.runtime.engines.TensorRTEngine`` runs the
plan. ``tensorrt`` cannot be installed on our machines, so this path has not been run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from humanliff.errors import HumanLiffError, InputFileError
from humanliff.export.spec import ExportSpec
from humanliff.runtime.engines import import_tensorrt


def build_engine(onnx_path: str | Path, plan_path: str | Path, spec: ExportSpec, opt: Mapping[str, int],
                 precision: str = "fp16", timing_cache: str | Path | None = None) -> Path:
    """Build a serialized TensorRT plan from ``onnx_path``; ``opt`` gives each dynamic dim's optimal size.

    ``precision`` (``fp32``, ``fp16``, ``bf16``) enables the reduced-precision kernels; ``timing_cache``
    is read if present and written back after the build.
    """
    trt = import_tensorrt()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputFileError(onnx_path, f"TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for name, (low, best, high) in spec.profile(opt).items():
        profile.set_shape(name, low, best, high)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise HumanLiffError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    plan_path.write_bytes(bytes(plan))
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path
