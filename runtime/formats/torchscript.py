"""``torchscript``: the network traced with ``torch.jit.trace``, frozen, saved as ``<name>.ts``.

Loads with ``torch.jit.load`` in any process (no model code, no humanliff import) and in C++ with
``torch::jit::load``. Traced under the export's autocast, so the reduced-precision casts are in the
graph; run with TorchScript's optimizing executor off, so nothing is fused or compiled at run time.
It runs on the current CUDA stream and can be captured into a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from humanliff.runtime.errors import InputFileError
from humanliff.runtime.formats.base import Engine, Format, WriteJob


class TorchScriptEngine(Engine):
    """``torch.jit.load`` onto the engine's device; runs with the optimizing executor off."""

    format = "torchscript"

    def _load(self) -> None:
        try:
            self._module = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:
            problem = f"not a loadable TorchScript module ({str(exc).strip().splitlines()[0][:200]})"
            raise InputFileError(self.path, problem) from exc

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return self._module(*args)

    def close(self) -> None:
        self._module = None


def write_torchscript(job: WriteJob) -> list[Path]:
    """Trace the module on the example inputs, freeze it (weights as constants) and save it."""
    path = job.path(FORMAT)
    with torch.inference_mode(False), torch.no_grad():
        traced = torch.jit.trace(job.module.eval(), job.example, check_trace=False)
        frozen = torch.jit.freeze(traced)
    frozen.save(str(path))
    return [path]


FORMAT = Format("torchscript", ("{}.ts",), TorchScriptEngine, write_torchscript, rank=2, graphable=True,
                summary="TorchScript (traced, frozen), loadable with torch.jit.load and from C++")
