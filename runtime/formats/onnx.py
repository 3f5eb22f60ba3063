"""``onnx``: torch's dynamo ONNX exporter (opset 18 or 19, dynamic dims kept), run by ONNX Runtime.

Portable across devices: ONNX Runtime runs it on the CPU, or with its CUDA provider where installed.
Tensors are bound by ``data_ptr``; ONNX Runtime runs on its own streams, so it is not CUDA-graphed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.errors import HumanLiffError, InputFileError
from humanliff.runtime.formats.base import Engine, EngineUnavailable, Format, WriteJob
from humanliff.runtime.manifest import DTYPES

log = logging.getLogger(__name__)

OPSETS = (18, 19)
"""Supported opsets. Not 20: its GridSample ('linear' mode) is then sampled wrongly by TensorRT."""
EXTERNAL_DATA_BYTES = 1 << 30
"""Weights above this size go to an external ``<name>.onnx.data`` file (protobuf's limit is 2 GiB)."""
BINDABLE = ("float32", "float16", "int64")
"""Engine I/O dtypes that ONNX Runtime's bindings take from torch (numpy has no bfloat16)."""


def import_onnxruntime() -> Any:
    """Import ``onnxruntime`` or raise one clear line saying what is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailable("onnxruntime is not installed: pip install onnxruntime "
                                "(or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def _numpy_dtype(dtype: torch.dtype) -> Any:
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}[dtype]


class OnnxEngine(Engine):
    """ONNX Runtime session (CUDA provider on a CUDA device if present, else the CPU)."""

    format = "onnx"

    def _load(self) -> None:
        ort = import_onnxruntime()
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device.index or 0}))
            else:
                log.warning("onnxruntime has no CUDA provider here: %s runs on the CPU", self.path.name)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:
            problem = f"onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})"
            raise InputFileError(self.path, problem) from exc
        names = [i.name for i in self._session.get_inputs()]
        if names != [s.name for s in self.spec.inputs]:
            raise InputFileError(self.path, f"inputs {names} disagree with the manifest's "
                                            f"{[s.name for s in self.spec.inputs]}")
        self._where = "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        where = torch.device("cuda", self.device.index or 0) if self._where == "cuda" else torch.device("cpu")
        args = [a.to(where) for a in args]
        outs = [torch.empty(s.resolve(dims), dtype=DTYPES[s.dtype], device=where) for s in self.spec.outputs]
        binding = self._session.io_binding()
        for spec, tensor in zip(self.spec.inputs + self.spec.outputs, args + outs, strict=True):
            bind = binding.bind_input if spec in self.spec.inputs else binding.bind_output
            bind(spec.name, self._where, where.index or 0, _numpy_dtype(tensor.dtype), tuple(tensor.shape),
                 tensor.data_ptr())
        if self._where == "cuda":
            torch.cuda.current_stream(where).synchronize()
        self._session.run_with_iobinding(binding)
        return [o.to(self.device) for o in outs]

    def close(self) -> None:
        self._session = None


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the given loggers to WARNING for the duration (the exporter logs every rewrite at INFO)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def write_onnx(job: WriteJob) -> list[Path]:
    """Write the program as ONNX (``options["opset"]``), check it with ``onnx.checker``; return the files."""
    opset = int(job.options.get("opset", OPSETS[0]))
    if opset not in OPSETS:
        raise HumanLiffError(f"ONNX opset {opset} is not supported (use {' or '.join(map(str, OPSETS))}; "
                             "opset 20 changes GridSample, which TensorRT then samples wrongly)")
    odd = sorted({s.dtype for s in job.spec.inputs + job.spec.outputs} - set(BINDABLE))
    if odd:
        raise EngineUnavailable(f"ONNX Runtime cannot bind {', '.join(odd)} tensors from torch (the {job.name} "
                                "part's I/O); export with --dtype fp32 or fp16 for ONNX")
    import onnx

    path = job.path(FORMAT)
    weights = sum(t.numel() * t.element_size() for t in job.program.state_dict.values())
    with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
        torch.onnx.export(job.program, (), str(path), input_names=[s.name for s in job.spec.inputs],
                          output_names=[s.name for s in job.spec.outputs], opset_version=opset, dynamo=True,
                          external_data=weights > EXTERNAL_DATA_BYTES, verbose=False)
    onnx.checker.check_model(str(path))
    return [path] + sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())


FORMAT = Format("onnx", ("{}.onnx",), OnnxEngine, write_onnx, rank=3, portable=True,
                summary="ONNX (opset 18/19), run by ONNX Runtime on any device")
