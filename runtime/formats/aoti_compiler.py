"""Choosing the C++ compiler for AOTInductor packages: the first candidate whose packages load here.

Inductor compiles a package's C++ with ``torch._inductor.config.cpp.cxx`` (from ``$CXX``). Some
toolchains build packages that crash the loading process (the GPU image's ``/opt/gcc/bin/g++`` wrapper:
a segmentation fault in the model's constructor), so each candidate builds a tiny package for the
device, which a subprocess loads and runs. Outcomes are cached per machine in
``<cache>/aoti-compilers.json`` (keyed by torch version, device and the compiler's resolved path).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.formats.base import EngineUnavailable, cache_dir, device_key

log = logging.getLogger(__name__)

CACHE_NAME = "aoti-compilers.json"
FALLBACKS = ("g++", "c++", "/usr/bin/g++", "clang++")
"""Tried after ``$CXX``, in this order (names are looked up on PATH)."""
PACKAGE_CONFIG = {"aot_inductor.package_constants_in_so": False,
                  "aot_inductor.package_constants_on_disk_format": "binary_blob"}
"""Weights outside the compiled library, as one blob in the package."""
_FROZEN = {"freezing": True, "force_layout_optimization": True}
TUNINGS: dict[str, dict[str, Any]] = {
    "plain": {},
    "frozen": _FROZEN,
    "autotune": {**_FROZEN, "max_autotune": True, "coordinate_descent_tuning": True},
}
"""``export --aoti-tuning``: Inductor settings a package is compiled with (recorded in the manifest).

``plain``: Inductor's defaults. ``frozen``: weights frozen into the graph and folded (Inductor's
``freezing``) and convolutions in channels-last layout with their weights converted once at compile time
(``force_layout_optimization``: Inductor's heuristic skips the layout for graphs with a dynamic batch,
which every exported UNet has), as the compiled torch path runs. ``autotune``: ``frozen`` plus Inductor
benchmarking its kernel choices (``max_autotune``, ``coordinate_descent_tuning``) at compile time: a
longer export."""
DEFAULT_TUNING = "frozen"
"""The default: on the H200 (2026-12-02) the frozen UNet parts ran a call in 9.56 ms at batch 1 and 105.4 ms at
batch 16, against 12.2 ms and 113.1 ms built plain (2026-12-01)."""


def compile_package(program: torch.export.ExportedProgram, path: str | Path, cxx: str,
                    tuning: str = DEFAULT_TUNING) -> Path:
    """Compile ``program`` into an AOTInductor package at ``path`` with the C++ compiler ``cxx`` and the
    Inductor settings of ``TUNINGS[tuning]``."""
    import torch._inductor

    with torch._inductor.config.patch({"cpp.cxx": (None, cxx)}), torch.no_grad():  # freezing needs no grad
        torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                 inductor_configs={**PACKAGE_CONFIG, **TUNINGS[tuning]})
    return Path(path)


def candidates(forced: str | None = None) -> list[str]:
    """Compilers to try: ``forced`` alone, else ``$CXX`` then ``FALLBACKS``, found ones, one per real file."""
    names = [forced] if forced else [os.environ.get("CXX", ""), *FALLBACKS]
    seen, found = set(), []
    for name in filter(None, names):
        path = shutil.which(name)
        if path is None:
            if forced:
                raise EngineUnavailable(f"--cxx {forced}: no such compiler")
            continue
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            found.append(path)
    return found


def _probe(cxx: str, device: torch.device) -> str:
    """Build a two-layer package with ``cxx`` and load it in a subprocess: ``ok`` or what went wrong."""
    from humanliff.runtime.formats.aoti import check_package

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).to(device)
    x = torch.randn(2, 8, device=device)
    with tempfile.TemporaryDirectory(prefix="humanliff-cxx-") as tmp:
        try:
            program = torch.export.export(model.eval(), (x,))
            path = compile_package(program, Path(tmp) / "probe.pt2", cxx)
        except Exception as exc:
            return f"build failed: {exc.__class__.__name__}: {str(exc).strip().splitlines()[0][:160]}"
        outcome, outs, _ = check_package(path, device, [x])
    if outs is None:
        return outcome
    with torch.no_grad():
        error = (outs[0] - model(x).cpu()).abs().max().item()
    return "ok" if error < 1e-3 else f"wrong outputs (max error {error:.2e})"


def _write_cache(path: Path, cache: dict[str, str]) -> None:
    """Replace the cache file atomically (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)


def choose_compiler(device: torch.device, forced: str | None = None) -> tuple[str, dict[str, str]]:
    """The first candidate whose packages load on ``device``, and every tried candidate's outcome.

    Raises ``EngineUnavailable`` naming each candidate and its outcome when none works.
    """
    path = cache_dir() / CACHE_NAME
    cache = json.loads(path.read_text()) if path.is_file() else {}
    tried: dict[str, str] = {}
    for cxx in candidates(forced):
        key = f"{device_key(device)}|{os.path.realpath(cxx)}"
        outcome = cache.get(key) or _probe(cxx, device)
        tried[cxx] = outcome
        if key not in cache and not outcome.startswith("build failed"):
            cache[key] = outcome
            _write_cache(path, cache)
        if outcome == "ok":
            if cxx != os.environ.get("CXX", cxx):
                log.warning("AOTInductor: packages built with $CXX=%s do not load here (%s); using %s",
                            os.environ["CXX"], tried.get(os.environ["CXX"], "not tried"), cxx)
            return cxx, tried
    listing = "; ".join(f"{c}: {o}" for c, o in tried.items()) or "no C++ compiler found"
    raise EngineUnavailable(f"no C++ compiler builds AOTInductor packages that load here ({listing}); "
                            "install g++ or pass --cxx PATH")
