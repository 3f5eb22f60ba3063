"""``humanliff demo``: the whole pipeline on the built-in synthetic humans, resumable stage by stage.

Stages (each announced with a banner and timed; its own progress bars below it)::

    data      out/data/                      synthetic layered dataset (data synth)
    fit_a     out/fit/store_a                shared decoder + tri-planes (fit --stage a)
    fit_b     out/fit/store_b                per-subject tri-planes, frozen decoder (fit --stage b)
    eval      out/eval/metrics.json          held-out PSNR / SSIM per layer of store_b (eval recon)
    train     out/train/ema.pt               layered diffusion UNet on store_b (train)
    generate  out/generated/                 contact sheet, turntables, meshes (generate)

A stage whose output is complete is skipped unless an earlier stage ran in this call (then its old
output is removed and it runs again), so re-running after an interruption continues where it stopped
(fitting and training resume from their checkpoints). ``out/summary.json`` records per-stage seconds,
the held-out metrics and the output paths; ``out/config.yaml`` the resolved config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from humanliff.config import Config, dump_config
from humanliff.data.synth import synthesize_from_config
from humanliff.ema_file import EMA_FILE
from humanliff.errors import HumanLiffError
from humanliff.evaluation.recon import evaluate_recon
from humanliff.generate import generate
from humanliff.io import atomic_path, read_torch_file
from humanliff.runtime.compute import default_device
from humanliff.training.checkpoint import CHECKPOINT
from humanliff.training.fit_a import fit_stage_a
from humanliff.training.fit_b import fit_stage_b
from humanliff.training.train import train

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
CONFIG = "config.yaml"


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    """Where each stage of a demo folder writes."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def fit(self) -> Path:
        return self.root / "fit"

    @property
    def store_a(self) -> Path:
        return self.fit / "store_a"

    @property
    def store_b(self) -> Path:
        return self.fit / "store_b"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def generated(self) -> Path:
        return self.root / "generated"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline step: what it does, whether its output is complete, the paths it owns, how to run it."""

    name: str
    title: str
    done: Callable[[], bool]
    owns: tuple[Path, ...]
    run: Callable[[], Any]


def _train_done(run_dir: Path, steps: int) -> bool:
    """True when ``run_dir`` holds an ``ema.pt`` and a checkpoint at ``steps`` or beyond."""
    if not (run_dir / EMA_FILE).is_file() or not (run_dir / CHECKPOINT).is_file():
        return False
    return int(read_torch_file(run_dir / CHECKPOINT)["step"]) >= steps


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _settings(values: dict[str, Any]) -> dict[str, Any]:
    """A config dict without ``data.root`` (always the demo folder's ``data``, which may have moved)."""
    return {**values, "data": {k: v for k, v in values["data"].items() if k != "root"}}


def _check_config(out: Path, cfg: Config) -> None:
    """Write ``out/config.yaml``, or check that an earlier run in ``out`` used the same config."""
    path = out / CONFIG
    if path.is_file():
        if _settings(yaml.safe_load(path.read_text())) != _settings(cfg.to_dict()):
            raise HumanLiffError(f"{out} holds a demo run with another config ({path}); "
                                 "delete the folder or pass another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        dump_config(cfg, tmp)


def _write_summary(path: Path, summary: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")


def _stages(cfg: Config, p: DemoPaths, device: str | None, results: dict[str, Any]) -> list[Stage]:
    """The six stages of the demo, in order."""
    fc, tc = cfg.fit, cfg.train

    def run_eval() -> None:
        dev = torch.device(device) if device else None
        results["recon"] = evaluate_recon(cfg, p.store_b, p.eval, device=dev)

    return [
        Stage("data", f"synthetic dataset: {cfg.synth.subjects} humans x 4 layers x {cfg.synth.views} views "
              f"at {cfg.synth.resolution} px", lambda: (p.data / "human_list.txt").is_file(), (p.data,),
              lambda: synthesize_from_config(cfg.synth, p.data)),
        Stage("fit_a", f"fit stage A: shared decoder + {cfg.triplane.resolution}^2 tri-planes, "
              f"{fc.iterations_a} steps", p.store_a.is_dir,
              (p.fit / "checkpoint_a", p.store_a, p.fit / "config.yaml"),
              lambda: fit_stage_a(cfg, p.fit, device)),
        Stage("fit_b", f"fit stage B: per-subject tri-planes, frozen decoder, {fc.iterations_b} steps "
              "a layer",
              lambda: p.store_b.is_dir() and not (p.fit / "store_b.partial").exists(),
              (p.fit / "checkpoint_b.pt", p.fit / "store_b.partial", p.store_b),
              lambda: fit_stage_b(cfg, p.store_a, p.fit, device)),
        Stage("eval", "held-out reconstruction PSNR / SSIM per layer", (p.eval / "metrics.json").is_file,
              (p.eval,), run_eval),
        Stage("train", f"train the layered diffusion UNet: {tc.steps} steps x batch {tc.batch_size}",
              lambda: _train_done(p.train, tc.steps), (p.train,),
              lambda: train(cfg, p.store_b, p.train, device)),
        Stage("generate", f"generate {cfg.sample.batch} layered humans ({cfg.sample.sampler}, "
              f"{cfg.sample.steps} steps a layer) and render them",
              (p.generated / "contact_sheet.png").is_file, (p.generated,),
              lambda: generate(cfg, p.train / EMA_FILE, p.store_b, p.generated, device=device)),
    ]


def run_demo(cfg: Config, out_dir: str | Path, device: str | None = None) -> dict[str, Any]:
    """Run (or continue) the demo pipeline into ``out_dir``; ``cfg.data.root`` becomes ``out_dir/data``.

    Returns the summary written to ``out_dir/summary.json``: ``stages`` (per stage ``seconds`` it took when
    it ran and ``skipped`` in this call), ``seconds`` (this call, wall), ``recon`` (held-out ``psnr`` /
    ``ssim`` per layer), ``paths`` (data, stores, run, contact sheet, turntables, meshes) and ``message``
    (the closing line).
    """
    p = DemoPaths(Path(out_dir))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(p.data)))
    _check_config(p.root, cfg)
    summary_path = p.root / SUMMARY
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary: dict[str, Any] = {"device": str(default_device(device)),
                               "stages": dict(previous.get("stages", {}))}
    results: dict[str, Any] = {}
    stages = _stages(cfg, p, device, results)
    start, upstream_ran = time.perf_counter(), False
    for i, stage in enumerate(stages, 1):
        banner = f"[{i}/{len(stages)}] {stage.name}: {stage.title}"
        if not upstream_ran and stage.done():
            log.info("%s: already done, skipped", banner)
            summary["stages"].setdefault(stage.name, {})["skipped"] = True
            continue
        if upstream_ran:
            for path in stage.owns:
                _remove(path)
        log.info("%s", banner)
        tick = time.perf_counter()
        stage.run()
        seconds = time.perf_counter() - tick
        upstream_ran = True
        summary["stages"][stage.name] = {"seconds": round(seconds, 1), "skipped": False}
        log.info("[%d/%d] %s done in %.1f s (%.1f min so far)", i, len(stages), stage.name, seconds,
                 (time.perf_counter() - start) / 60)
        _write_summary(summary_path, summary)
    recon = results.get("recon") or json.loads((p.eval / "metrics.json").read_text())
    generation = p.generated
    summary["recon"] = recon["layers"]
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["paths"] = {
        "data": p.data, "store_a": p.store_a, "store_b": p.store_b, "metrics": p.eval / "metrics.json",
        "unet": p.train / EMA_FILE, "contact_sheet": generation / "contact_sheet.png",
        "viewer": generation / "viewer.html",
        "turntables": sorted(str(x) for x in (generation / "turntable").glob("human_*.gif")),
        "meshes": sorted(str(x) for x in generation.glob("layer_*/human_*.glb")),
    }
    total = sum(s.get("seconds", 0.0) for s in summary["stages"].values())
    summary["message"] = (f"demo done in {total / 60:.1f} min. Look at:\n"
                          f"  viewer (open in a browser): {generation}/viewer.html\n"
                          f"  contact sheet:              {generation}/contact_sheet.png\n"
                          f"  turntables:                 {generation}/turntable/human_*.gif\n"
                          f"  meshes:                     {generation}/layer_*/human_*.ply|.glb")
    _write_summary(summary_path, summary)
    psnr = ", ".join(f"layer {k} {v['psnr']:.2f} dB" for k, v in recon["layers"].items())
    log.info("held-out PSNR: %s", psnr)
    return summary
