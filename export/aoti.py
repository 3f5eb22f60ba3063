"""AOTInductor compilation: a ``.pt2`` package (``aoti_compile_and_package``) and a plain ``.so``.

The two files are what ``humanliff.runtime.engines.AOTI_LOADERS`` load: the package through
``aoti_load_package`` or the lower-level ``AOTIModelPackageLoader``, the ``.so`` through the container
runner (the fallback where the package loaders crash, see docs). Loading is checked in a subprocess.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def compile_aoti(program: torch.export.ExportedProgram, example: Sequence[torch.Tensor],
                 package_path: str | Path) -> list[Path]:
    """Compile ``program`` to ``package_path`` (``.pt2``) and beside it a ``.so``; return the files made.

    ``example`` are inputs of the program (on its device). A failed ``.so`` build is logged and skipped.
    """
    package_path = Path(package_path)
    torch._inductor.aoti_compile_and_package(program, package_path=str(package_path))
    files = [package_path]
    so_path = package_path.with_suffix(".so")
    try:
        options = {"aot_inductor.package": False, "aot_inductor.output_path": str(so_path),
                   # GPU kernels inside the .so, not in the compile cache, so the folder can be moved
                   "aot_inductor.embed_kernel_binary": example[0].device.type == "cuda"}
        torch._inductor.aot_compile(program.module(), tuple(example), options=options)
        files.append(so_path)
    except Exception as exc:
        log.warning("AOTInductor .so build failed (%s); only the .pt2 package is written", exc)
    return files
