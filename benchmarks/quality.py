"""Generation quality of the default model: ``eval gen`` for each sampler row, the same seeds every row.

Usage (GPU, the issue's table)::

    python -m benchmarks.quality --humans 64 --precisions fp32,bf16 --out /tmp/quality

Each row generates ``--humans`` humans (seeds 0..N-1, layers 0-3) with the default model through
``humanliff generate`` (cheap output settings: the evaluation renders on its own), then scores them with
``evaluate_generation`` against the default store; the improvement rows re-score a row's planes with
floater removal (``render.occupancy_largest``) or sample with the head band kept (``sample.keep_top``) or
layers above the first started from the layer below (``sample.strength``, SDEdit). The ``student_4`` rows
sample the shipped distilled student (4 calls at layer 0, ``round(4 * strength)`` above) instead.
A generation folder or a row's score already under ``--out`` is reused, so a run cut short resumes
(run the same command again). Results go to
``<out>/quality.json`` and ``<out>/quality.md`` (and ``$OUT`` when set), rewritten after every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from humanliff.config import SampleConfig, load_config
from humanliff.evaluation.generation import evaluate_generation
from humanliff.evaluation.metrics import GENERATION_METRICS
from humanliff.generate import generate
from humanliff.pretrained import default_model
from humanliff.runtime.compute import default_device

log = logging.getLogger("benchmark.quality")

CHEAP_OUTPUTS = ["sample.image_size=16", "sample.views=1", "sample.turntable_frames=1", "sample.meshes=false",
                 "render.n_samples=8", "render.n_importance=8", "sample.compile=false"]
"""Outputs of ``generate`` that nobody looks at here (the evaluation renders the planes itself; no meshes,
whose coarse grids only warned); no torch.compile (it changes the speed, not the samples)."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: a sampler setting, and what the improvement rows change."""

    name: str
    sampler: str
    steps: int
    eta: float = 0.0
    keep_top: float = 0.0
    strength: float = 1.0
    floaters_removed: bool = False
    planes_of: str | None = None
    """Re-score this row's planes instead of sampling (render-time changes only)."""
    model: str = "default"
    """The pipeline source: the default model or its shipped student (``default-distilled``)."""


BAND = SampleConfig.keep_top
"""The head band of the ``+head`` rows: the default's (0.125 before 2026-12-02's sixth session)."""
NARROW = 0.125
ROWS = (
    Row("ddpm_250", "ddpm", 250),
    Row("ddim_50_eta1", "ddim", 50, eta=1.0),
    Row("dpmpp_20", "dpmpp", 20),
    Row("dpmpp_sde_20", "dpmpp_sde", 20),
    Row("dpmpp_sde_10", "dpmpp_sde", 10),
    Row("dpmpp_sde_20+floaters", "dpmpp_sde", 20, floaters_removed=True, planes_of="dpmpp_sde_20"),
    Row("dpmpp_sde_20+head", "dpmpp_sde", 20, keep_top=BAND),
    Row("dpmpp_sde_20+head+floaters", "dpmpp_sde", 20, keep_top=BAND, floaters_removed=True,
        planes_of="dpmpp_sde_20+head"),
    Row("dpmpp_sde_20+narrow_head", "dpmpp_sde", 20, keep_top=NARROW),
    Row("ddim_50_eta1+head", "ddim", 50, eta=1.0, keep_top=BAND),
    Row("dpmpp_sde_20+head+sdedit_0.7", "dpmpp_sde", 20, keep_top=BAND, strength=0.7),
    Row("dpmpp_sde_20+head+sdedit_0.5", "dpmpp_sde", 20, keep_top=BAND, strength=0.5),
    Row("dpmpp_sde_20+head+sdedit_0.3", "dpmpp_sde", 20, keep_top=BAND, strength=0.3),
    Row("dpmpp_sde_20+sdedit_0.5", "dpmpp_sde", 20, strength=0.5),
    Row("ddpm_250+head", "ddpm", 250, keep_top=BAND),
    Row("dpmpp_sde_10+floaters", "dpmpp_sde", 10, floaters_removed=True, planes_of="dpmpp_sde_10"),
    Row("dpmpp_sde_10+head", "dpmpp_sde", 10, keep_top=BAND),
    Row("dpmpp_sde_10+head+floaters", "dpmpp_sde", 10, keep_top=BAND, floaters_removed=True,
        planes_of="dpmpp_sde_10+head"),
    *(Row(f"student_4+head{f'+sdedit_{s}' if s < 1 else ''}", "distilled", 4, keep_top=BAND, strength=s,
          model="default-distilled") for s in (0.5, 0.75, 1.0)),
)


def run_row(row: Row, precision: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Generate (or reuse) the row's planes and score them (or reuse the score); the result plus timings."""
    folder = out / precision
    saved = folder / row.name / "result.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    gen = folder / (row.planes_of or row.name) / "gen"
    sample_s = None
    if not (gen / "planes.npz").is_file():
        if gen.parent.exists():
            shutil.rmtree(gen.parent)
        gen.parent.mkdir(parents=True)
        cfg = load_config(None, [*CHEAP_OUTPUTS, f"sample.sampler={row.sampler}", f"sample.steps={row.steps}",
                                 f"sample.eta={row.eta}", f"sample.keep_top={row.keep_top}", "sample.seed=0",
                                 f"sample.strength={row.strength}",
                                 f"sample.batch={args.humans}", f"sample.precision={precision}"])
        start = time.perf_counter()
        generate(cfg, row.model, None, gen, device=args.device, progress=False)
        sample_s = time.perf_counter() - start
    eval_cfg = load_config(None, [*args.set, f"render.occupancy_largest={row.floaters_removed}"])
    start = time.perf_counter()
    result = evaluate_generation(gen, default_model()[1], folder / row.name / "eval", render_cfg=eval_cfg.render,
                                 inception=args.inception, views=args.views, size=args.size, device=args.device,
                                 progress=False)
    result["timings"] = {"generate_s": sample_s, "eval_s": time.perf_counter() - start}
    saved.write_text(json.dumps(result, indent=1))
    return result


def markdown(results: dict[str, dict[str, Any]], humans: int) -> str:
    """The table: a row per setting and precision, plus the ceiling; metrics averaged over the layers."""
    names = list(GENERATION_METRICS)
    lines = [f"| row | {' | '.join(names)} | generate s |", "|---" * (len(names) + 2) + "|"]

    def cells(per_layer: dict[str, dict[str, float]], which: str) -> str:
        values = []
        for name in names:
            found = [entry[which][name] for entry in per_layer.values() if name in entry[which]]
            values.append(f"{sum(found) / len(found):.4g}" if found else "-")
        return " | ".join(values)

    ceiling = None
    for key, result in results.items():
        seconds = result["timings"]["generate_s"]
        lines.append(f"| {key} | {cells(result['layers'], 'generated')} | "
                     f"{'-' if seconds is None else f'{seconds:.0f}'} |")
        ceiling = ceiling or result["layers"]
    if ceiling:
        lines.append(f"| ceiling (reference store) | {cells(ceiling, 'ceiling')} | - |")
    lines.append(f"\n{humans} humans (seeds 0..{humans - 1}), layers 0-3; every metric is the mean over the layers "
                 "where it applies (containment and drift: layers 1-3).")
    return "\n".join([*lines, *paired_table(results)]) + "\n"


def extended_row(key: str) -> str | None:
    """The result key (``"<row> <precision>"``) of the row that ``key``'s row extends: its name without the
    last ``+`` part, the same precision (``a+head+sdedit_0.7 fp32`` -> ``a+head fp32``); None for a base row."""
    name, _, precision = key.partition(" ")
    return f"{name.rsplit('+', 1)[0]} {precision}" if "+" in name else None


def paired_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Lines of a table of each row against the row its name extends (the name without its last ``+``
    part: ``a+head+sdedit_0.7`` against ``a+head``), human by human (``paired_differences``); none when no
    such pair has per-human values."""
    pairs = [(key, base) for key in results if (base := extended_row(key)) in results
             and "per_human" in results[key] and "per_human" in results[base]]
    if not pairs:
        return []
    metrics = [name for name, m in GENERATION_METRICS.items() if m.human]
    lines = ["", "Each change against the row without it, human by human (the same seeds): the mean over humans "
             "of each human's difference (its values averaged over the layers), +- one standard error.", "",
             f"| row - the row it extends | {' | '.join(metrics)} |", "|---" * (len(metrics) + 1) + "|"]
    for key, base in pairs:
        diffs = paired_differences(results[key], results[base])
        lines.append(f"| {key} - {base} | " + " | ".join(
            f"{diffs[m][0]:+.4g} +- {diffs[m][1]:.2g}" if m in diffs else "-" for m in metrics) + " |")
    return lines


def _per_human(result: dict[str, Any], metric: str) -> np.ndarray:
    """Each human's ``metric`` averaged over the layers where it applies: ``[N]`` (NaN where none does)."""
    rows = [[np.nan if v is None else v for v in layer[metric]]
            for layer in result["per_human"].values() if metric in layer]
    return np.nanmean(np.array(rows, np.float64), axis=0) if rows else np.array([])


def paired_differences(result: dict[str, Any], base: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per-human metric -> (mean, standard error) over humans of ``result``'s value minus ``base``'s, the
    humans being the same seeds in both (``evaluate_generation``'s ``per_human``)."""
    out = {}
    for metric, spec in GENERATION_METRICS.items():
        if not spec.human:
            continue
        a, b = _per_human(result, metric), _per_human(base, metric)
        d = (a - b)[np.isfinite(a - b)] if a.shape == b.shape else np.array([])
        if d.size >= 2:
            out[metric] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--humans", type=int, default=64)
    parser.add_argument("--rows", default="all", help="comma-separated row names (default: all)")
    parser.add_argument("--precisions", default="fp32", help="UNet precisions on CUDA, e.g. fp32,bf16")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--inception", default=None, help="pt_inception-2015-12-05 weights (default: torch hub's)")
    parser.add_argument("--set", action="append", default=[], help="render overrides of the evaluation")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="quality_out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.device = str(default_device(args.device))
    by_name = {r.name: r for r in ROWS}
    unknown = [n for n in args.rows.split(",") if n not in by_name and args.rows != "all"]
    if unknown:
        parser.error(f"unknown rows {unknown} (valid: {', '.join(by_name)})")
    rows = ROWS if args.rows == "all" else [by_name[n] for n in args.rows.split(",")]
    out = Path(args.out)
    results: dict[str, dict[str, Any]] = {}
    targets = [out] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    for precision in args.precisions.split(","):
        for row in rows:
            key = f"{row.name} {precision}"
            log.info("row %s", key)
            results[key] = run_row(row, precision, args, out)
            for target in targets:
                target.mkdir(parents=True, exist_ok=True)
                (target / "quality.json").write_text(json.dumps(results, indent=1))
                (target / "quality.md").write_text(markdown(results, args.humans))
            log.info("%s", markdown({key: results[key]}, args.humans).splitlines()[2])


if __name__ == "__main__":
    main()
