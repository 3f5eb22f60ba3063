"""ONNX export of an ExportedProgram (torch's dynamo exporter, opset 18 or 19, dynamic dims kept)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from humanliff.errors import HumanLiffError
from humanliff.export.spec import ExportSpec

OPSETS = (18, 19)
"""Supported opsets. Not 20: its GridSample ('linear' mode) is then sampled wrongly by TensorRT."""
EXTERNAL_DATA_BYTES = 1 << 30
"""Weights above this size go to an external ``<name>.onnx.data`` file (protobuf's limit is 2 GiB)."""


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


def export_onnx(program: torch.export.ExportedProgram, spec: ExportSpec, path: str | Path,
                opset: int = OPSETS[0]) -> list[Path]:
    """Write ``program`` as ONNX at ``path``, check it with ``onnx.checker``; return the files written."""
    if opset not in OPSETS:
        raise HumanLiffError(f"ONNX opset {opset} is not supported (use {' or '.join(map(str, OPSETS))}; "
                             "opset 20 changes GridSample, which TensorRT then samples wrongly)")
    import onnx

    path = Path(path)
    weights = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
        torch.onnx.export(program, (), str(path), input_names=[s.name for s in spec.inputs],
                          output_names=[s.name for s in spec.outputs], opset_version=opset, dynamo=True,
                          external_data=weights > EXTERNAL_DATA_BYTES, verbose=False)
    onnx.checker.check_model(str(path))
    return [path] + sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())
