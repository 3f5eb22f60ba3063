"""``humanliff distill``: the distilled sampler, both methods on a tiny teacher, resume, DDP (gloo), export and
run of a student, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_models import FAST, make_tiny_models

from benchmarks.default_human import human_call
from humanliff.cli import DISTILL_METHODS, app
from humanliff.config import load_config
from humanliff.ema_file import read_schedule
from humanliff.errors import HumanLiffError, InputFileError
from humanliff.export.artifacts import export_artifacts
from humanliff.generate import generate
from humanliff.models.checkpoint import load_ema
from humanliff.models.inference import inference_unet
from humanliff.pipeline import Pipeline
from humanliff.runtime.layered import calls_per_layer, human_generators, sample_layers, top_rows_mask
from humanliff.runtime.manifest import read_manifest
from humanliff.runtime.sampling import check_sampler, sample
from humanliff.runtime.schedule import (
    DistilledSchedule,
    linear_schedule,
    read_distilled,
    trailing_timesteps,
)
from humanliff.training.checkpoint import CHECKPOINT
from humanliff.training.distill import METHODS, TEACHER_PLANES, distill
from humanliff.training.train import SNAPSHOTS

ABAR = linear_schedule()
RUN = ("train.steps=4", "distill.teacher_steps=8", "train.log_every=1", "train.checkpoint_every=2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random teacher (ema.pt) and store of the runtime tests."""
    root = tmp_path_factory.mktemp("distill")
    ema, store, _ = make_tiny_models(root)
    return root, ema, store


@pytest.fixture(scope="module")
def students(tiny):
    """A 2-step student of each method, 4 steps on the store's pairs."""
    root, ema, store = tiny
    return {m: distill(ema, store, root / m, method=m, steps=2, overrides=RUN, device="cpu") for m in METHODS}


def _state(path):
    return torch.load(path, weights_only=False)


def test_trailing_timesteps_nest():
    assert trailing_timesteps(1000, 4) == [999, 749, 499, 249]
    assert trailing_timesteps(1000, 1) == [999]
    assert trailing_timesteps(1000, 32)[::8] == trailing_timesteps(1000, 4)
    with pytest.raises(ValueError, match="between 1 and 1000"):
        trailing_timesteps(1000, 0)


class PointData:
    """The exact eps of data concentrated at ``x0``; records the timesteps it is called at."""

    def __init__(self, x0: torch.Tensor) -> None:
        self.x0, self.calls = x0, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(t[0]))
        a = ABAR[t].float().view(-1, 1, 1, 1)
        return (x.float() - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.mark.parametrize("rule", ["ddim", "consistency"])
def test_distilled_sampler_calls_the_schedule(rule):
    schedule = DistilledSchedule("m", rule, (999, 749, 499, 249))
    target = torch.linspace(-0.9, 0.9, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    eps_fn = PointData(target)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sample("distilled", eps_fn, x_T, ABAR, 4, generator=torch.Generator().manual_seed(1), schedule=schedule)
    torch.testing.assert_close(out, target, atol=5e-4, rtol=0)
    assert eps_fn.calls == [999, 749, 499, 249]


def test_distilled_rules_differ_and_are_pinned():
    def dummy(x, t):
        return 0.5 * x * torch.cos(t.float() / 1000).view(-1, 1, 1, 1) + 0.1

    x_T = torch.randn(2, 27, 8, 8, generator=torch.Generator().manual_seed(0))
    outs = {rule: sample("distilled", dummy, x_T, ABAR, 2, generator=torch.Generator().manual_seed(1),
                         schedule=DistilledSchedule("m", rule, (999, 499))) for rule in ("ddim", "consistency")}
    assert outs["ddim"].abs().mean().item() == pytest.approx(0.96154, abs=1e-4)
    assert outs["consistency"].abs().mean().item() == pytest.approx(0.81190, abs=1e-4)


def test_sampler_and_model_must_agree():
    student = DistilledSchedule("consistency", "consistency", (999, 499))
    x_T = torch.zeros(1, 3, 4, 4)
    with pytest.raises(HumanLiffError, match="sampler 'distilled' needs a distilled student"):
        sample("distilled", PointData(x_T), x_T, ABAR, 2)
    with pytest.raises(HumanLiffError, match="is a distilled student \\(consistency, 2 calls a layer\\): sample it "
                                             "with the sampler 'distilled', not 'dpmpp'"):
        sample("dpmpp", PointData(x_T), x_T, ABAR, 2, schedule=student)
    with pytest.raises(InputFileError, match="^s.pt: the distilled student samples in 2 calls a layer, not 20"):
        check_sampler("distilled", student, 20, "s.pt")
    assert read_distilled(None, "m.json", 1000) is None
    with pytest.raises(InputFileError, match="m.json: distilled timesteps \\[499, 999\\] are not descending"):
        read_distilled({"method": "x", "rule": "ddim", "timesteps": [499, 999]}, "m.json", 1000)
    with pytest.raises(InputFileError, match="m.json: distilled rule 'euler' is not one of ddim, consistency"):
        read_distilled({"method": "x", "rule": "euler", "timesteps": [999]}, "m.json", 1000)
    with pytest.raises(InputFileError, match="m.json: bad 'distilled' record \\(KeyError"):
        read_distilled({"rule": "ddim"}, "m.json", 1000)


def test_cli_offers_every_method():
    assert set(DISTILL_METHODS) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_student_records_its_schedule_and_samples_in_n_calls(students, tiny, method):
    root, teacher, _ = tiny
    run = students[method].parent
    kept = ["student_4_calls.pt"] if method == "progressive" else []  # round 1 of 2's student
    assert sorted(p.name for p in run.iterdir()) == sorted(["checkpoint.pt", "config.yaml", "ema.pt",
                                                            "train_log.jsonl", *kept])
    blob = _state(run / "ema.pt")
    rule = {"progressive": "ddim", "consistency": "consistency", "dmd": "consistency"}[method]
    assert blob["distilled"] == {"method": method, "rule": rule, "timesteps": [999, 499],
                                 "teacher": str(teacher.resolve()), "teacher_steps": 8}
    assert blob["config"]["sample"]["sampler"] == "distilled" and blob["config"]["sample"]["steps"] == 2
    assert read_schedule(run) == DistilledSchedule(method, rule, (999, 499), str(teacher.resolve()), 8)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(0.0 <= r["loss"] < 1e4 for r in log)
    # DMD's fake denoiser starts as the teacher: no distribution-matching gradient until it has been fitted
    assert (log[0]["loss"] == 0.0) == (method == "dmd") and all(r["loss"] > 0.0 for r in log[1:])
    student, cfg = load_ema(run)
    teacher_unet, _ = load_ema(teacher)
    assert student.state_dict().keys() == teacher_unet.state_dict().keys()
    moved = max((a - b).abs().max().item() for a, b in zip(student.state_dict().values(),
                                                          teacher_unet.state_dict().values(), strict=True))
    assert 0 < moved < 0.05  # initialised from the teacher, then trained a little
    calls = []
    net = inference_unet(student, precision="fp32")

    def counted(x, t, x_cond, y):
        calls.append((tuple(x.shape), int(t[0]), int(y[0])))
        return net(x, t, x_cond, y)

    planes = sample_layers(counted, (3, 27, 16, 16), ABAR, [0, 1, 2, 3], "distilled", 2,
                           generator=human_generators(0, 3), schedule=read_schedule(run))
    assert planes.shape == (4, 3, 27, 16, 16) and torch.isfinite(planes).all() and planes.abs().max() <= 1.0
    assert calls == [((3, 27, 16, 16), t, layer) for layer in range(4) for t in (999, 499)]


def test_progressive_resumes_exactly_mid_round(tiny, tmp_path, caplog):
    """A run stopped in its second round (the round's teacher in the checkpoint) says so and resumes to the same
    model."""
    _, ema, store = tiny
    sets = ("train.steps=4", "distill.teacher_steps=8", "train.log_every=3", "train.checkpoint_every=4")
    distill(ema, store, tmp_path / "a", method="progressive", steps=2, overrides=sets, device="cpu")
    distill(ema, store, tmp_path / "b", method="progressive", steps=2, overrides=sets, device="cpu", max_seconds=0)
    assert "stopped early at step 3 of 4: the student samples in 2 calls a layer (asked: 2)" in caplog.text
    stopped = _state(tmp_path / "b" / CHECKPOINT)
    assert stopped["step"] == 3 and stopped["extra"]["round"] == 1 and stopped["extra"]["teacher"] is not None
    assert _state(tmp_path / "b" / "ema.pt")["distilled"]["timesteps"] == [999, 499]
    distill(ema, store, tmp_path / "b", method="progressive", steps=2, overrides=sets, device="cpu")
    a, b = _state(tmp_path / "a" / CHECKPOINT), _state(tmp_path / "b" / CHECKPOINT)
    assert a["step"] == b["step"] == 4
    first = tmp_path / "a" / "student_4_calls.pt"  # round 1's student, kept: the teacher of round 2
    assert read_schedule(first).timesteps == tuple(trailing_timesteps(1000, 4)) and read_schedule(first).rule == "ddim"
    for key, value in _state(first)["state_dict"].items():
        torch.testing.assert_close(value, a["extra"]["teacher"][key], rtol=0, atol=0)
    assert load_ema(first, torch.device("cpu"))[1].sample.steps == 4
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6)
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=1e-6)
    with pytest.raises(InputFileError, match="checkpoint.pt: progressive rounds were 2 steps long, now 3"):
        distill(ema, store, tmp_path / "b", method="progressive", steps=2,
                overrides=(*sets, "train.steps=6"), device="cpu")
    with pytest.raises(InputFileError, match="checkpoint.pt: the run was started with distill.method=progressive"):
        distill(ema, store, tmp_path / "b", method="consistency", steps=2, overrides=sets, device="cpu")


def test_dmd_starts_from_its_init_and_resumes_exactly(tiny, students, tmp_path):
    """Distribution matching from a progressive student: the run records the init, moves away from it a little,
    and a run stopped at step 3 resumes (student, EMA, fake denoiser and its moments) to the same model."""
    _, ema, store = tiny
    init = students["progressive"]
    sets = ("train.steps=4", "train.log_every=3", "train.checkpoint_every=4", "distill.fake_updates=2",
            "distill.regression=0.25", "train.lr=1e-3", "train.lr_final=1e-3")
    a = distill(ema, store, tmp_path / "a", method="dmd", steps=2, overrides=sets, device="cpu", init=init)
    distill(ema, store, tmp_path / "b", method="dmd", steps=2, overrides=sets, device="cpu", init=init, max_seconds=0)
    assert _state(tmp_path / "b" / CHECKPOINT)["step"] == 3
    distill(ema, store, tmp_path / "b", method="dmd", steps=2, overrides=sets, device="cpu", init=init)
    one, two = _state(tmp_path / "a" / CHECKPOINT), _state(tmp_path / "b" / CHECKPOINT)
    assert one["step"] == two["step"] == 4 and one["config"]["distill"]["init"] == str(init.resolve())
    for key in one["model"]:
        for part in ("model", "ema"):
            torch.testing.assert_close(one[part][key], two[part][key], rtol=0, atol=1e-6)
        torch.testing.assert_close(one["extra"]["fake"][key], two["extra"]["fake"][key], rtol=0, atol=1e-6)
    start, teacher = _state(init)["state_dict"], _state(ema)["state_dict"]
    fake_moved = max((one["extra"]["fake"][k] - teacher[k]).abs().max() for k in teacher)
    from_init = max((one["model"][k] - start[k]).abs().max() for k in start)
    from_teacher = max((one["model"][k] - teacher[k]).abs().max() for k in teacher)
    assert fake_moved > 0 and 0 < from_init < from_teacher  # the fake denoiser trained; the student began at init
    assert read_schedule(a) == DistilledSchedule("dmd", "consistency", (999, 499), str(ema.resolve()), 32)
    torch.save(_state(ema)["state_dict"], tmp_path / "bare.pt")
    for bad, message in ((tmp_path / "nope.pt", "nope.pt: "), (tmp_path / "bare.pt", "bare.pt: not a humanliff")):
        with pytest.raises(InputFileError, match=message):
            distill(ema, store, tmp_path / "x", method="dmd", steps=2, overrides=RUN, device="cpu", init=bad)
    assert not (tmp_path / "x").exists()


def test_teacher_samples_are_the_data(tiny, tmp_path):
    """The teacher's own humans, sampled once with its sampler, are the pairs; a resume reuses them."""
    _, ema, store = tiny
    sets = ("train.steps=1", "distill.teacher_steps=4")
    distill(ema, store, tmp_path / "run", steps=1, overrides=sets, device="cpu", teacher_samples=2)
    path = tmp_path / "run" / TEACHER_PLANES
    planes, written = np.load(path), path.stat().st_mtime_ns
    assert planes.shape == (2, 4, 27, 16, 16) and planes.dtype == np.float16 and np.abs(planes).max() <= 1.0
    assert planes[:, 1:].std() > 0.1 and not np.array_equal(planes[0], planes[1])
    band = top_rows_mask((1, 27, 16, 16), load_config("tiny").sample.keep_top)[0].numpy()
    assert band.any() and np.array_equal(planes[:, 1:, band], planes[:, :-1, band])  # sampled with the head band
    distill(ema, store, tmp_path / "run", steps=1, overrides=("train.steps=2", *sets[1:]), device="cpu",
            teacher_samples=2)
    assert path.stat().st_mtime_ns == written and _state(tmp_path / "run" / CHECKPOINT)["step"] == 2
    assert _state(tmp_path / "run" / "ema.pt")["distilled"]["timesteps"] == [999]


def test_export_and_run_a_student(students, tiny, tmp_path):
    _, _, store = tiny
    student = students["consistency"]
    arts = tmp_path / "artifacts"
    export_artifacts(student, store, arts, "torchscript", batch=2, device="cpu", overrides=FAST, unet_layout="whole",
                     progress=False)
    manifest = read_manifest(arts)
    assert manifest["distilled"]["timesteps"] == [999, 499] and manifest["sample"]["sampler"] == "distilled"
    engines = Pipeline.from_pretrained(arts, device="cpu", engines_only=True)
    calls = []
    human_call(engines, engines.models, 8)(2, calls)  # benchmarks.default_human's timed call
    strength = engines.config.sample.strength
    assert len(calls) == sum(calls_per_layer(2, strength, k) for k in range(4)) and len(calls) >= 5
    ran = engines(2)
    cfg = load_config("tiny", [*FAST, "sample.sampler=distilled", "sample.steps=2", "sample.batch=2"])
    generate(cfg, student, store, tmp_path / "gen", progress=False)
    torch.testing.assert_close(ran.planes.half().float(),
                               torch.from_numpy(np.load(tmp_path / "gen" / "planes.npz")["planes"]).float(),
                               rtol=0, atol=2e-3)  # fp16 storage
    with pytest.raises(InputFileError, match="artifacts: is a distilled student .*not 'dpmpp'"):
        engines(2, sampler="dpmpp", steps=20)
    with pytest.raises(InputFileError, match="artifacts: the distilled student samples in 2 calls a layer, not 3"):
        engines(2, steps=3)


def test_wrong_sampler_for_the_model_is_one_line(students, tiny, tmp_path):
    _, teacher, store = tiny
    cfg = load_config("tiny", FAST)
    with pytest.raises(InputFileError, match="ema.pt: is a distilled student \\(progressive, 2 calls a layer\\)"):
        generate(cfg, students["progressive"], store, tmp_path / "a", progress=False)
    cfg = load_config("tiny", [*FAST, "sample.sampler=distilled"])
    with pytest.raises(InputFileError, match="ema.pt: sampler 'distilled' needs a distilled student"):
        generate(cfg, teacher, store, tmp_path / "b", progress=False)
    result = CliRunner().invoke(app, ["generate", "--unet", str(students["progressive"]), "--store", str(store),
                                      "--out", str(tmp_path / "c"), "--config", "tiny", "--sampler", "dpmpp"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "is a distilled student" in result.output


def test_bad_teachers_and_steps(tiny, students, tmp_path):
    _, ema, store = tiny
    blob = _state(ema)
    no_diffusion = tmp_path / "no_diffusion.pt"
    torch.save({**blob, "config": {k: v for k, v in blob["config"].items() if k != "diffusion"}}, no_diffusion)
    with pytest.raises(InputFileError, match="no_diffusion.pt: the teacher has no diffusion config"):
        distill(no_diffusion, store, tmp_path / "x", device="cpu")
    torch.save(blob["state_dict"], tmp_path / "bare.pt")
    with pytest.raises(InputFileError, match="bare.pt: not a humanliff ema.pt"):
        distill(tmp_path / "bare.pt", store, tmp_path / "x", device="cpu")
    with pytest.raises(InputFileError, match="ema.pt: is already a distilled student"):
        distill(students["consistency"], store, tmp_path / "x", device="cpu")
    cases = [("progressive", 3, "halves distill.teacher_steps 8 round by round, so it must be 8 / 2\\^k"),
             ("consistency", 3, "must divide distill.teacher_steps 8"),
             ("consistency", 8, "--steps 8 must be below distill.teacher_steps 8"),
             ("consistency", 0, "--steps must be at least 1")]
    for method, steps, message in cases:
        with pytest.raises(InputFileError, match=f"ema.pt: cannot make a {steps}-step student: .*{message}"):
            distill(ema, store, tmp_path / "x", method=method, steps=steps, overrides=RUN, device="cpu")
    assert not (tmp_path / "x").exists()
    result = CliRunner().invoke(app, ["distill", "--teacher", str(ema), "--store", str(store), "--out",
                                      str(tmp_path / "y"), "--steps", "3", "--set", "distill.teacher_steps=8"])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1


def test_cli_distill_and_ddp_gloo_match_one_process(tiny, tmp_path):
    """Two gloo ranks with half the batch each give the student of one rank with the whole batch."""
    _, ema, store = tiny
    sets = ["train.steps=2", "distill.teacher_steps=4", "train.microbatch=0"]
    result = CliRunner().invoke(app, ["distill", "--teacher", str(ema), "--store", str(store), "--out",
                                      str(tmp_path / "one"), "--steps", "2", "--device", "cpu",
                                      *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "ema.pt" in result.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "humanliff.cli", "distill", "--teacher", str(ema), "--store", str(store), "--out", str(tmp_path / "two"),
           "--steps", "2", "--device", "cpu", *[a for s in sets for a in ("--set", s)],
           "--set", "train.batch_size=2", "--set", "train.microbatch=1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = _state(tmp_path / "one" / CHECKPOINT), _state(tmp_path / "two" / CHECKPOINT)
    assert two["config"]["train"]["batch_size"] == 2 and two["config"]["distill"]["method"] == "consistency"
    teacher = _state(ema)["state_dict"]
    # the target's x0 divides by sqrt(abar) (1/150 at t = 999), so rounding differs between the two runs by
    # ~1e-4 of the target and flips Adam's first steps (+-lr) on near-zero gradients: compare the updates
    apart = sum((one["model"][k] - two["model"][k]).abs().sum() for k in teacher)
    moved = sum((one["model"][k] - teacher[k]).abs().sum() for k in teacher)
    assert apart < 0.05 * moved
    assert max((one["model"][k] - two["model"][k]).abs().max() for k in teacher) <= 2 * 2 * 5e-5 + 1e-6


def test_benchmark_script_end_to_end(tiny, tmp_path, monkeypatch):
    """``python -m benchmarks.distill`` at tiny size: a run, the scored rows, the packed best student, timing."""
    from benchmarks import distill as bench

    _, ema, store = tiny
    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", [
        "distill", "--out", str(out), "--teacher", str(ema), "--store", str(store), "--device", "cpu",
        "--methods", "consistency,progressive", "--steps", "2", "--resample", "1", "--teacher-samples", "2",
        "--train-steps", "2", "--batch", "2", "--humans", "2", "--views", "1", "--size", "8", "--batches", "1",
        "--teacher-sampler", "dpmpp", "--teacher-steps", "2", "--no-compile", "--distill-set",
        "distill.teacher_steps=8", *[a for s in ("render.n_samples=2", "render.n_importance=0",
                                                "render.occupancy_resolution=0") for a in ("--set", s)]])
    bench.main()
    results = json.loads((out / "distill.json").read_text())
    assert results["runs"]["consistency_2"]["steps_done"] == 2
    assert results["runs"]["consistency_2"]["student_calls"] == 2
    assert list(results["rows"]) == ["teacher dpmpp 2", "consistency_2 student", "consistency_2 student at 1",
                                     "progressive_2 student", "progressive_2 student, consistency rule",
                                     "progressive_2 student at 4 (round 1)"]
    noisy = read_schedule(out / "resampled" / "progressive_2_at_2_consistency.pt")
    assert (noisy.method, noisy.rule) == ("progressive", "consistency")
    assert read_schedule(out / "runs" / "progressive_2" / "ema.pt").rule == "ddim"
    assert all(np.isfinite(row["layers"]["0"]["generated"]["fd_pca"]) for row in results["rows"].values())
    best = results["best"]
    assert best in ("consistency_2 student", "progressive_2 student", "progressive_2 student, consistency rule")
    assert set(results["timing"]) == {"teacher dpmpp 2", best}
    assert read_schedule(out / "best_student" / "ema.pt").steps == 2
    assert (out / "best_student" / "store" / "manifest.json").is_file()
    assert "| consistency_2 student at 1 |" in (out / "distill.md").read_text()


def test_benchmark_dmd_variants_from_an_init(tiny, students, tmp_path, monkeypatch):
    """``benchmarks.distill --methods dmd --init S --variant ...``: the init is a scored row and each variant a
    run of its own that starts from it with its own settings; ``--snapshot-every`` scores each run's EMA along
    the way, ``--teacher-rows`` adds teacher samplers (neither is ever the best student)."""
    from benchmarks import distill as bench

    _, ema, store = tiny
    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", [
        "distill", "--out", str(out), "--teacher", str(ema), "--store", str(store), "--device", "cpu",
        "--methods", "dmd", "--steps", "2", "--init", str(students["progressive"]), "--teacher-samples", "2",
        "--variant", "ttur:distill.fake_updates=2", "--variant", "reg:distill.regression=0.5,train.lr=1e-4",
        "--teacher-rows", "ddim:2", "--snapshot-every", "1", "--train-steps", "2", "--batch", "2", "--humans", "2",
        "--views", "1", "--size", "8", "--batches", "1",
        "--teacher-sampler", "dpmpp", "--teacher-steps", "2", "--no-compile", "--no-time-teacher",
        *[a for s in ("render.n_samples=2", "render.n_importance=0", "render.occupancy_resolution=0")
          for a in ("--set", s)]])
    bench.main()
    results = json.loads((out / "distill.json").read_text())
    assert list(results["rows"]) == ["teacher dpmpp 2", "teacher ddim 2", "init student",
                                     "dmd_2_ttur student, step 1", "dmd_2_ttur student",
                                     "dmd_2_reg student, step 1", "dmd_2_reg student"]
    assert sorted(p.name for p in (out / "runs" / "dmd_2_reg" / SNAPSHOTS).iterdir()) == ["ema_0000001.pt",
                                                                                          "ema_0000002.pt"]
    runs = {name: _state(out / "runs" / name / CHECKPOINT)["config"] for name in ("dmd_2_ttur", "dmd_2_reg")}
    assert {c["distill"]["init"] for c in runs.values()} == {str(students["progressive"].resolve())}
    assert runs["dmd_2_ttur"]["distill"]["fake_updates"] == 2 and runs["dmd_2_reg"]["distill"]["fake_updates"] == 1
    assert runs["dmd_2_reg"]["distill"]["regression"] == 0.5 and runs["dmd_2_reg"]["train"]["lr"] == 1e-4
    assert results["best"] in results["rows"] and set(results["timing"]) == {results["best"]}


@pytest.mark.parametrize("rows", ["ddim", "ddim:0", "euler:4", "distilled:4", "ddim:x"])
def test_benchmark_refuses_bad_teacher_rows(tiny, tmp_path, monkeypatch, rows):
    from benchmarks import distill as bench

    _, ema, store = tiny
    monkeypatch.setattr(sys, "argv", ["distill", "--out", str(tmp_path / "bench"), "--teacher", str(ema),
                                      "--store", str(store), "--device", "cpu", "--teacher-rows", f"dpmpp:2,{rows}"])
    with pytest.raises(SystemExit, match=f"error: --teacher-rows: '{rows}' is not SAMPLER:STEPS"):
        bench.main()
    assert not (tmp_path / "bench" / "runs").exists()
