"""Engines: one interface over the exported artifacts (TensorRT, AOTInductor, ONNX Runtime, torch.export).

Lifecycle: ``engine = SomeEngine(path, spec, device).load()``; ``engine(**feeds) -> {output name: tensor}``;
``engine.close()``. Feeds are torch tensors named and shaped as the manifest says (floats are float32,
ids int64); they are checked, then cast and moved to the engine's device. Outputs are fresh tensors on
the engine's device. ``load_engine`` picks the best artifact present; ``graphed`` replays a fixed-shape
call under a CUDA graph. onnxruntime and tensorrt are imported lazily, inside their engine.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.cuda_graph import capture_cuda_graph
from humanliff.runtime.errors import HumanLiffError, InputFileError
from humanliff.runtime.manifest import (
    DTYPES,
    MANIFEST_NAME,
    NetworkSpec,
    check_feeds,
    check_files,
    network_spec,
    read_manifest,
    usable_formats,
)

log = logging.getLogger(__name__)

PREFERENCE = ("tensorrt", "aoti", "onnx", "ep")
"""Formats from fastest to most portable: what ``load_engine`` tries, in order."""
AOTI_LOADERS = ("package", "package_loader", "so")
"""AOTInductor loaders: ``aoti_load_package``; the lower-level ``AOTIModelPackageLoader`` on the same
``.pt2``; the container runner on the plain ``.so`` from ``aot_compile``."""
PORTABLE = ("onnx",)
"""Formats that run on any device; the others run only on the device type they were exported on."""
GRAPHABLE = ("tensorrt", "aoti", "ep")
"""Formats whose call can be captured into a torch CUDA graph (ONNX Runtime runs on its own streams)."""


class EngineUnavailable(HumanLiffError):
    """This engine cannot run here (package absent, no GPU, no working loader): try the next format."""


def import_tensorrt() -> Any:
    """Import ``tensorrt`` or raise one clear line saying what is missing."""
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailable(
            "tensorrt is not installed: the TensorRT path needs NVIDIA's tensorrt Python package on a CUDA "
            "machine (pip install tensorrt); use the onnx, aoti or ep formats without it") from exc
    return tensorrt


def import_onnxruntime() -> Any:
    """Import ``onnxruntime`` or raise one clear line saying what is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise EngineUnavailable("onnxruntime is not installed: pip install onnxruntime "
                                "(or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def device_key(device: torch.device) -> str:
    """What an AOTInductor check depends on: torch version plus device name (``2.13.0+cpu/cpu``)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{torch.__version__}/{name}"


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


class ExportedProgramEngine(Engine):
    """``torch.export.save`` of the ExportedProgram, run by torch itself: needs no model code."""

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


class OnnxEngine(Engine):
    """ONNX Runtime session; tensors are bound by ``data_ptr`` (CUDA provider on a CUDA device if present)."""

    format = "onnx"

    def _load(self) -> None:
        ort = import_onnxruntime()
        providers = ["CPUExecutionProvider"]
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


def _numpy_dtype(dtype: torch.dtype) -> Any:
    import numpy as np

    return {torch.float32: np.float32, torch.int64: np.int64}[dtype]


def aoti_callable(path: Path, loader: str, device: torch.device) -> Callable[[list[torch.Tensor]], list]:
    """Load an AOTInductor artifact with one loader (see ``AOTI_LOADERS``): flat tensors in, flat out.

    The package loaders run single-threaded (no internal locking), so that CUDA graphs can capture them.
    """
    index = device.index if device.index is not None else -1
    if loader == "package":
        model = torch._inductor.aoti_load_package(str(path), run_single_threaded=True, device_index=index)
        return lambda args: list(model.loader.boxed_run(list(args)))
    if loader == "package_loader":
        runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", True, 1, index)
        return lambda args: list(runner.boxed_run(list(args)))
    if loader == "so":
        so = path.with_suffix(".so")
        if device.type == "cuda":
            container = torch._C._aoti.AOTIModelContainerRunnerCuda(str(so), 1, str(device))
        else:
            container = torch._C._aoti.AOTIModelContainerRunnerCpu(str(so), 1)
        return lambda args: list(container.run(list(args)))
    raise ValueError(f"unknown AOTInductor loader {loader!r} (known: {', '.join(AOTI_LOADERS)})")


def run_isolated(code: str, args: Sequence[str], timeout: float = 600.0) -> str:
    """Run ``python -c code args...`` in a subprocess: ``ok``, ``crashed (signal N)`` or ``error: ...``."""
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"error: timed out after {timeout:.0f} s"
    if proc.returncode < 0:
        return f"crashed (signal {-proc.returncode})"
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return f"error: {lines[-1][:300] if lines else f'exit code {proc.returncode}'}"
    return "ok"


def check_aoti_loader(path: Path, loader: str, device: torch.device, args: Sequence[torch.Tensor],
                      timeout: float = 600.0) -> tuple[str, list[torch.Tensor] | None]:
    """Load and run an AOTInductor artifact in a subprocess, so that a crash cannot end this process.

    Returns ``("ok", outputs on the CPU)`` or ``("crashed (signal 11)" | "error: ...", None)``.
    """
    with tempfile.TemporaryDirectory(prefix="humanliff-aoti-") as tmp:
        feeds, result = Path(tmp) / "inputs.pt", Path(tmp) / "outputs.pt"
        torch.save([a.cpu() for a in args], feeds)
        code = "import sys; from humanliff.runtime.engines import _aoti_child; _aoti_child(*sys.argv[1:])"
        outcome = run_isolated(code, [str(path), loader, str(device), str(feeds), str(result)], timeout)
        return (outcome, torch.load(result)) if outcome == "ok" else (outcome, None)


def _aoti_child(path: str, loader: str, device: str, feeds: str, result: str) -> None:
    """Subprocess side of :func:`check_aoti_loader`."""
    dev = torch.device(device)
    run = aoti_callable(Path(path), loader, dev)
    with torch.inference_mode():
        outs = run([a.to(dev) for a in torch.load(feeds)])
    torch.save([o.cpu() for o in outs], result)


class AOTIEngine(Engine):
    """AOTInductor artifact, loaded by the first loader that works on this machine.

    The manifest records each loader's outcome from export time (``artifact["loaders"]`` and the
    ``checked_on`` torch/device key); on another torch or device the loaders are first probed in a
    subprocess, since a broken loader crashes the process instead of raising.
    """

    format = "aoti"

    def _load(self) -> None:
        recorded = self.artifact.get("loaders", {})
        same_machine = self.artifact.get("checked_on") == device_key(self.device)
        failures = []
        for loader in AOTI_LOADERS:
            if loader == "so" and not self.path.with_suffix(".so").is_file():
                continue
            if same_machine:
                outcome = recorded.get(loader, "not checked")
            else:
                outcome, _ = check_aoti_loader(self.path, loader, self.device, self._probe_inputs())
            if outcome == "ok":
                self._run_flat = aoti_callable(self.path, loader, self.device)
                self.loader = loader
                return
            failures.append(f"{loader}: {outcome}")
        raise EngineUnavailable(f"no AOTInductor loader works for {self.path.name} ({'; '.join(failures)})")

    def _probe_inputs(self) -> list[torch.Tensor]:
        dims = {k: v[0] for k, v in self.spec.dims.items()}
        return [torch.zeros(s.resolve(dims), dtype=DTYPES[s.dtype]) for s in self.spec.inputs]

    def _run(self, args: list[torch.Tensor], dims: Mapping[str, int]) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            return self._run_flat(args)

    def close(self) -> None:
        self._run_flat = None


class TensorRTEngine(Engine):
    """A TensorRT plan: tensors bound by ``data_ptr``, ``execute_async_v3`` on the current torch stream."""

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


ENGINES: dict[str, type[Engine]] = {"tensorrt": TensorRTEngine, "aoti": AOTIEngine, "onnx": OnnxEngine,
                                     "ep": ExportedProgramEngine}


def load_engine(artifacts_dir: str | Path, network: str, prefer: Sequence[str] = PREFERENCE,
                device: str | torch.device = "cpu", manifest: Mapping[str, Any] | None = None, *,
                compile: bool = True) -> Engine:
    """Load the first of ``prefer``'s formats that ``network`` has and that runs here.

    ``compile`` lets a torch-run format (``ep``) compile its program on CUDA (first call slower).

    Formats whose package, device or loader is missing, or that were exported for another device type,
    are skipped (logged); a missing or altered artifact file is an error, as is a folder where no format
    loads.
    """
    artifacts_dir = Path(artifacts_dir)
    manifest = manifest if manifest is not None else read_manifest(artifacts_dir)
    source = artifacts_dir / MANIFEST_NAME
    if network not in manifest["networks"]:
        raise InputFileError(source, f"no network '{network}' (has {', '.join(manifest['networks'])})")
    unknown = [f for f in prefer if f not in ENGINES]
    if unknown:
        raise HumanLiffError(f"unknown engine format(s) {', '.join(unknown)} (known: {', '.join(ENGINES)})")
    device = torch.device(device)
    spec = network_spec(manifest, network)
    artifacts = manifest["networks"][network]["artifacts"]
    usable = usable_formats(manifest, network)
    skipped = []
    for fmt in prefer:
        if fmt not in usable:
            skipped.append(f"{fmt}: {artifacts[fmt]['status']}" if fmt in artifacts else f"{fmt}: absent")
            continue
        built_for = artifacts[fmt].get("device", device.type)
        if fmt not in PORTABLE and built_for != device.type:
            skipped.append(f"{fmt}: built for {built_for}")
            continue
        paths = check_files(artifacts_dir, artifacts[fmt])
        engine = ENGINES[fmt](paths[0], spec, device, artifacts[fmt], compile=compile)
        try:
            engine.load()
        except EngineUnavailable as exc:
            log.info("%s: %s engine skipped: %s", network, fmt, exc)
            skipped.append(f"{fmt}: {exc}")
            continue
        log.info("%s: %s engine (%s)", network, fmt, paths[0].name)
        return engine
    raise InputFileError(source, f"no engine for '{network}' runs on {device} "
                                 f"({'; '.join(skipped)})")


class GraphedEngine:
    """Replays a CUDA graph of one engine call for fixed input shapes (captured at construction).

    Calls with other shapes fall through to the engine. Outputs are cloned out of the static buffers.
    """

    def __init__(self, engine: Engine, feeds: Mapping[str, torch.Tensor], warmup: int = 2) -> None:
        self.engine = engine
        self.static = {k: v.to(engine.device, DTYPES[_dtype_of(engine, k)]).clone() for k, v in feeds.items()}
        self.graph, self.outputs = capture_cuda_graph(lambda: engine(**self.static), engine.device, warmup)

    def __call__(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
        if any(feeds[k].shape != v.shape for k, v in self.static.items()):
            return self.engine(**feeds)
        for k, v in self.static.items():
            v.copy_(feeds[k])
        self.graph.replay()
        return {k: v.clone() for k, v in self.outputs.items()}


def _dtype_of(engine: Engine, name: str) -> str:
    return next(s.dtype for s in engine.spec.inputs if s.name == name)


def graphed(engine: Engine, feeds: Mapping[str, torch.Tensor]) -> Callable[..., dict[str, torch.Tensor]]:
    """A CUDA-graph replay of ``engine`` for the shapes of ``feeds`` where possible, else ``engine`` itself.

    Only CUDA devices and graph-capturable formats (``GRAPHABLE``); a failed capture logs one warning.
    """
    if engine.device.type != "cuda" or engine.format not in GRAPHABLE:
        return engine
    try:
        return GraphedEngine(engine, feeds)
    except Exception as exc:
        log.warning("CUDA graph capture of the %s engine failed (%s); running it eagerly", engine.format, exc)
        return engine
