"""Few-step students of the default model: distil with each method, score with ``eval gen``, time, pack the best.

Usage (one H200, about 8 minutes; the issue's table)::

    python -m benchmarks.distill --out /tmp/distill

Steps, each logged as a progress line and written to ``<out>/distill.json`` and ``<out>/distill.md`` (and
``$OUT`` when set) as soon as it is done:

1. The teacher (``--teacher``, default the shipped model) samples ``--teacher-samples`` humans with the
   sampler of its config once (``teacher_planes.npy``; the default model's: dpmpp_sde 20); every run
   distils on them.
2. For each ``--methods`` x ``--steps`` x ``--variant``: ``humanliff distill`` for ``--train-steps`` steps or
   ``--budget-s`` seconds of training (compile included), whichever ends first; with ``--snapshot-every``
   its EMA is kept (and scored as a row) every that many steps. A ``dmd`` run starts from ``--init``
   (scored as a row of its own unless ``--no-score-init``), else from the progressive student of its steps
   made earlier in the same call, else from the teacher.
3. ``eval gen`` (weight-free metrics) of ``--humans`` humans (seeds 0..N-1) from the teacher with
   ``--teacher-sampler`` (and each of ``--teacher-rows``) and from each student; a consistency student is
   also scored at fewer calls (its schedule's trailing subsets, ``--resample``), and a progressive one with
   fresh noise between its calls (``--progressive-noise``) and the students its earlier rounds kept
   (``--round-students``), as extra rows.
4. The best student by ``fd_pca`` (the Fréchet distance of tri-planes, lower is better) so far is packed to
   ``<out>/best_student`` (``humanliff model pack``: fp16 weights + the store's first subjects) as soon as it
   is scored, so a call cut short keeps it.
5. Time a 4-layer human (sampling only, ``sample_layers``; compiled on CUDA with ``--compile``) at batch 1
   and 16 for the teacher and the best student, while the time left (``--deadline-s``) allows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.quality import CHEAP_OUTPUTS, markdown
from humanliff.config import load_config
from humanliff.ema_file import read_schedule
from humanliff.evaluation.generation import evaluate_generation
from humanliff.generate import generate
from humanliff.models.checkpoint import load_ema
from humanliff.models.inference import inference_unet
from humanliff.pretrained import default_model, pack_model
from humanliff.runtime.compute import default_device
from humanliff.runtime.layered import human_generators, sample_layers
from humanliff.runtime.sampler_names import SAMPLER_NAMES, SCHEDULED
from humanliff.runtime.schedule import linear_schedule, trailing_timesteps
from humanliff.training.distill import TEACHER_PLANES, distill, load_teacher, round_student
from humanliff.training.train import snapshots

log = logging.getLogger("benchmark.distill")


@dataclasses.dataclass
class Row:
    """A scored generator: the teacher with a sampler, or a student's ``ema.pt`` (at its own calls)."""

    name: str
    unet: Path
    sampler: str
    steps: int


def _write(results: dict[str, Any], targets: list[Path]) -> None:
    scored = {k: v for k, v in results["rows"].items() if "layers" in v}
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        (target / "distill.json").write_text(json.dumps(results, indent=1))
        lines = ["# Few-step students of the default model", "", f"- {results['setup']}", ""]
        runs = results["runs"]
        if runs:
            lines += ["| run | train steps | train s | final loss | student calls a layer |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {r['steps_done']} | {r['train_s']:.0f} | {r['loss']:.4g} | {r.get('student_calls')} |"
                      for k, r in runs.items()]
            lines.append("")
        if scored:
            lines += ["## eval gen", "", markdown(scored, results["humans"])]
        if results["timing"]:
            lines += ["## 4-layer human, sampling only (s)", "", "| row | batch 1 | per human at batch 16 |",
                      "|---|---|---|"]
            lines += [f"| {k} | {t.get('1', math.nan):.4f} | {t.get('16', math.nan) / 16:.4f} |"
                      for k, t in results["timing"].items()]
        if results.get("best"):
            lines += ["", f"Best student by fd_pca: {results['best']} (packed: {results.get('packed')})."]
        (target / "distill.md").write_text("\n".join(lines) + "\n")


def _score(row: Row, store: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Generate ``--humans`` humans with the row's model and score them with ``eval gen``."""
    gen = out / "gen" / row.name
    if gen.exists():
        shutil.rmtree(gen)
    gen.parent.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [*CHEAP_OUTPUTS, f"sample.sampler={row.sampler}", f"sample.steps={row.steps}",
                             "sample.seed=0", f"sample.batch={args.humans}", f"sample.precision={args.precision}",
                             *args.set])
    start = time.perf_counter()
    generate(cfg, row.unet, store, gen, device=args.device, progress=False)
    generate_s = time.perf_counter() - start
    eval_cfg = load_config(None, args.set)
    start = time.perf_counter()
    result = evaluate_generation(gen, store, out / "eval" / row.name, render_cfg=eval_cfg.render, views=args.views,
                                 size=args.size, device=args.device, progress=False)
    result["timings"] = {"generate_s": generate_s, "eval_s": time.perf_counter() - start}
    return result


def _rescheduled(student: Path, out: Path, steps: int | None = None, rule: str | None = None) -> Path:
    """A copy of a student's ``ema.pt`` whose schedule takes ``steps`` calls (a trailing subset) and/or samples
    with another ``rule`` (e.g. a progressive student with fresh noise between calls)."""
    blob = torch.load(student, weights_only=False)
    total = blob["config"]["diffusion"]["steps"]
    steps = steps or len(blob["distilled"]["timesteps"])
    blob["distilled"] = {**blob["distilled"], "timesteps": trailing_timesteps(total, steps),
                         "rule": rule or blob["distilled"]["rule"]}
    blob["config"]["sample"]["steps"] = steps
    path = out / "resampled" / f"{student.parent.name}_at_{steps}_{blob['distilled']['rule']}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)
    return path


def _finished_rounds(run: Path, reached: int) -> list[int]:
    """Calls a layer of the round students a progressive run kept, from its first round on (more calls than
    the run's ``ema.pt``)."""
    teacher_steps = read_schedule(run / "ema.pt").teacher_steps
    calls = [teacher_steps >> k for k in range(1, teacher_steps.bit_length())]
    return [n for n in calls if n > reached and round_student(run, n).is_file()]


def _time_human(row: Row, args: argparse.Namespace, batch: int) -> float:
    """Median seconds of sampling 4 layers for ``batch`` humans (after a warm-up call)."""
    device = torch.device(args.device)
    unet, cfg = load_ema(row.unet, device)
    cuda = device.type == "cuda"
    unet_fn = inference_unet(unet, precision=args.precision if cuda else "fp32", compile=args.compile and cuda)
    d = cfg.diffusion
    abar = linear_schedule(d.steps, d.beta_start, d.beta_end).to(device)
    res, channels = cfg.triplane.resolution, cfg.triplane.channels
    schedule = read_schedule(row.unet)
    times = []
    for _ in range(4):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        sample_layers(unet_fn, (batch, channels, res, res), abar, [0, 1, 2, 3], row.sampler, row.steps,
                      generator=human_generators(0, batch), schedule=schedule)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` as ``(NAME, overrides)``; the empty text is the run without a variant."""
    name, _, sets = text.partition(":")
    return name, tuple(s for s in sets.split(",") if s)


def _teacher_rows(text: str) -> list[tuple[str, int]]:
    """``SAMPLER:STEPS,...`` as ``[(sampler, steps)]``; a malformed entry or a sampler a teacher cannot run is
    one ``error:`` line (exit code 1)."""
    rows = []
    samplers = [name for name in SAMPLER_NAMES if name not in SCHEDULED]
    for entry in (t for t in text.split(",") if t):
        sampler, _, steps = entry.partition(":")
        if sampler not in samplers or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"error: --teacher-rows: {entry!r} is not SAMPLER:STEPS with STEPS >= 1 and SAMPLER "
                             f"one of {', '.join(samplers)}")
        rows.append((sampler, int(steps)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--teacher", default=None, help="teacher ema.pt (default: the shipped default model)")
    parser.add_argument("--store", default=None, help="its store (default: the default model's)")
    parser.add_argument("--methods", default="consistency,progressive")
    parser.add_argument("--steps", default="4", help="student calls per layer, comma-separated (e.g. 4,2,1)")
    parser.add_argument("--resample", default="2,1", help="extra calls to score a consistency student at")
    parser.add_argument("--progressive-noise", action=argparse.BooleanOptionalAction, default=True,
                        help="also score a progressive student with fresh noise between calls (rule consistency)")
    parser.add_argument("--round-students", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the students a progressive run kept at the end of each earlier round")
    parser.add_argument("--teacher-sampler", default="dpmpp_sde")
    parser.add_argument("--teacher-steps", type=int, default=20)
    parser.add_argument("--teacher-samples", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument("--budget-s", type=float, default=100.0, help="training seconds per run")
    parser.add_argument("--batch", type=int, default=32, help="distillation batch")
    parser.add_argument("--humans", type=int, default=64)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile the distillation and the timed sampling (CUDA only)")
    parser.add_argument("--batches", default="1,16", help="humans per timed call, comma-separated")
    parser.add_argument("--time-teacher", action=argparse.BooleanOptionalAction, default=True,
                        help="time the teacher's 4-layer human too (not only the best student)")
    parser.add_argument("--deadline-s", type=float, default=440.0, help="skip the timing after this long")
    parser.add_argument("--distill-set", action="append", default=[], help="extra distill --set overrides")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="run each method again with these distill --set overrides, named NAME (repeatable; "
                             "default: one run without)")
    parser.add_argument("--snapshot-every", type=int, default=0,
                        help="also score each run's EMA every this many steps (train.snapshot_every)")
    parser.add_argument("--teacher-rows", default="", metavar="SAMPLER:STEPS[,...]",
                        help="more teacher rows, e.g. ddim:32,dpmpp_sde:4 (the ODE a progressive student distils)")
    parser.add_argument("--init", default=None, help="the ema.pt dmd students start from (see step 2)")
    parser.add_argument("--score-init", action=argparse.BooleanOptionalAction, default=True,
                        help="score --init as a row of its own")
    parser.add_argument("--set", action="append", default=[], help="render overrides (generation and evaluation)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    began = time.monotonic()
    args.device = str(default_device(args.device))
    teacher, store = (Path(args.teacher), Path(args.store)) if args.teacher else default_model()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = [out] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    results: dict[str, Any] = {
        "setup": f"device {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, torch "
                 f"{torch.__version__}, teacher {teacher}, {args.teacher_samples} teacher humans "
                 f"({args.teacher_sampler} {args.teacher_steps}), batch {args.batch}, up to {args.train_steps} "
                 f"steps or {args.budget_s:.0f} s a run; eval gen of {args.humans} humans, {args.views} views at "
                 f"{args.size} px", "humans": args.humans, "runs": {}, "rows": {}, "timing": {}}
    load_teacher(teacher)  # a bad teacher: one line before any compute
    rows = [Row(f"teacher {args.teacher_sampler} {args.teacher_steps}", teacher, args.teacher_sampler,
                args.teacher_steps)]
    for sampler, steps in _teacher_rows(args.teacher_rows):
        rows.append(Row(f"teacher {sampler} {steps}", teacher, sampler, steps))
    if args.init and args.score_init:
        rows.append(Row("init student", Path(args.init), "distilled", len(read_schedule(args.init).timesteps)))
    shared = out / TEACHER_PLANES
    cuda = args.device.startswith("cuda")
    runs = [(method, steps, *_variant(text)) for method in args.methods.split(",")
            for steps in (int(s) for s in args.steps.split(",")) for text in args.variant or [""]]
    for method, steps, variant, variant_sets in runs:
        name = f"{method}_{steps}" + (f"_{variant}" if variant else "")
        run = out / "runs" / name
        progressive = out / "runs" / f"progressive_{steps}" / "ema.pt"
        init = (args.init or (progressive if progressive.is_file() else None)) if method == "dmd" else None
        if shared.is_file() and not (run / TEACHER_PLANES).is_file():
            run.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared, run / TEACHER_PLANES)
        log.info("distilling %s (%s, %d calls a layer)", name, method, steps)
        start = time.perf_counter()
        overrides = (f"train.steps={args.train_steps}", f"train.batch_size={args.batch}",
                     "train.checkpoint_every=1000000", f"train.snapshot_every={args.snapshot_every}",
                     f"train.compile={str(args.compile and cuda).lower()}",
                     *args.distill_set, *variant_sets)
        ema = distill(teacher, store, run, method=method, steps=steps, overrides=overrides, device=args.device,
                      teacher_samples=args.teacher_samples, max_seconds=args.budget_s, init=init)
        if not shared.is_file():
            shutil.copy(run / TEACHER_PLANES, shared)
        last = json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])
        results["runs"][name] = {"steps_done": last["step"], "train_s": time.perf_counter() - start,
                                 "loss": last["loss"], "steps_per_s": last["steps_per_s"]}
        log.info("%s: %d steps in %.0f s, loss %.4g", name, last["step"], results["runs"][name]["train_s"],
                 last["loss"])
        reached = len(read_schedule(ema).timesteps)  # fewer rounds than asked when the budget ended the run
        results["runs"][name]["student_calls"] = reached
        rows += [Row(f"{name} student, step {step}", path, "distilled", len(read_schedule(path).timesteps))
                 for step, path in snapshots(run) if step < last["step"]]
        rows.append(Row(f"{name} student", ema, "distilled", reached))
        if method == "consistency":
            rows += [Row(f"{name} student at {n}", _rescheduled(ema, out, steps=n), "distilled", n)
                     for n in (int(s) for s in args.resample.split(",") if s) if n < steps]
        elif method == "progressive":
            if args.progressive_noise:
                rows.append(Row(f"{name} student, consistency rule", _rescheduled(ema, out, rule="consistency"),
                                "distilled", reached))
            if args.round_students:
                rows += [Row(f"{name} student at {n} (round {k + 1})", round_student(run, n), "distilled", n)
                         for k, n in enumerate(_finished_rounds(run, reached))]
        _write(results, targets)
    def fd(row: Row) -> float:
        per_layer = results["rows"][row.name]["layers"].values()
        return statistics.mean(entry["generated"]["fd_pca"] for entry in per_layer)

    packed, best = out / "best_student", None
    for row in rows:
        log.info("eval gen: %s", row.name)
        results["rows"][row.name] = _score(row, store, args, out)
        log.info("%s", markdown({row.name: results["rows"][row.name]}, args.humans).splitlines()[2])
        student = row.sampler == "distilled" and "at" not in row.name.split()
        if student and (best is None or fd(row) < fd(best)):  # packed at once: a call cut short keeps it
            best = row
            if packed.exists():
                shutil.rmtree(packed)
            results["best"], results["packed"] = best.name, str(pack_model(best.unet, store, packed))
        _write(results, targets)
    if best is None:
        raise SystemExit("error: --methods: no student was made or scored")
    for row in (rows[0], best) if args.time_teacher else (best,):
        for batch in (int(b) for b in args.batches.split(",")):
            if time.monotonic() - began > args.deadline_s:
                log.info("out of time: timing of %s at batch %d skipped", row.name, batch)
                continue
            seconds = _time_human(row, args, batch)
            results["timing"].setdefault(row.name, {})[str(batch)] = seconds
            log.info("%s: 4-layer human(s) at batch %d in %.4f s", row.name, batch, seconds)
            _write(results, targets)
    if os.environ.get("OUT") and packed.is_dir():
        shutil.copytree(packed, Path(os.environ["OUT"]) / "best_student", dirs_exist_ok=True)
    log.info("done in %.0f s: %s", time.monotonic() - began, out / "distill.md")


if __name__ == "__main__":
    main()
