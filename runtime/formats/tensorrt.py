"""``tensorrt``: a TensorRT plan built from our ONNX with TensorRT's Python API (needs ``tensorrt``).

One optimization profile per network (min / opt / max from the manifest's dims), fp16 or bf16 kernels
when asked, a timing cache reused across builds; the engine binds tensors by ``data_ptr`` and runs
``execute_async_v3`` on the current torch stream (so it can be CUDA-graphed). ``tensorrt`` cannot be
installed on our machines, so this path is written to TensorRT's documented API and has not been run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.errors import HumanLiffError, InputFileError
from humanliff.runtime.formats.base import Engine, EngineUnavailable, Format, WriteJob
from humanliff.runtime.manifest import NetworkSpec


def import_tensorrt() -> Any:
    """Import ``tensorrt`` or raise one clear line saying what is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailable(
            "tensorrt is not installed: the TensorRT path needs NVIDIA's tensorrt Python package on a CUDA "
            "machine (pip install tensorrt); use the aoti, torchscript, onnx or ep formats without it") from exc
    return tensorrt


class TensorRTEngine(Engine):
    """A deserialized TensorRT plan with one execution context."""

    format = "tensorrt"

    def _load(self) -> None:
        trt = import_tensorrt()
        if self.device.type != "cuda":
            raise EngineUnavailable("TensorRT needs a CUDA device")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise InputFileError(self.path, "TensorRT cannot deserialize this plan (built by another "
                                            "TensorRT version or for another GPU?)")
        self._context = self._engine.create_execution_context()

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        outs = self.output_buffers(dims)
        for spec, tensor in zip(self.spec.inputs, args, strict=True):
            self._context.set_input_shape(spec.name, tuple(tensor.shape))
            self._context.set_tensor_address(spec.name, tensor.data_ptr())
        for spec, tensor in zip(self.spec.outputs, outs, strict=True):
            self._context.set_tensor_address(spec.name, tensor.data_ptr())
        if not self._context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise HumanLiffError(f"{self.path}: TensorRT execution failed")
        return outs

    def close(self) -> None:
        self._context = self._engine = self._runtime = None


def profile(spec: NetworkSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """TensorRT optimization profile: input name -> ``(min shape, opt shape, max shape)``."""
    lows, opts, highs = ({k: v[i] for k, v in spec.dims.items()} for i in range(3))
    return {s.name: (s.resolve(lows), s.resolve(opts), s.resolve(highs)) for s in spec.inputs}


def build_plan(onnx_path: str | Path, plan_path: str | Path, spec: NetworkSpec, precision: str = "fp16",
               timing_cache: str | Path | None = None) -> Path:
    """Build a serialized TensorRT plan from ``onnx_path`` with ``spec``'s profile.

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
    shapes = builder.create_optimization_profile()
    for name, (low, best, high) in profile(spec).items():
        shapes.set_shape(name, low, best, high)
    config.add_optimization_profile(shapes)
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


def write_tensorrt(job: WriteJob) -> list[Path]:
    """Build the plan from the network's ONNX file (written first, see ``builds_from``)."""
    from humanliff.runtime.formats.onnx import FORMAT as ONNX

    return [build_plan(job.path(ONNX), job.path(FORMAT), job.spec, job.precision,
                       job.folder / "tensorrt_timing.cache")]


FORMAT = Format("tensorrt", ("{}.plan",), TensorRTEngine, write_tensorrt, rank=0, graphable=True,
                builds_from="onnx", summary="TensorRT plan built from the ONNX file (not run here)")
