"""``aoti``: an AOTInductor package (``<name>.pt2``): the network compiled ahead of time to a shared library.

Weights are kept outside the library, as one binary blob inside the package, so the library stays small
and the package loader copies them to the device once. The runtime loads it with the C++
``AOTIModelPackageLoader`` in single-threaded mode (no Inductor import, nothing compiled at run time;
the call runs on the current CUDA stream and can be captured into a CUDA graph).

A package built with a broken C++ toolchain crashes the process that loads it (a segmentation fault in
the model's constructor, seen with the GPU image's ``/opt/gcc/bin/g++`` wrapper), so the compiler is
chosen by building and loading a tiny package with each candidate in a subprocess (cached per machine,
see :mod:`humanliff.runtime.formats.aoti_compiler`), and every package is checked in a subprocess.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.formats.aoti_compiler import TUNINGS, choose_compiler, compile_package
from humanliff.runtime.formats.base import (
    Engine,
    EngineUnavailable,
    Format,
    Reference,
    WriteJob,
    check_outputs,
    device_key,
    run_isolated,
)
from humanliff.runtime.manifest import DTYPES


def package_runner(path: Path, device: torch.device) -> Any:
    """The C++ package loader on ``path`` (single-threaded, one runner) for ``device``."""
    index = device.index if device.index is not None else (0 if device.type == "cuda" else -1)
    return torch._C._aoti.AOTIModelPackageLoader(str(path), "model", True, 1, index)


def check_package(path: Path, device: torch.device, args: Sequence[torch.Tensor], timeout: float = 900.0
                  ) -> tuple[str, list[torch.Tensor] | None, float | None]:
    """Load and run a package in a subprocess, so that a crash cannot end this process.

    Returns ``(outcome, outputs on the CPU, load seconds)``: ``("ok", [...], s)`` or
    ``("crashed (signal 11)" | "error: ...", None, None)``.
    """
    with tempfile.TemporaryDirectory(prefix="humanliff-aoti-") as tmp:
        feeds, result = Path(tmp) / "inputs.pt", Path(tmp) / "outputs.pt"
        torch.save([a.cpu() for a in args], feeds)
        code = "import sys; from humanliff.runtime.formats.aoti import _check_child; _check_child(*sys.argv[1:])"
        outcome = run_isolated(code, [str(path), str(device), str(feeds), str(result)], timeout)
        if outcome != "ok":
            return outcome, None, None
        outs, load_s = torch.load(result)
        return outcome, outs, load_s


def _check_child(path: str, device: str, feeds: str, result: str) -> None:
    """Subprocess side of :func:`check_package`."""
    dev = torch.device(device)
    start = time.perf_counter()
    runner = package_runner(Path(path), dev)
    load_s = time.perf_counter() - start
    with torch.inference_mode():
        outs = runner.boxed_run([a.to(dev) for a in torch.load(feeds)])
    torch.save(([o.cpu() for o in outs], load_s), result)


class AOTIEngine(Engine):
    """An AOTInductor package run by the C++ package loader.

    The manifest records the loader's outcome at export (``artifact["loader"]`` and the ``checked_on``
    torch/device key); on another torch or device the package is first loaded in a subprocess, since a
    package that does not load here crashes the process instead of raising.
    """

    format = "aoti"

    def _load(self) -> None:
        if self.artifact.get("checked_on") != device_key(self.device):
            outcome, _, _ = check_package(self.path, self.device, self._probe_inputs())
        else:
            outcome = self.artifact.get("loader", "not checked")
        if outcome != "ok":
            raise EngineUnavailable(f"{self.path.name} does not load here ({outcome})")
        self._runner = package_runner(self.path, self.device)

    def _probe_inputs(self) -> list[torch.Tensor]:
        dims = {k: v[0] for k, v in self.spec.dims.items()}
        return [torch.zeros(s.resolve(dims), dtype=DTYPES[s.dtype]) for s in self.spec.inputs]

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            return self._runner.boxed_run(list(args))

    def close(self) -> None:
        self._runner = None


def write_aoti(job: WriteJob) -> list[Path]:
    """Compile the program into a package with the first C++ compiler whose packages load here.

    ``job.options["cxx"]`` forces a compiler; ``job.options["aoti_tuning"]`` names the Inductor settings
    (``aoti_compiler.TUNINGS``, default ``plain``). The choice (or why there is none) is kept in
    ``job.options["compiler_choice"]``, which the export shares between its networks, so the compilers
    are tried once per export; the one used and the candidates' outcomes go into ``job.options``
    (``compiler``, ``compilers``) for the manifest.
    """
    choice = job.options.get("compiler_choice")
    if choice is None:
        try:
            choice = choose_compiler(job.device, job.options.get("cxx"))
        except EngineUnavailable as exc:
            choice = exc
        job.options["compiler_choice"] = choice
    if isinstance(choice, EngineUnavailable):
        raise choice
    cxx, tried = choice
    job.options.update(compiler=cxx, compilers=tried)
    path = job.path(FORMAT)
    compile_package(job.program, path, cxx, job.options.get("aoti_tuning", "plain"))
    return [path]


def verify_aoti(fmt: Format, files: list[Path], job: WriteJob, feeds: Mapping[str, torch.Tensor],
                reference: Reference, record: dict[str, Any]) -> dict[str, Any]:
    """Load the package in a subprocess and compare with torch; records the loader's outcome and time."""
    outcome, outs, load_s = check_package(files[0], job.device, list(feeds.values()))
    tuning = job.options.get("aoti_tuning", "plain")
    record.update(loader=outcome, checked_on=device_key(job.device), compiler=job.options.get("compiler"),
                  compilers=job.options.get("compilers"), tuning=tuning, inductor_configs=TUNINGS[tuning])
    if outs is None:
        return {"passed": False, "error": f"the package does not load: {outcome}"}
    record["load_s"] = round(load_s, 3)
    return check_outputs(dict(zip([s.name for s in job.spec.outputs], outs, strict=True)), reference,
                         job.precision)


FORMAT = Format("aoti", ("{}.pt2",), AOTIEngine, write_aoti, rank=1, graphable=True, verify=verify_aoti,
                summary="AOTInductor package (compiled library, weights as a blob), C++ loader")
