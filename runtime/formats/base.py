"""What every engine format shares: the ``Format`` record, the ``Engine`` interface and the write job.

A format is one module in this package holding one :class:`Format`: its file names, the writer that
turns a traced network into those files, the :class:`Engine` that runs them, how the written files are
checked against torch, and what the runtime may do with it (run on another device, capture it into a
CUDA graph, its place in the preference order). The export stage, the manifest and the runtime all read
these records, so a new format is one new module plus its line in ``formats/__init__.py``.

Engine lifecycle: ``engine = SomeEngine(path, spec, device, artifact).load()``; ``engine(**feeds) ->
{output name: tensor}``; ``engine.close()``. Feeds are torch tensors named and shaped as the manifest
says; they are checked, then cast and moved to the engine's device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.errors import HumanLiffError
from humanliff.runtime.manifest import DTYPES, NetworkSpec, check_feeds

TOLERANCE = {"fp32": 2e-3, "fp16": 3e-2, "bf16": 6e-2}
"""Largest max relative error against float32 accepted per compute dtype (fp32 allows for TF32
convolutions on GPUs); raised to ``TORCH_ERROR_FACTOR`` x torch's own error where that is larger."""
TORCH_ERROR_FACTOR = 2.0
"""An engine may be at most this many times as far from float32 as torch's eager path in the same dtype."""


class EngineUnavailable(HumanLiffError):
    """This engine cannot be built or run here (package absent, no GPU, no working loader): try the next."""


class Engine:
    """One network behind ``__call__(**feeds) -> outputs``; subclasses implement ``_load`` and ``_run``."""

    format = ""
    compiled = False
    """True once loading wrapped the artifact in ``torch.compile`` (its first call compiles)."""

    def __init__(self, path: str | Path, spec: NetworkSpec, device: str | torch.device = "cpu",
                 artifact: Mapping[str, Any] | None = None, *, compile: bool = False) -> None:
        self.path = Path(path)
        self.spec = spec
        self.device = torch.device(device)
        self.artifact = dict(artifact or {})
        self.compile = compile  # torch-run formats (``ep``) compile their program with Inductor on CUDA

    def load(self) -> Engine:
        """Load the artifact; returns ``self``."""
        self._load()
        return self

    def __call__(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run once: feeds named as the manifest's inputs -> ``{output name: tensor}``."""
        dims = check_feeds(self.path, self.spec, feeds)
        args = [feeds[s.name].to(self.device, DTYPES[s.dtype]).contiguous() for s in self.spec.inputs]
        outs = self._run(args, dims)
        outs = (outs,) if isinstance(outs, torch.Tensor) else outs
        return {s.name: o for s, o in zip(self.spec.outputs, outs, strict=True)}

    def close(self) -> None:
        """Release the loaded artifact."""

    def output_buffers(self, dims: Mapping[str, int]) -> list[torch.Tensor]:
        """Fresh output tensors with the symbols resolved from the inputs' sizes."""
        return [torch.empty(s.resolve(dims), dtype=DTYPES[s.dtype], device=self.device)
                for s in self.spec.outputs]

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        """Run on checked, cast inputs (in manifest order); a single output may come back bare."""
        raise NotImplementedError


@dataclass
class WriteJob:
    """One network to write in one format: the traced program, the module it came from, where and how.

    ``example`` are inputs of the trace (on ``device``), in ``spec.inputs`` order. ``options`` carries the
    export's switches (``opset``, ``cxx``, ``precision``) and the writers' notes back (``compiler``).
    """

    name: str
    program: torch.export.ExportedProgram
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    spec: NetworkSpec
    folder: Path
    device: torch.device
    precision: str
    options: dict[str, Any] = field(default_factory=dict)

    def path(self, fmt: Format, index: int = 0) -> Path:
        """Where file ``index`` of ``fmt`` goes for this network."""
        return self.folder / fmt.files[index].format(self.name)


@dataclass(frozen=True)
class Reference:
    """What a written engine is checked against: the network in float32 on the check's feeds.

    ``torch_rel_err`` is torch's own eager path in the export's compute dtype against ``outputs`` (0 for
    fp32): a bf16 engine is judged by its distance from float32, not from another bf16 rounding.
    """

    outputs: Mapping[str, torch.Tensor]
    torch_rel_err: float = 0.0


Verifier = Callable[["Format", list[Path], WriteJob, Mapping[str, torch.Tensor], Reference,
                     dict[str, Any]], dict[str, Any] | None]


def max_rel_error(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """``max |out - ref| / max |ref|``, the largest over the named outputs (compared on the CPU in fp64)."""
    worst = 0.0
    for name, ref in reference.items():
        ref64, out64 = ref.detach().cpu().double(), outputs[name].detach().cpu().double()
        scale = max(ref64.abs().max().item(), 1e-12)
        worst = max(worst, (out64 - ref64).abs().max().item() / scale)
    return worst


def check_outputs(outputs: Mapping[str, torch.Tensor], reference: Reference, precision: str) -> dict[str, Any]:
    """The manifest's ``check`` record: ``{max_rel_err, torch_rel_err, tolerance, passed}`` (against fp32)."""
    error = max_rel_error(outputs, reference.outputs)
    tolerance = max(TOLERANCE[precision], TORCH_ERROR_FACTOR * reference.torch_rel_err)
    return {"max_rel_err": error, "torch_rel_err": reference.torch_rel_err, "tolerance": tolerance,
            "passed": bool(error <= tolerance)}


def verify_in_process(fmt: Format, files: list[Path], job: WriteJob, feeds: Mapping[str, torch.Tensor],
                      reference: Reference, record: dict[str, Any]) -> dict[str, Any]:
    """Load the written files with the format's engine here (timed: ``load_s``), compare with torch."""
    start = time.perf_counter()
    engine = fmt.engine(files[0], job.spec, job.device, record).load()
    record["load_s"] = round(time.perf_counter() - start, 3)
    try:
        with torch.inference_mode():
            return check_outputs(engine(**feeds), reference, job.precision)
    finally:
        engine.close()


@dataclass(frozen=True)
class Format:
    """One engine format: its files, writer, engine, checker and what the runtime may do with it."""

    name: str
    files: tuple[str, ...]
    """File name templates (``"{}.pt2"``, filled with the network's name); the engine file first."""
    engine: type[Engine]
    write: Callable[[WriteJob], list[Path]]
    """Writes the network's files (the engine file first); raises ``EngineUnavailable`` when it cannot
    be built here (a package absent), any other exception when the build failed."""
    rank: int
    """Place in the runtime's preference order (lower first: fastest loaded engines before portable ones)."""
    portable: bool = False
    """Runs on any device; the others only on the device type they were exported on."""
    graphable: bool = False
    """Its call can be captured into a torch CUDA graph."""
    builds_from: str | None = None
    """A format whose files this one is built from (TensorRT from ONNX): exported first."""
    verify: Verifier = verify_in_process
    summary: str = ""

    def file_name(self, network: str) -> str:
        """File name of ``network``'s engine file in this format (``unet.pt2``, ``decoder.ts``, ...)."""
        return self.files[0].format(network)


def run_isolated(code: str, args: Sequence[str], timeout: float = 600.0,
                 env: Mapping[str, str] | None = None) -> str:
    """Run ``python -c code args...`` in a subprocess: ``ok``, ``crashed (signal N)`` or ``error: ...``."""
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout, env=None if env is None else dict(env))
    except subprocess.TimeoutExpired:
        return f"error: timed out after {timeout:.0f} s"
    if proc.returncode < 0:
        return f"crashed (signal {-proc.returncode})"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return f"error: {lines[-1][:300] if lines else f'exit code {proc.returncode}'}"
    return "ok"


def cache_dir() -> Path:
    """``$HUMANLIFF_CACHE`` or ``~/.cache/humanliff``: the default model's artifacts, compiler checks."""
    return Path(os.environ.get("HUMANLIFF_CACHE", Path.home() / ".cache" / "humanliff"))


def device_key(device: torch.device) -> str:
    """What a loader check depends on: torch version plus device name (``2.13.0+cpu/cpu``)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{torch.__version__}/{name}"
