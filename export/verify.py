"""Checking exported artifacts against the torch graph they came from, on fresh random inputs.

The error measure is ``max |out - ref| / max |ref|`` over every output (the max relative error). An
AOTInductor artifact is loaded and run in a subprocess per loader, since a broken loader crashes the
process (a segmentation fault on torch 2.11+cu130) instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from humanliff.runtime.engines import AOTI_LOADERS, Engine, check_aoti_loader, device_key

TOLERANCE = {"fp32": 2e-3, "fp16": 3e-2, "bf16": 6e-2}
"""Largest max relative error accepted per compute dtype (fp32 allows for TF32 convolutions on GPUs)."""


def max_rel_error(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """``max |out - ref| / max |ref|``, the largest over the named outputs (compared on the CPU in fp64)."""
    worst = 0.0
    for name, ref in reference.items():
        ref64, out64 = ref.detach().cpu().double(), outputs[name].detach().cpu().double()
        scale = max(ref64.abs().max().item(), 1e-12)
        worst = max(worst, (out64 - ref64).abs().max().item() / scale)
    return worst


def check_outputs(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                  precision: str) -> dict[str, Any]:
    """The manifest's ``check`` record: ``{max_rel_err, tolerance, passed}``."""
    error, tolerance = max_rel_error(outputs, reference), TOLERANCE[precision]
    return {"max_rel_err": error, "tolerance": tolerance, "passed": bool(error <= tolerance)}


def verify_engine(engine: Engine, feeds: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor],
                  precision: str) -> dict[str, Any]:
    """Run a loaded engine on ``feeds`` and compare with the torch ``reference`` outputs."""
    with torch.inference_mode():
        return check_outputs(engine(**feeds), reference, precision)


def verify_aoti(path: Path, output_names: list[str], device: torch.device, feeds: Mapping[str, torch.Tensor],
                reference: Mapping[str, torch.Tensor], precision: str) -> dict[str, Any]:
    """Try every AOTInductor loader in a subprocess on ``feeds``; record each outcome and the first check.

    Returns ``{loaders: {loader: "ok" | "crashed (signal N)" | "error: ..." | "mismatch ..." | "absent"},
    checked_on: device_key, check: {...} | None}``.
    """
    loaders: dict[str, str] = {}
    check = None
    for loader in AOTI_LOADERS:
        if loader == "so" and not path.with_suffix(".so").is_file():
            loaders[loader] = "absent"
            continue
        outcome, outs = check_aoti_loader(path, loader, device, list(feeds.values()))
        if outs is not None:
            result = check_outputs(dict(zip(output_names, outs, strict=True)), reference, precision)
            check = check or result
            if not result["passed"]:
                outcome = f"mismatch (max rel err {result['max_rel_err']:.2e})"
        loaders[loader] = outcome
    return {"loaders": loaders, "checked_on": device_key(device), "check": check}
