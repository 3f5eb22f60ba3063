"""``ep``: the ``torch.export`` program saved with ``torch.export.save``, run by torch itself (any device).

The most portable torch format: it needs no model code, but torch runs it op by op (``--compile`` lets
Inductor compile it when loaded on CUDA, which costs minutes at the first call).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from humanliff.runtime.errors import InputFileError
from humanliff.runtime.formats.base import Engine, Format, WriteJob


class ExportedProgramEngine(Engine):
    """``torch.export.load`` of the program, moved to the engine's device."""

    format = "ep"

    def _load(self) -> None:
        try:
            program = torch.export.load(str(self.path))
        except Exception as exc:
            problem = f"not a loadable torch.export program ({exc.__class__.__name__})"
            raise InputFileError(self.path, problem) from exc
        self._module = program.module().to(self.device)
        if self.compile and self.device.type == "cuda":  # Inductor kernels, JIT: the AOTI of this format
            self._module = torch.compile(self._module)
            self.compiled = True

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        if not self.compiled:
            with torch.inference_mode():
                return self._module(*args)
        # weights folded into the compiled graph as constants (their layout and dtype conversions done once)
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            return self._module(*args)

    def close(self) -> None:
        self._module = None


def write_ep(job: WriteJob) -> list[Path]:
    """``torch.export.save`` of the traced program."""
    path = job.path(FORMAT)
    torch.export.save(job.program, str(path))
    return [path]


FORMAT = Format("ep", ("{}.ep.pt2",), ExportedProgramEngine, write_ep, rank=4, graphable=True,
                summary="torch.export program, run by torch (optionally compiled at load)")
